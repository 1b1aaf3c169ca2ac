//! The client's side of a GraphQL WebSocket as the relay reads it: a pure state machine
//! over the client's bytes, with no socket and no session. Frames are held until their
//! message is complete. Before `connection_init`, control frames are dropped (a close ends
//! the socket) and the first message must be `connection_init`, which the relay
//! authenticates and rewrites. After it, every message must be a strict JSON object and
//! another `connection_init` ends the socket (Hasura would re-read its headers and take a new
//! identity from them); everything else passes as received.

use super::frame;
use super::End;

/// Largest `connection_init` accepted.
pub const MAX_INIT: usize = 64 * 1024;
/// Largest client message on a GraphQL socket (each is held and read whole).
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// What the relay must do next with the client's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Whole frames to send upstream as received.
    Forward(Vec<u8>),
    /// The first message, unmasked: a `connection_init` to authenticate and rewrite (the
    /// stream counts as initialised from here on).
    Init(Vec<u8>),
}

/// The client's stream on a GraphQL socket.
#[derive(Debug, Default)]
pub struct ClientStream {
    /// Bytes not yet parsed into whole frames.
    raw: Vec<u8>,
    /// The current message, unmasked.
    message: Vec<u8>,
    /// The current message's frames as received.
    message_frames: Vec<u8>,
    /// `connection_init` was handed to the relay.
    initialised: bool,
}

impl ClientStream {
    /// Appends bytes read from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
    }

    /// Whether `connection_init` has been seen.
    pub fn initialised(&self) -> bool {
        self.initialised
    }

    /// The next event, `Ok(None)` when more bytes are needed, or how the socket must end.
    pub fn next_event(&mut self) -> Result<Option<Event>, End> {
        loop {
            let head = match frame::parse_head(&self.raw) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(_) => return Err(End::BadInit),
            };
            // Clients must mask (RFC 6455 §5.1).
            let mask = head.mask.ok_or(End::BadInit)?;
            let cap = if self.initialised {
                MAX_MESSAGE
            } else {
                MAX_INIT
            };
            if head.len > cap as u64 || self.message.len() + head.len as usize > cap {
                return Err(End::TooLarge);
            }
            let total = usize::try_from(head.total()).map_err(|_| End::TooLarge)?;
            if self.raw.len() < total {
                return Ok(None);
            }
            let rest = self.raw.split_off(total);
            let frame_bytes = std::mem::replace(&mut self.raw, rest);
            if head.is_control() {
                if self.initialised {
                    return Ok(Some(Event::Forward(frame_bytes)));
                }
                if head.opcode == frame::CLOSE {
                    return Err(End::Closed);
                }
                continue;
            }
            let first = self.message_frames.is_empty();
            let valid = if first {
                matches!(head.opcode, frame::TEXT | frame::BINARY)
            } else {
                head.opcode == frame::CONTINUATION
            };
            if !valid {
                return Err(End::BadInit);
            }
            let mut payload = frame_bytes[head.header_len..].to_vec();
            frame::apply_mask(&mut payload, mask);
            self.message.extend_from_slice(&payload);
            self.message_frames.extend_from_slice(&frame_bytes);
            if !head.fin {
                continue;
            }
            let message = std::mem::take(&mut self.message);
            let frames = std::mem::take(&mut self.message_frames);
            if !self.initialised {
                self.initialised = true;
                return Ok(Some(Event::Init(message)));
            }
            if is_init(&message)? {
                return Err(End::TooManyInits);
            }
            return Ok(Some(Event::Forward(frames)));
        }
    }
}

