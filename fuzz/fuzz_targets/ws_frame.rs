//! WebSocket framing: parsing never panics; a parsed header re-encodes to the same length
//! class; following boundaries over any chunking agrees with parsing frame by frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiongate::ws::frame::{encode, parse_head, Boundaries};

fuzz_target!(|data: &[u8]| {
    // Frame by frame, as the relay reads a client's stream.
    let mut at = 0usize;
    let mut whole_frames = 0usize;
    while at < data.len() {
        match parse_head(&data[at..]) {
            Ok(Some(h)) => {
                assert!(h.header_len >= 2 && h.header_len <= 14);
                if !h.is_control() || h.len <= 125 {
                    // Re-encoding the payload gives a frame of the same declared length.
                    if h.len <= 4096 && data.len() - at >= h.total() as usize {
                        let payload = &data[at + h.header_len..at + h.total() as usize];
                        let again = encode(h.opcode, payload, h.mask);
                        let re = parse_head(&again).ok().flatten();
                        assert_eq!(re.map(|r| r.len), Some(h.len));
                    }
                }
                match at.checked_add(h.total().min(usize::MAX as u64) as usize) {
                    Some(next) if next <= data.len() => {
                        at = next;
                        whole_frames += 1;
                    }
                    _ => break,
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    // The boundary tracker over arbitrary chunkings: between frames exactly when the
    // frame-by-frame walk consumed everything.
    for chunk in [1usize, 3, 7, 64] {
        let mut b = Boundaries::default();
        for piece in data[..at].chunks(chunk) {
            b.feed(piece);
        }
        assert!(
            b.at_boundary(),
            "{whole_frames} whole frames, chunk {chunk}"
        );
    }
});
