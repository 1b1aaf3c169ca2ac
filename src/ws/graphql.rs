//! The client's side of a GraphQL WebSocket as the relay reads it: a pure state machine
//! over the client's bytes, with no socket and no session. Frames are held until their
//! message is complete. Before `connection_init`, control frames are dropped (a close ends
//! the socket) and the first message must be `connection_init`, which the relay
//! authenticates and rewrites. After it, every message must be a strict JSON object and
//! another `connection_init` ends the socket (Hasura would re-read its headers and take a new
//! identity from them); everything else passes as received.

use super::frame;
use super::End;
use std::io;
use tokio::io::AsyncRead;

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

/// The client's stream on a GraphQL socket. One buffer: the current message's complete
/// frames, then the bytes not parsed yet; a message leaves it whole once its last frame is in.
///
/// Frames and messages handed on are consumed by moving a cursor, and the buffer is
/// compacted once per read ([`ClientStream::push`]): a read packed with thousands of tiny
/// frames costs one pass, not one move of the rest of the buffer per frame.
#[derive(Debug, Default)]
pub struct ClientStream {
    /// Client bytes: `head` bytes already handed on, then `frames` bytes of the unfinished
    /// message's complete frames (as received), then unparsed bytes.
    buf: Vec<u8>,
    /// Bytes at the start of `buf` already handed on (dropped at the next `push`).
    head: usize,
    /// Bytes after `head` that are whole frames of the unfinished message.
    frames: usize,
    /// Payload bytes in those frames.
    payload: usize,
    /// Control frames that came between the unfinished message's fragments.
    interleaved: usize,
    /// Messages (and control frames) handed on so far.
    completed: u64,
    /// `connection_init` was handed to the relay.
    initialised: bool,
}

/// Past this, an emptied buffer gives its memory back instead of keeping it for the next
/// message: a socket that once sent a large message does not hold its size while idle.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Free room a read into the buffer has at least: a pending socket's whole buffer while it
/// waits for `connection_init` (the stream below reads ahead in larger blocks).
const READ_ROOM: usize = 1024;

/// Most control frames between one message's fragments: each is cut out of the middle of
/// the buffer (clients send one now and then, not thousands).
const MAX_INTERLEAVED: usize = 16;

impl ClientStream {
    /// Appends bytes read from the client (first dropping what was handed on).
    #[cfg(test)]
    pub fn push(&mut self, bytes: &[u8]) {
        if self.head > 0 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Reads from the client straight into the buffer (first dropping what was handed on):
    /// the client's bytes are held once, here. Cancel-safe, like the read it makes.
    pub async fn read_from<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        r: &mut R,
    ) -> io::Result<usize> {
        if self.head > 0 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.reserve(READ_ROOM);
        tokio::io::AsyncReadExt::read_buf(r, &mut self.buf).await
    }

    /// Whether `connection_init` has been seen.
    pub fn initialised(&self) -> bool {
        self.initialised
    }

    /// Memory held for the client's unfinished message and unparsed bytes: the buffer's
    /// capacity, which is what the process pays.
    pub fn held(&self) -> usize {
        if self.buf.len() == self.head {
            // Nothing unfinished: what is left is given back at the next push, or kept
            // small (see `consumed`).
            return 0;
        }
        self.buf.capacity()
    }