/// Whether a complete message is a `connection_init`. Parsed strictly: Hasura (aeson)
/// keeps the first of two equal keys where serde_json keeps the last, so a message with a
/// duplicate key anywhere could be something else to Hasura, and is refused; so is anything
/// that is not a JSON object.
fn is_init(message: &[u8]) -> Result<bool, End> {
    let m = crate::json::strict_object(message).map_err(End::BadMessage)?;
    Ok(m.get("type").and_then(serde_json::Value::as_str) == Some("connection_init"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::StrictError;

    const MASK: [u8; 4] = [1, 2, 3, 4];

    fn text(payload: &str) -> Vec<u8> {
        frame::encode(frame::TEXT, payload.as_bytes(), Some(MASK))
    }

    /// A frame with `fin` and `opcode` chosen, masked.
    fn raw_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = frame::encode(opcode, payload, Some(MASK));
        if !fin {
            f[0] &= 0x7f;
        }
        f
    }

    fn events(stream: &mut ClientStream) -> Result<Vec<Event>, End> {
        let mut out = Vec::new();
        while let Some(e) = stream.next_event()? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn first_message_is_handed_over_as_init_then_messages_pass() -> Result<(), End> {
        let mut s = ClientStream::default();
        let init = r#"{"type":"connection_init","payload":{}}"#;
        let sub = text(r#"{"id":"1","type":"subscribe","payload":{}}"#);
        s.push(&text(init));
        s.push(&sub);
        let got = events(&mut s)?;
        assert_eq!(
            got,
            vec![Event::Init(init.as_bytes().to_vec()), Event::Forward(sub)]
        );
        assert!(s.initialised());
        Ok(())
    }

    #[test]
    fn partial_frames_wait_and_fragments_are_joined() -> Result<(), End> {
        let mut s = ClientStream::default();
        let whole = text(r#"{"type":"connection_init"}"#);
        s.push(&whole[..3]);
        assert_eq!(s.next_event()?, None);
        s.push(&whole[3..]);
        assert!(matches!(s.next_event()?, Some(Event::Init(_))));
        // A message in two fragments goes upstream as its two frames, once complete.
        let a = raw_frame(false, frame::TEXT, br#"{"type":"#);
        let b = raw_frame(true, frame::CONTINUATION, br#""ping"}"#);
        s.push(&a);
        assert_eq!(s.next_event()?, None);
        s.push(&b);
        assert_eq!(s.next_event()?, Some(Event::Forward([a, b].concat())));
        Ok(())
    }

    #[test]
    fn control_frames_before_init_are_dropped_and_close_ends() -> Result<(), End> {
        let mut s = ClientStream::default();
        s.push(&raw_frame(true, 0x9, b""));
        assert_eq!(s.next_event()?, None);
        s.push(&raw_frame(true, frame::CLOSE, b""));
        assert_eq!(s.next_event(), Err(End::Closed));
        Ok(())
    }

    #[test]
    fn violations_end_the_socket() {
        // Unmasked.
        let mut s = ClientStream::default();
        s.push(&frame::encode(frame::TEXT, b"{}", None));
        assert_eq!(s.next_event(), Err(End::BadInit));
        // A continuation with nothing to continue.
        let mut s = ClientStream::default();
        s.push(&raw_frame(true, frame::CONTINUATION, b"{}"));
        assert_eq!(s.next_event(), Err(End::BadInit));
        // An init over the init limit.
        let mut s = ClientStream::default();
        s.push(&text(&"x".repeat(MAX_INIT + 1)));
        assert_eq!(s.next_event(), Err(End::TooLarge));
        // A second connection_init, and a duplicate key after init.
        for (second, end) in [
            (r#"{"type":"connection_init"}"#, End::TooManyInits),
            (
                r#"{"type":"subscribe","type":"connection_init"}"#,
                End::BadMessage(StrictError::DuplicateKey),
            ),
            ("[1]", End::BadMessage(StrictError::NotObject)),
        ] {
            let mut s = ClientStream::default();
            s.push(&text(r#"{"type":"connection_init"}"#));
            s.push(&text(second));
            assert!(matches!(s.next_event(), Ok(Some(Event::Init(_)))));
            assert_eq!(s.next_event(), Err(end), "{second}");
        }
    }
}
