//! The HTTP/2 frame watcher follows any byte stream without panicking, and counts the same
//! control frames and unfinished request bodies however the stream is split into reads.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiongate::conn::H2Frames;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a read size; the rest is the client's stream (after its preface).
    let Some((&size, stream)) = data.split_first() else {
        return;
    };
    let deadline = std::time::Duration::from_secs(60);
    let mut whole = H2Frames::with_body_deadline(deadline);
    let whole_ok = whole.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") && whole.feed(stream);
    let mut split = H2Frames::with_body_deadline(deadline);
    let mut split_ok = split.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    for piece in stream.chunks(usize::from(size).max(1)) {
        if !split_ok {
            break;
        }
        split_ok = split.feed(piece);
    }
    // Within the budget (fuzz inputs are far below it), both saw the same frames.
    if whole_ok && split_ok {
        assert_eq!(whole.control_frames(), split.control_frames());
        assert_eq!(whole.unfinished_bodies(), split.unfinished_bodies());
        assert_eq!(whole.at_frame_boundary(), split.at_frame_boundary());
    }
    // The same bytes as the server's frames: followed without panicking either.
    H2Frames::with_body_deadline(deadline).wrote(stream);
});
