//! Counts the control frames an HTTP/2 client sends, to close a connection that floods them.
//!
//! The h2 server (the `h2` crate under Pingora) already ends connections that flood resets,
//! SETTINGS or PINGs, but PRIORITY and WINDOW_UPDATE frames cost it work and answer
//! nothing: 30 M of them in 5 s over 4 connections were never cut and made every other
//! client 10x slower. This watcher reads along the decrypted byte stream (it only looks at
//! frame headers, never changes a byte) and gives each connection a budget of control
//! frames: [`BURST`] at once, refilled at [`PER_SECOND`]. A connection over it is closed.
//! What counts is every frame that carries no request data: all but DATA, HEADERS and
//! CONTINUATION frames with a payload (an empty DATA frame, a repeated GOAWAY or a frame of
//! an unknown type costs the server the same parsing and answers nothing, so they count
//! too). A browser sends a handful of these per page, a client downloading at full speed a
//! few thousand a second (one WINDOW_UPDATE per half window).
//!
//! It also follows which request streams still owe their body: a HEADERS frame without
//! END_STREAM opens one, due the body deadline later; END_STREAM on DATA or trailing
//! HEADERS, or the client's RST_STREAM, closes it. Pingora reads an h2 body without any
//! timeout, so `head::Timed` resets a stream that is overdue ([`H2Frames::take_overdue`]).

use std::time::{Duration, Instant};

/// Control frames a connection may send at once.
pub const BURST: u32 = 20_000;
/// Control frames a connection may send per second, sustained.
pub const PER_SECOND: u32 = 10_000;
/// Unfinished request bodies followed per connection: well above the most concurrent
/// streams the h2 server allows (100). Only a client that ignores that limit (its streams
/// refused) or abandons bodies by the hundred gets past it, and its connection is closed:
/// forgetting a stream instead would let it outlive its deadline.
pub const MAX_BODIES: usize = 256;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Whether a frame carries request data (and is free): DATA, HEADERS or CONTINUATION with
/// a payload. Everything else spends from the budget.
fn carries_data(kind: u8, length: usize) -> bool {
    matches!(kind, 0x0 | 0x1 | 0x9) && length > 0
}

/// Where the watcher is in the client's byte stream.
#[derive(Debug)]
pub struct H2Frames {
    /// Preface bytes still to pass (the 24-byte client preface precedes the first frame).
    preface_left: usize,
    /// The client's frames.
    inp: FrameCursor,
    /// Control frames the connection may still send (fractions kept), and when the budget
    /// was last topped up.
    tokens: f64,
    refilled: Instant,
    /// Control frames seen so far.
    counted: u64,
    /// How long a request stream may take to send its body (`None`: not followed).
    body_deadline: Option<Duration>,
    /// Request streams whose body is unfinished, with when it is due, oldest first.
    bodies: Vec<(u32, Instant)>,
    /// Set when `bodies` would have gone past [`MAX_BODIES`].
    stream_flood: bool,
    /// Inside a header block (HEADERS without END_HEADERS, then CONTINUATION frames): no
    /// other frame may come between them (RFC 9113 §6.10).
    in_header_block: bool,
    /// The stream whose END_STREAM waits for the end of the header block in progress.
    ends_with_block: Option<u32>,
    /// Streams ended by [`H2Frames::take_overdue`] on this connection.
    ended: u32,
    /// The highest stream id a body was followed for.
    last_opened: u32,
    /// The server's frames, followed like the client's: a stream the server ended (its
    /// response done, or reset) no longer holds anything upstream, and the h2 server may
    /// forget it, so it is no longer followed.
    out: FrameCursor,
}

/// Frame headers in one direction of the byte stream.
#[derive(Debug, Default)]
struct FrameCursor {
    header: [u8; 9],
    have: usize,
    skip: usize,
}

impl FrameCursor {
    /// Follows `bytes`, calling `on_header` with each complete frame header; stops (and
    /// says `false`) when it does.
    fn follow(&mut self, mut bytes: &[u8], mut on_header: impl FnMut(&[u8; 9]) -> bool) -> bool {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < 9 {
                break;
            }
            self.have = 0;
            let [a, b, c, ..] = self.header;
            self.skip = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            if !on_header(&self.header) {
                return false;
            }
        }
        true
    }
}

