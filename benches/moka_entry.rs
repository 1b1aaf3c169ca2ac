//! What one moka entry costs on its own, the floor under "bytes per cached session"
//! (`benches/cache_memory.py` measures the whole gateway). The cache keys the gateway uses
//! are 32-byte digests; the value here is an `Arc` of 64 bytes, so what is printed minus
//! 80 (the `Arc`'s allocation) is moka's own bookkeeping per entry.
//!
//!     cargo bench --bench moka_entry          # 100,000 entries, each cache flavour
//!
//! Under `cargo test --benches` it runs once with 10,000 entries (a smoke test: it must
//! build and run; the figure is only meaningful from `cargo bench`).

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

type Key = [u8; 32];
type Value = Arc<[u8; 64]>;

struct AnHour;

impl moka::Expiry<Key, Value> for AnHour {
    fn expire_after_create(&self, _: &Key, _: &Value, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(3600))
    }
}

/// Resident bytes of this process (`/proc/self/statm`), 0 where that cannot be read.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

async fn fill(cache: moka::future::Cache<Key, Value>, n: u64) -> (u64, u64) {
    let before = rss();
    for i in 0..n {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&i.to_le_bytes());
        cache.insert(key, Arc::new([0u8; 64])).await;
    }
    cache.run_pending_tasks().await;
    (rss().saturating_sub(before) / n.max(1), cache.entry_count())
}

/// Each flavour of cache the gateway could use, built for `n` entries.
fn build(flavour: usize, n: u64) -> Option<(&'static str, moka::future::Cache<Key, Value>)> {
    let builder = moka::future::Cache::builder().max_capacity(2 * n);
    Some(match flavour {
        0 => ("size-bounded", builder.build()),
        1 => (
            "size-bounded, time to live",
            builder.time_to_live(Duration::from_secs(3600)).build(),
        ),
        2 => (
            "size-bounded, per-entry expiry (the gateway's caches)",
            builder.expire_after(AnHour).build(),
        ),
        _ => return None,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = if args.iter().any(|a| a == "--bench") {
        100_000
    } else {
        10_000
    };
    // One flavour per process: memory freed by one cache would be reused by the next and
    // read low.
    let Some(flavour) = args
        .iter()
        .position(|a| a == "--flavour")
        .and_then(|i| args.get(i + 1))
        .and_then(|f| f.parse::<usize>().ok())
    else {
        for flavour in 0.. {
            if build(flavour, 1).is_none() {
                break;
            }
            let status = std::process::Command::new(&args[0])
                .args(&args[1..])
                .arg("--flavour")
                .arg(flavour.to_string())
                .status();
            if !status.as_ref().is_ok_and(|s| s.success()) {
                panic!("flavour {flavour} failed: {status:?}");
            }
        }
        return;
    };
    let Some((name, cache)) = build(flavour, n) else {
        panic!("no flavour {flavour}");
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(r) => r,
        Err(e) => panic!("runtime: {e}"),
    };
    let (per_entry, entries) = runtime.block_on(fill(cache, n));
    println!("moka {name}: {per_entry} bytes per entry ({entries} entries, value 80 bytes)");
}
