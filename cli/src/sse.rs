//! Reading Server-Sent Events (the API's `/events` routes) from a response,
//! with `eventsource-stream`: frames are decoded as UTF-8 across network
//! chunk boundaries (a multi-byte character split between two chunks comes
//! out whole), comment frames (the server's keep-alives) yield nothing, and
//! `data:` lines of one frame are joined by newlines.

use std::pin::Pin;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};

/// One event: its name (`message` when the frame names none) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub name: String,
    pub data: String,
}

type Events = Pin<Box<dyn Stream<Item = anyhow::Result<SseEvent>> + Send>>;

/// The events of an open event stream, read as they arrive.
pub struct EventReader {
    events: Events,
}

impl EventReader {
    /// Reads the event stream `res` (a 200 answer).
    pub fn new(res: reqwest::Response) -> Self {
        Self::from_bytes(res.bytes_stream())
    }

    /// Reads events from a stream of byte chunks.
    fn from_bytes<S, B, E>(bytes: S) -> Self
    where
        S: Stream<Item = Result<B, E>> + Send + 'static,
        B: AsRef<[u8]>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let events = bytes.eventsource().map(|event| {
            let event = event.map_err(|e| anyhow::anyhow!("event stream: {e}"))?;
            Ok(SseEvent {
                name: if event.event.is_empty() {
                    "message".into()
                } else {
                    event.event
                },
                data: event.data,
            })
        });
        Self {
            events: Box::pin(events),
        }
    }

    /// The next event; `None` once the server ended the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<SseEvent>> {
        self.events.next().await.transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: &str) -> SseEvent {
        SseEvent {
            name: name.into(),
            data: data.into(),
        }
    }

    /// A reader over these chunks, in order.
    fn reader(chunks: Vec<Vec<u8>>) -> EventReader {
        EventReader::from_bytes(futures::stream::iter(
            chunks.into_iter().map(Ok::<_, std::io::Error>),
        ))
    }

    async fn all(mut r: EventReader) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = r.next().await.unwrap() {
            out.push(e);
        }
        out
    }

    #[tokio::test]
    async fn frames_split_across_chunks_come_out_whole_and_in_order() {
        let r = reader(vec![
            b"event: state\ndata: {\"state\":".to_vec(),
            b"\"running\"}\n\n:keep-alive\n\nevent: progress\r\ndata: {}\r\n\r\ndata: a\ndata: b\n\n"
                .to_vec(),
        ]);
        assert_eq!(
            all(r).await,
            [
                event("state", r#"{"state":"running"}"#),
                event("progress", "{}"),
                event("message", "a\nb"),
            ]
        );
    }

    #[tokio::test]
    async fn a_character_split_between_chunks_is_not_corrupted() {
        let frame = "event: progress\ndata: {\"name\":\"Übersicht — 日本語.pdf\",\"message\":\"Schritt 2/3 ✓\"}\n\n";
        let bytes = frame.as_bytes();
        // Cut inside every multi-byte character in turn.
        for cut in (1..bytes.len()).filter(|&i| !frame.is_char_boundary(i)) {
            let r = reader(vec![bytes[..cut].to_vec(), bytes[cut..].to_vec()]);
            assert_eq!(
                all(r).await,
                [event(
                    "progress",
                    "{\"name\":\"Übersicht — 日本語.pdf\",\"message\":\"Schritt 2/3 ✓\"}"
                )],
                "cut at byte {cut}"
            );
        }
    }

    #[tokio::test]
    async fn a_frame_without_data_is_no_event() {
        assert_eq!(all(reader(vec![b"event: nothing\n\n".to_vec()])).await, []);
    }
}
