//! Reading Server-Sent Events (the API's `/events` routes) from a response:
//! frames of `event:` and `data:` lines ended by a blank line; comment lines
//! (the server's keep-alives) are skipped. Just what Hopper's streams use —
//! no `id:` or `retry:` handling.

/// One event: its name (`message` when the frame names none) and its data
/// (the `data:` lines joined by newlines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub name: String,
    pub data: String,
}

/// Splits the bytes of a stream, as they arrive, into events.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
}

impl Parser {
    /// Adds the next bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        // A frame's lines may end in CRLF: only LFs delimit here (JSON data
        // carries no raw CR).
        self.buf.extend(bytes.iter().filter(|&&b| b != b'\r'));
    }

    /// The next complete event, if the bytes so far hold one.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
            let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
            if let Some(event) = parse_frame(&String::from_utf8_lossy(&frame)) {
                return Some(event);
            }
        }
    }
}

/// The event of one frame; `None` for a frame without data (a comment).
fn parse_frame(frame: &str) -> Option<SseEvent> {
    let mut name = None;
    let mut data: Option<String> = None;
    for line in frame.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    Some(SseEvent {
        name: name.unwrap_or_else(|| "message".into()),
        data: data?,
    })
}

/// The events of an open event stream, read as they arrive.
pub struct EventReader {
    res: reqwest::Response,
    parser: Parser,
}

impl EventReader {
    /// Reads the event stream `res` (a 200 answer).
    pub fn new(res: reqwest::Response) -> Self {
        Self {
            res,
            parser: Parser::default(),
        }
    }

    /// The next event; `None` once the server ended the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<SseEvent>> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(Some(event));
            }
            match self.res.chunk().await? {
                Some(bytes) => self.parser.push(&bytes),
                None => return Ok(None),
            }
        }
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

    #[test]
    fn frames_split_across_chunks_come_out_whole_and_in_order() {
        let mut p = Parser::default();
        p.push(b"event: state\ndata: {\"state\":");
        assert_eq!(p.next_event(), None);
        p.push(b"\"running\"}\n\n:keep-alive\n\nevent: progress\r\ndata: {}\r\n\r\ndata: a\ndata: b\n\n");
        assert_eq!(
            p.next_event(),
            Some(event("state", r#"{"state":"running"}"#))
        );
        assert_eq!(p.next_event(), Some(event("progress", "{}")));
        assert_eq!(p.next_event(), Some(event("message", "a\nb")));
        assert_eq!(p.next_event(), None);
    }

    #[test]
    fn a_frame_without_data_is_no_event() {
        let mut p = Parser::default();
        p.push(b"event: nothing\n\n");
        assert_eq!(p.next_event(), None);
    }
}