    /// Messages and control frames handed on so far: a message's clock restarts when one
    /// completes.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    fn consumed(&mut self, n: usize) {
        self.head += n;
        self.completed += 1;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        }
    }

    /// The next event, `Ok(None)` when more bytes are needed, or how the socket must end.
    pub fn next_event(&mut self) -> Result<Option<Event>, End> {
        loop {
            let start = self.head + self.frames;
            let head = match frame::parse_head(&self.buf[start..]) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(_) => return Err(End::BadInit),
            };
            // Clients must mask (RFC 6455 §5.1).
            if head.mask.is_none() {
                return Err(End::BadInit);
            }
            let cap = if self.initialised {
                MAX_MESSAGE
            } else {
                MAX_INIT
            };
            let len = usize::try_from(head.len).map_err(|_| End::TooLarge)?;
            let total = usize::try_from(head.total()).map_err(|_| End::TooLarge)?;
            // The payload is capped, and so are the frames around it: empty fragments
            // would otherwise grow the buffer without adding a payload byte.
            if len > cap || self.payload + len > cap || self.frames + total > cap + cap / 8 {
                return Err(End::TooLarge);
            }
            if self.buf.len() - start < total {
                return Ok(None);
            }
            if head.is_control() {
                let frame_bytes = if self.frames == 0 {
                    let f = self.buf[start..start + total].to_vec();
                    self.consumed(total);
                    f
                } else {
                    // Between a message's fragments: cut out of the middle, a few at most.
                    self.interleaved += 1;
                    if self.interleaved > MAX_INTERLEAVED {
                        return Err(End::BadInit);
                    }
                    let f: Vec<u8> = self.buf.drain(start..start + total).collect();
                    self.completed += 1;
                    f
                };
                if self.initialised {
                    return Ok(Some(Event::Forward(frame_bytes)));
                }
                if head.opcode == frame::CLOSE {
                    return Err(End::Closed);
                }
                continue;
            }
            let valid = if self.frames == 0 {
                matches!(head.opcode, frame::TEXT | frame::BINARY)
            } else {
                head.opcode == frame::CONTINUATION
            };
            if !valid {
                return Err(End::BadInit);
            }
            self.frames += total;
            self.payload += len;
            if !head.fin {
                continue;
            }
            let frames = self.buf[self.head..self.head + self.frames].to_vec();
            let n = self.frames;
            self.frames = 0;
            self.payload = 0;
            self.interleaved = 0;
            self.consumed(n);
            let message = unmasked(&frames);
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

/// The payload of a message's frames (already checked by [`ClientStream::next_event`]),
/// unmasked and joined.
fn unmasked(frames: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.len());
    let mut at = 0;
    while let Ok(Some(head)) = frame::parse_head(&frames[at..]) {
        let Ok(total) = usize::try_from(head.total()) else {
            break;
        };
        let Some(payload) = frames.get(at + head.header_len..at + total) else {
            break;
        };
        let from = out.len();
        out.extend_from_slice(payload);
        if let Some(mask) = head.mask {
            frame::apply_mask(&mut out[from..], mask);
        }
        at += total;
    }
    out
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
    fn one_buffer_holds_an_unfinished_message_and_a_ping_may_interleave() -> Result<(), End> {
        let mut s = ClientStream::default();
        s.push(&text(r#"{"type":"connection_init"}"#));
        assert!(matches!(s.next_event()?, Some(Event::Init(_))));
        assert_eq!(s.held(), 0);
        let a = raw_frame(false, frame::TEXT, br#"{"type":"#);
        let ping = raw_frame(true, 0x9, b"p");
        let b = raw_frame(true, frame::CONTINUATION, br#""ping"}"#);
        s.push(&a);
        s.push(&ping);
        // The ping goes on at once; the fragment stays, held once.
        assert_eq!(s.next_event()?, Some(Event::Forward(ping)));
        assert_eq!(s.next_event()?, None);
        assert!(s.held() >= a.len());
        s.push(&b[..2]);
        assert_eq!(s.next_event()?, None);
        assert!(s.held() >= a.len() + 2);
        s.push(&b[2..]);
        assert_eq!(s.next_event()?, Some(Event::Forward([a, b].concat())));
        assert_eq!(s.held(), 0);
        Ok(())
    }

    #[test]
    fn packed_tiny_frames_and_empty_fragments_are_bounded() -> Result<(), End> {
        // Thousands of pings in one read before init: dropped in one pass.
        let mut s = ClientStream::default();
        let ping = raw_frame(true, 0x9, b"");
        s.push(&ping.repeat(10_000));
        assert_eq!(s.next_event()?, None);
        assert_eq!(s.held(), 0);
        // Empty fragments add no payload but may not grow the buffer past the cap's bound.
        let mut s = ClientStream::default();
        s.push(&raw_frame(false, frame::TEXT, b""));
        let empty = raw_frame(false, frame::CONTINUATION, b"");
        let mut end = Ok(None);
        for _ in 0..((MAX_INIT + MAX_INIT / 8) / empty.len() + 10) {
            s.push(&empty);
            end = s.next_event();
            if end.is_err() {
                break;
            }
        }
        assert_eq!(end, Err(End::TooLarge));
        // More than a few control frames between one message's fragments: refused.
        let mut s = ClientStream::default();
        s.push(&raw_frame(false, frame::TEXT, b"{"));
        for _ in 0..=MAX_INTERLEAVED {
            s.push(&ping);
        }
        assert_eq!(s.next_event(), Err(End::BadInit));
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
