//! The request-head scanner in front of Pingora (`conn::Timed`), checked against a model.
//!
//! Input: a head-size limit, a read size, whether the listener's `next_request` read comes
//! first, then the bytes a client sends. After every read the wrapper must agree with the
//! model: the head is complete exactly when a blank line following a non-blank byte has
//! been read (blank lines before the request line end nothing), and once more than the
//! limit has been read without that, the stream ends and the client gets 431 — never more
//! than one read past the limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiongate::conn::{Deadlines, Timed};
use sessiongate::metrics::Metrics;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

fn metrics() -> Arc<Metrics> {
    static M: OnceLock<Arc<Metrics>> = OnceLock::new();
    M.get_or_init(|| Arc::new(Metrics::new().expect("metrics registry")))
        .clone()
}

/// Where the head ends (bytes up to and including its last `\n`), by the model: drop every
/// `\r`; the head ends at the first `\n\n` that comes after some other byte.
fn head_end(data: &[u8]) -> Option<usize> {
    let mut started = false;
    let mut prev_lf = false;
    for (i, &b) in data.iter().enumerate() {
        match b {
            b'\r' => continue,
            b'\n' if started && prev_lf => return Some(i + 1),
            b'\n' => prev_lf = true,
            _ => {
                started = true;
                prev_lf = false;
            }
        }
    }
    None
}

fuzz_target!(|input: &[u8]| {
    let [a, b, c, ref data @ ..] = *input else {
        return;
    };
    if data.len() > 60_000 {
        return;
    }
    let max_head = 1 + (usize::from(a) | usize::from(b & 0x03) << 8); // 1..=1024
    let read_size = 1 + usize::from(b >> 2); // 1..=64
    let first_via_next_request = c & 1 == 1;
    let end = head_end(data);
    runtime().block_on(async {
        let (ours, mut client) = tokio::io::duplex(64 * 1024);
        let deadlines = Deadlines {
            header: Duration::from_secs(3600),
            idle: Duration::from_secs(3600),
            max_head,
            write: Duration::from_secs(3600),
            body: Duration::from_secs(3600),
        };
        let mut t = Timed::new(Box::new(ours), deadlines, metrics());
        client.write_all(data).await.expect("duplex has room");
        client.shutdown().await.expect("half close");

        // `scanned`: bytes the wrapper has taken from the wire; `delivered`: bytes it has
        // handed on (the `next_request` read is stashed, then delivered again).
        let mut scanned = 0usize;
        let mut delivered = Vec::with_capacity(data.len());
        if first_via_next_request {
            if t.next_request().await {
                // `next_request` reads once into a buffer of `STASH_BYTES` (1024,
                // `src/conn/head.rs`); the duplex holds everything the client wrote.
                scanned = data.len().min(1024);
            } else {
                assert!(
                    data.is_empty(),
                    "next_request saw no bytes of {}",
                    data.len()
                );
            }
        }
        // `scanned` when the wrapper went past the limit without a complete head.
        let mut refused: Option<usize> = None;
        let mut buf = vec![0u8; read_size];
        loop {
            check(&t, end, scanned, max_head, &mut refused);
            let n = t
                .read(&mut buf)
                .await
                .expect("reads from a duplex do not fail");
            if n == 0 {
                break;
            }
            delivered.extend_from_slice(&buf[..n]);
            scanned = scanned.max(delivered.len());
            if let Some(at) = refused {
                assert!(
                    delivered.len() <= at,
                    "bytes taken from the wire after the refusal"
                );
            }
        }
        check(&t, end, scanned, max_head, &mut refused);
        // Whatever was read went up unchanged, and it is everything unless refused.
        assert_eq!(&delivered[..], &data[..delivered.len()]);
        drop(t); // the gateway side closes: the client reads to the end of what it wrote
        let mut answer = Vec::new();
        client
            .read_to_end(&mut answer)
            .await
            .expect("client side reads");
        if refused.is_some() {
            assert!(
                answer.starts_with(b"HTTP/1.1 431 "),
                "refusal: {:?}",
                String::from_utf8_lossy(&answer)
            );
        } else {
            assert_eq!(delivered.len(), data.len(), "stream cut without a refusal");
            assert!(answer.is_empty(), "wrote {answer:?} without refusing");
        }
    });
});

/// The wrapper's state against the model, after `scanned` bytes were taken from the wire.
fn check(
    t: &Timed,
    end: Option<usize>,
    scanned: usize,
    max_head: usize,
    refused: &mut Option<usize>,
) {
    let complete = end.is_some_and(|e| e <= scanned);
    if complete {
        assert!(
            t.head_complete(),
            "head ended at {end:?}, {scanned} read, not seen"
        );
        return;
    }
    assert!(
        !t.head_complete(),
        "head taken as complete after {scanned} bytes; model: {end:?}"
    );
    if scanned > max_head && refused.is_none() {
        // Checked after every read: the read that crossed the limit must be the last.
        *refused = Some(scanned);
    }
}