impl Default for H2Frames {
    fn default() -> Self {
        H2Frames::new()
    }
}

impl H2Frames {
    /// A watcher at the start of the client's stream (before the preface).
    pub fn new() -> Self {
        H2Frames {
            preface_left: 24,
            inp: FrameCursor::default(),
            tokens: f64::from(BURST),
            refilled: Instant::now(),
            counted: 0,
            body_deadline: None,
            bodies: Vec::new(),
            stream_flood: false,
            in_header_block: false,
            ends_with_block: None,
            ended: 0,
            last_opened: 0,
            out: FrameCursor::default(),
        }
    }

    /// The same, also following request bodies, each due `deadline` after its HEADERS.
    pub fn with_body_deadline(deadline: Duration) -> Self {
        H2Frames {
            body_deadline: Some(deadline),
            ..H2Frames::new()
        }
    }

    /// Follows `bytes` (the next bytes the client sent); `false` once the connection is
    /// over its control-frame budget.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.preface_left > 0 {
            let n = self.preface_left.min(bytes.len());
            self.preface_left -= n;
            bytes = &bytes[n..];
        }
        let mut inp = std::mem::take(&mut self.inp);
        let within = inp.follow(bytes, |h| self.frame(h));
        self.inp = inp;
        within
    }

    /// One frame header from the client; `false` once over a budget.
    fn frame(&mut self, h: &[u8; 9]) -> bool {
        let [a, b, c, kind, flags, s0, s1, s2, s3] = *h;
        let length = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
        match kind {
            HEADERS | PUSH_PROMISE => self.in_header_block = flags & END_HEADERS == 0,
            CONTINUATION => self.in_header_block &= flags & END_HEADERS == 0,
            _ => {}
        }
        let stream = u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]);
        if !self.follow_body(kind, flags, stream) {
            return false;
        }
        if !carries_data(kind, length) {
            self.counted += 1;
            if !self.spend() {
                return false;
            }
        }
        true
    }

    /// Notes what a frame header says about its stream's request body; `false` when the
    /// connection has more unfinished bodies than [`MAX_BODIES`].
    fn follow_body(&mut self, kind: u8, flags: u8, stream: u32) -> bool {
        let Some(deadline) = self.body_deadline else {
            return true;
        };
        // Client-initiated streams are odd; 0 is the connection.
        if stream % 2 == 0 {
            return true;
        }
        let ends = flags & END_STREAM != 0;
        match kind {
            // Only a new stream opens a body (client stream ids only grow): HEADERS again on
            // an older one are trailers, of a stream the server may have reset and forgotten.
            HEADERS if !ends && stream > self.last_opened => {
                self.last_opened = stream;
                if self.bodies.len() >= MAX_BODIES {
                    self.stream_flood = true;
                    return false;
                }
                self.bodies.push((stream, Instant::now() + deadline));
            }
            // Trailers end the stream once their header block is complete (h2 acts on the
            // block, not on its first frame).
            HEADERS if ends && flags & END_HEADERS == 0 => self.ends_with_block = Some(stream),
            CONTINUATION if flags & END_HEADERS != 0 => {
                if let Some(ended) = self.ends_with_block.take() {
                    self.bodies.retain(|(id, _)| *id != ended);
                }
            }
            HEADERS | DATA if ends => self.bodies.retain(|(id, _)| *id != stream),
            RST_STREAM => self.bodies.retain(|(id, _)| *id != stream),
            _ => {}
        }
        true
    }

    /// Why [`H2Frames::feed`] said no: `h2_stream_flood` (too many unfinished bodies) or
    /// `h2_control_flood`, as `sessiongate_connections_closed_total` labels it.
    pub fn closed_for(&self) -> &'static str {
        if self.stream_flood {
            "h2_stream_flood"
        } else {
            "h2_control_flood"
        }
    }

    /// When the earliest unfinished body is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.bodies.iter().map(|(_, due)| *due).min()
    }

    /// An unfinished body past its deadline at `now`, no longer followed: its stream id.
    pub fn take_overdue(&mut self, now: Instant) -> Option<u32> {
        let at = self.bodies.iter().position(|(_, due)| *due <= now)?;
        self.ended = self.ended.saturating_add(1);
        Some(self.bodies.remove(at).0)
    }

    /// Streams ended by [`H2Frames::take_overdue`] so far.
    pub fn ended(&self) -> u32 {
        self.ended
    }

    /// Follows `bytes` the server wrote to the client: a stream it resets is no longer
    /// followed (the h2 server may forget it). A response that ends (END_STREAM) does not
    /// count: Pingora goes on reading the body of a request answered early, with its
    /// upstream connection, and h2 resets the stream itself once Pingora lets it go.
    pub fn wrote(&mut self, bytes: &[u8]) {
        if self.body_deadline.is_none() {
            return;
        }
        let bodies = &mut self.bodies;
        self.out.follow(bytes, |h| {
            let [.., kind, _, s0, s1, s2, s3] = *h;
            if kind == RST_STREAM {
                let stream = u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]);
                bodies.retain(|(id, _)| *id != stream);
            }
            true
        });
    }

    /// How many bytes a read may take to stop at the next place a frame of ours may go:
    /// the rest of the current frame (or preface, or frame header), or a whole frame header
    /// inside a header block; `usize::MAX` when already there.
    pub fn bytes_to_boundary(&self) -> usize {
        if self.preface_left > 0 {
            self.preface_left
        } else if self.inp.have > 0 {
            9 - self.inp.have
        } else if self.inp.skip > 0 {
            self.inp.skip
        } else if self.in_header_block {
            9
        } else {
            usize::MAX
        }
    }

    /// Request bodies followed and not finished yet.
    pub fn unfinished_bodies(&self) -> usize {
        self.bodies.len()
    }

    /// Whether the client's stream is between frames, and not inside a header block: a frame
    /// of ours may go in here.
    pub fn at_frame_boundary(&self) -> bool {
        self.preface_left == 0 && self.inp.have == 0 && self.inp.skip == 0 && !self.in_header_block
    }

    /// Control frames seen so far (the one over the budget included).
    pub fn control_frames(&self) -> u64 {
        self.counted
    }

    /// Takes one control frame from the budget, topped up first with what the time since
    /// the last frame earned (never past a burst).
    fn spend(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * f64::from(PER_SECOND);
        self.tokens = (self.tokens + earned).min(f64::from(BURST));
        self.refilled = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, payload: usize) -> Vec<u8> {
        vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            0,
            0,
            0,
            0,
            1,
        ]
    }

    fn frame(kind: u8, payload: usize) -> Vec<u8> {
        let mut f = header(kind, payload);
        f.extend(std::iter::repeat_n(0xAB, payload));
        f
    }

    fn preface() -> Vec<u8> {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
    }

    #[test]
    fn a_flood_of_priority_frames_is_cut_at_the_burst() {
        let mut w = H2Frames::new();
        assert!(w.feed(&preface()));
        let priority = frame(0x2, 5);
        let mut sent = 0;
        while w.feed(&priority) {
            sent += 1;
            assert!(sent <= BURST + 1_000, "never cut");
        }
        // The burst, plus what the clock refilled while the loop ran.
        assert!(sent >= BURST, "cut after {sent}");
    }

    #[test]
    fn data_and_headers_with_a_payload_never_count_whatever_their_number() {
        let mut w = H2Frames::new();
        let mut stream = preface();
        stream.extend(frame(0x4, 0));
        for _ in 0..(2 * BURST) {
            stream.extend(frame(0x0, 3));
            stream.extend(frame(0x1, 7));
        }
        assert!(w.feed(&stream));
    }

    #[test]
    fn frames_split_anywhere_are_followed() {
        // A control frame whose payload looks like frame headers of control frames: only
        // real headers count, also when the stream arrives a byte at a time.
        let mut stream = preface();
        let fake = frame(0x8, 4).repeat(100);
        stream.extend(header(0x0, fake.len()));
        stream.extend(&fake);
        for _ in 0..10 {
            stream.extend(frame(0x8, 4));
        }
        let mut w = H2Frames::new();
        for byte in &stream {
            assert!(w.feed(std::slice::from_ref(byte)));
        }
        assert_eq!(w.control_frames(), 10);
    }

    #[test]
    fn the_budget_refills_with_time() {
        let mut w = H2Frames::new();
        assert!(w.feed(&preface()));
        w.tokens = 0.0;
        w.refilled = Instant::now() - std::time::Duration::from_millis(10);
        // 10 ms at PER_SECOND: about 100 frames.
        let window = frame(0x8, 4);
        let mut sent = 0;
        while w.feed(&window) {
            sent += 1;
        }
        assert!((90..=BURST).contains(&sent), "{sent}");
    }

    fn flagged(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut f = frame(kind, payload);
        f[4] = flags;
        f[5..9].copy_from_slice(&stream.to_be_bytes());
        f
    }

    #[test]
    fn unfinished_bodies_are_followed_until_they_end() {
        let mut w = H2Frames::with_body_deadline(std::time::Duration::from_secs(3));
        let mut stream = preface();
        stream.extend(frame(0x4, 0));
        // 1: a GET that ends with its headers. 3: a body that ends. 5: a body that stalls.
        // 7: reset by the client. 9: ends with trailers.
        stream.extend(flagged(HEADERS, END_STREAM | 0x4, 1, 10));
        stream.extend(flagged(HEADERS, 0x4, 3, 10));
        stream.extend(flagged(HEADERS, 0x4, 5, 10));
        stream.extend(flagged(HEADERS, 0x4, 7, 10));
        stream.extend(flagged(HEADERS, 0x4, 9, 10));
        stream.extend(flagged(DATA, 0, 3, 100));
        stream.extend(flagged(DATA, END_STREAM, 3, 100));
        stream.extend(flagged(DATA, 0, 5, 100));
        stream.extend(flagged(RST_STREAM, 0, 7, 4));
        stream.extend(flagged(DATA, 0, 9, 100));
        stream.extend(flagged(HEADERS, END_STREAM | 0x4, 9, 10));
        for byte in &stream {
            assert!(w.feed(std::slice::from_ref(byte)));
        }
        assert!(w.at_frame_boundary());
        let now = Instant::now();
        assert_eq!(w.take_overdue(now), None);
        let due = w.next_due().map(|d| d.duration_since(now));
        assert!(
            due.is_some_and(|d| d <= std::time::Duration::from_secs(3)),
            "{due:?}"
        );
        let later = now + std::time::Duration::from_secs(4);
        assert_eq!(w.take_overdue(later), Some(5));
        assert_eq!(w.take_overdue(later), None);
        assert_eq!(w.next_due(), None);
        // Between a HEADERS frame and its CONTINUATION frames, nothing either.
        assert!(w.feed(&flagged(HEADERS, 0, 13, 10)));
        assert!(!w.at_frame_boundary());
        assert!(w.feed(&flagged(CONTINUATION, 0, 13, 10)));
        assert!(!w.at_frame_boundary());
        assert!(w.feed(&flagged(CONTINUATION, END_HEADERS, 13, 10)));
        assert!(w.at_frame_boundary());
        // Mid-frame, nothing of ours may be inserted.
        assert!(w.feed(&flagged(DATA, 0, 11, 10)[..12]));
        assert!(!w.at_frame_boundary());
    }

    #[test]
    fn streams_the_server_reset_are_no_longer_followed_and_answered_ones_are() {
        let mut w = H2Frames::with_body_deadline(std::time::Duration::from_secs(3));
        assert!(w.feed(&preface()));
        for id in [1, 3, 5] {
            assert!(w.feed(&flagged(HEADERS, END_HEADERS, id, 10)));
        }
        assert_eq!(w.unfinished_bodies(), 3);
        // The server's SETTINGS, a whole response to 1 (Pingora may still read its body),
        // a reset of 3, a response head to 5. Written a byte at a time.
        let mut out = frame(0x4, 6);
        out.extend(flagged(HEADERS, END_HEADERS, 1, 20));
        out.extend(flagged(DATA, END_STREAM, 1, 100));
        out.extend(flagged(RST_STREAM, 0, 3, 4));
        out.extend(flagged(HEADERS, END_HEADERS, 5, 20));
        for byte in &out {
            w.wrote(std::slice::from_ref(byte));
        }
        assert_eq!(w.unfinished_bodies(), 2);
        let later = Instant::now() + std::time::Duration::from_secs(4);
        assert_eq!(w.take_overdue(later), Some(1));
        assert_eq!(w.take_overdue(later), Some(5));
        assert_eq!(w.ended(), 2);
    }

    #[test]
    fn trailers_end_a_body_when_their_header_block_ends() {
        let mut w = H2Frames::with_body_deadline(std::time::Duration::from_secs(3));
        assert!(w.feed(&preface()));
        assert!(w.feed(&flagged(HEADERS, END_HEADERS, 1, 10)));
        assert!(w.feed(&flagged(HEADERS, END_STREAM, 1, 10)));
        assert_eq!(w.unfinished_bodies(), 1);
        assert!(w.feed(&flagged(CONTINUATION, 0, 1, 10)));
        assert_eq!(w.unfinished_bodies(), 1);
        assert!(w.feed(&flagged(CONTINUATION, END_HEADERS, 1, 10)));
        assert_eq!(w.unfinished_bodies(), 0);
        // Trailers without END_STREAM on that (ended) stream open nothing again.
        assert!(w.feed(&flagged(HEADERS, END_HEADERS, 1, 10)));
        assert_eq!(w.unfinished_bodies(), 0);
    }

    #[test]
    fn reads_past_a_deadline_stop_at_the_next_boundary() {
        let mut w = H2Frames::with_body_deadline(std::time::Duration::from_secs(3));
        assert_eq!(w.bytes_to_boundary(), 24);
        assert!(w.feed(&preface()));
        assert_eq!(w.bytes_to_boundary(), usize::MAX);
        let data = flagged(DATA, 0, 1, 100);
        assert!(w.feed(&data[..4]));
        assert_eq!(w.bytes_to_boundary(), 5);
        assert!(w.feed(&data[4..20]));
        assert_eq!(w.bytes_to_boundary(), 89);
        assert!(w.feed(&data[20..]));
        assert_eq!(w.bytes_to_boundary(), usize::MAX);
        assert!(w.feed(&flagged(HEADERS, 0, 3, 0)));
        assert_eq!(w.bytes_to_boundary(), 9);
    }

    #[test]
    fn bodies_are_bounded_and_not_followed_without_a_deadline() {
        let mut plain = H2Frames::new();
        assert!(plain.feed(&preface()));
        assert!(plain.feed(&flagged(HEADERS, 0x4, 1, 10)));
        assert_eq!(plain.next_due(), None);
        let mut w = H2Frames::with_body_deadline(std::time::Duration::from_secs(60));
        assert!(w.feed(&preface()));
        for id in 0..MAX_BODIES as u32 {
            assert!(w.feed(&flagged(HEADERS, 0x4, 2 * id + 1, 10)));
        }
        assert_eq!(w.closed_for(), "h2_control_flood");
        // One more unfinished body than the bound: the connection is closed.
        assert!(!w.feed(&flagged(HEADERS, 0x4, 2 * MAX_BODIES as u32 + 1, 10)));
        assert_eq!(w.closed_for(), "h2_stream_flood");
        assert_eq!(w.bodies.len(), MAX_BODIES);
    }

    #[test]
    fn unknown_types_empty_data_and_goaway_count_too() {
        for kind in [0x0, 0x7, 0xa, 0xff] {
            let mut w = H2Frames::new();
            assert!(w.feed(&preface()));
            let empty = frame(kind, 0);
            let mut sent = 0u32;
            while w.feed(&empty) {
                sent += 1;
                assert!(sent <= BURST + 1_000, "type {kind:#x} never cut");
            }
        }
    }
}
