//! WebSocket frames (RFC 6455 §5): just enough to find frame boundaries in a byte stream,
//! read one message, and write text and close frames. Written here rather than pulled in:
//! the relay never owns the client's socket as a stream a WebSocket library could wrap, and
//! a parser this small is easy to fuzz.

/// Continuation frame.
pub const CONTINUATION: u8 = 0x0;
/// Text frame.
pub const TEXT: u8 = 0x1;
/// Binary frame.
pub const BINARY: u8 = 0x2;
/// Close frame.
pub const CLOSE: u8 = 0x8;

/// Why a byte stream is not WebSocket framing we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A reserved bit is set (an extension we did not negotiate, e.g. compression).
    #[error("reserved bits set")]
    Reserved,
    /// A reserved opcode.
    #[error("reserved opcode")]
    Opcode,
    /// A 64-bit length with the top bit set, or a control frame over 125 bytes.
    #[error("invalid frame length")]
    Length,
    /// Larger than the relay accepts where it must read a whole message.
    #[error("message too large")]
    TooLarge,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Final fragment of its message.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Masking key (client-to-server frames carry one).
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
    /// Header length in bytes.
    pub header_len: usize,
}

impl Head {
    /// Header plus payload, in bytes.
    pub fn total(&self) -> u64 {
        self.header_len as u64 + self.len
    }

    /// Whether this is a control frame (close, ping, pong).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parses the frame header at the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, FrameError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    let opcode = b0 & 0x0f;
    if matches!(opcode, 0x3..=0x7 | 0xB..=0xF) {
        return Err(FrameError::Opcode);
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            let len = u64::from_be_bytes(a);
            if len >> 63 != 0 {
                return Err(FrameError::Length);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let head_is_control = opcode & 0x8 != 0;
    if head_is_control && (len > 125 || b0 & 0x80 == 0) {
        return Err(FrameError::Length);
    }
    let mask = if masked {
        let Some(m) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Some(Head {
        fin: b0 & 0x80 != 0,
        opcode,
        mask,
        len,
        header_len: at,
    }))
}

/// XORs `data` with `key` (masking and unmasking are the same).
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// One whole frame.
pub fn encode(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], key);
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame with a status code and a reason (truncated to fit a control frame).
pub fn close(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(CLOSE, &payload, mask)
}

/// Follows frame boundaries through a byte stream fed in arbitrary chunks, so that a frame
/// of our own can be inserted between two frames, never inside one.
#[derive(Debug, Default)]
pub struct Boundaries {
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// A header split across chunks.
    partial: Vec<u8>,
    /// The stream stopped being framing we can follow.
    lost: bool,
}

impl Boundaries {
    /// Accounts for `bytes` having passed.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.lost {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len() as u64);
                self.remaining -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            // A header: at most 14 bytes, possibly split across chunks.
            let take = (14 - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            match parse_head(&self.partial) {
                Ok(Some(h)) => {
                    // Bytes of `partial` past the header belong to the payload.
                    let extra = self.partial.len() - h.header_len;
                    let consumed = take - extra;
                    self.partial.clear();
                    self.remaining = h.len;
                    bytes = &bytes[consumed..];
                }
                Ok(None) if self.partial.len() < 14 => bytes = &bytes[take..],
                _ => self.lost = true,
            }
        }
    }

    /// Whether the stream is between frames.
    pub fn at_boundary(&self) -> bool {
        !self.lost && self.remaining == 0 && self.partial.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_masked_and_not() -> Result<(), FrameError> {
        for len in [0usize, 5, 125, 126, 65_535, 65_536] {
            let payload = vec![b'x'; len];
            for mask in [None, Some([1, 2, 3, 4])] {
                let bytes = encode(TEXT, &payload, mask);
                let h = parse_head(&bytes)?.ok_or(FrameError::Length)?;
                assert_eq!(
                    (h.fin, h.opcode, h.len, h.mask),
                    (true, TEXT, len as u64, mask)
                );
                assert_eq!(h.total(), bytes.len() as u64);
                let mut body = bytes[h.header_len..].to_vec();
                if let Some(k) = h.mask {
                    apply_mask(&mut body, k);
                }
                assert_eq!(body, payload);
                // Every strict prefix of the header asks for more.
                for cut in 0..h.header_len {
                    assert_eq!(parse_head(&bytes[..cut])?, None);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn refuses_what_we_did_not_negotiate() {
        assert_eq!(parse_head(&[0xC1, 0x00]), Err(FrameError::Reserved)); // RSV1
        assert_eq!(parse_head(&[0x89, 126, 0, 200]), Err(FrameError::Length)); // big ping
        assert_eq!(parse_head(&[0x09, 0]), Err(FrameError::Length)); // fragmented ping
        assert_eq!(parse_head(&[0x83, 0]), Err(FrameError::Opcode));
        assert_eq!(parse_head(&[0x8B, 0]), Err(FrameError::Opcode));
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_head(&huge), Err(FrameError::Length));
    }

    #[test]
    fn close_frames_carry_code_and_reason() -> Result<(), FrameError> {
        let f = close(4403, "session revoked", None);
        let h = parse_head(&f)?.ok_or(FrameError::Length)?;
        assert_eq!(h.opcode, CLOSE);
        assert_eq!(&f[h.header_len..h.header_len + 2], &4403u16.to_be_bytes());
        assert_eq!(&f[h.header_len + 2..], b"session revoked");
        // A long multi-byte reason is cut on a character boundary, within 125 bytes.
        let long = "é".repeat(100);
        let f = close(4401, &long, None);
        let h = parse_head(&f)?.ok_or(FrameError::Length)?;
        assert!(h.len <= 125);
        assert!(std::str::from_utf8(&f[h.header_len + 2..]).is_ok());
        Ok(())
    }

    #[test]
    fn boundaries_follow_frames_across_chunks() {
        let mut stream = encode(TEXT, b"hello", None);
        stream.extend(encode(TEXT, &vec![b'y'; 300], None));
        for chunk in [1usize, 2, 3, 7, 64, 1000] {
            let mut b = Boundaries::default();
            let mut boundaries = 0;
            for piece in stream.chunks(chunk) {
                b.feed(piece);
                if b.at_boundary() {
                    boundaries += 1;
                }
            }
            assert!(b.at_boundary(), "chunk {chunk}");
            assert!(boundaries >= 1);
        }
        let mut b = Boundaries::default();
        b.feed(&stream[..4]);
        assert!(!b.at_boundary());
        // Many tiny frames in one chunk: no recursion, every boundary found.
        let many: Vec<u8> = (0..10_000).flat_map(|_| encode(TEXT, b"", None)).collect();
        let mut b = Boundaries::default();
        b.feed(&many);
        assert!(b.at_boundary());
    }
}
