//! Reading server-sent event streams (a document's `/events`) in tests.

use std::time::{Duration, Instant};

use serde_json::Value;

/// Reads an open event stream until the server ends it; returns each
/// event's name (`message` when unnamed) and JSON data (`Null` when not
/// JSON). Panics unless the answer is 200 and the stream ends within
/// `within`.
pub async fn read_to_end(mut res: reqwest::Response, within: Duration) -> Vec<(String, Value)> {
    assert_eq!(res.status(), 200, "not an event stream");
    let deadline = Instant::now() + within;
    let (mut buf, mut events) = (String::new(), Vec::new());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, res.chunk())
            .await
            .unwrap_or_else(|_| panic!("the stream did not end in {within:?}: {events:?}"))
            .expect("read the stream");
        let Some(chunk) = chunk else { return events };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(str::to_owned))
            };
            if let Some(data) = field("data: ") {
                let name = field("event: ").unwrap_or_else(|| "message".into());
                events.push((name, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
        }
    }
}
