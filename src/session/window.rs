//! Sliding-window hit counters: what a store returns when asked to count one more hit, and
//! the in-process implementation (the memory store's, and the rate limiter's fallback while
//! a shared store is unreachable).
//!
//! A key's hits are kept per fixed window (`unix_ms / window`); a caller weighs the previous
//! window's count by how much of it still overlaps the sliding window. Two integers per key,
//! whatever the rate, and within a few percent of an exact sliding log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One key's counts after a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    /// Hits in the current fixed window, this one included.
    pub current: u64,
    /// Hits in the fixed window before it.
    pub previous: u64,
    /// How far into the current fixed window the hit fell.
    pub elapsed: Duration,
    /// The window length.
    pub window: Duration,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One key's state.
#[derive(Debug, Clone, Copy)]
struct Slot {
    index: u64,
    current: u64,
    previous: u64,
    window_ms: u64,
}

/// Counters in process memory, bounded: past `max_keys` keys the least recently hit one is
/// evicted (moka, LRU). Never all at once: clearing every counter when full would let a
/// flood of random keys reset everyone's failed-authentication count.
#[derive(Debug)]
pub struct LocalWindows {
    slots: moka::sync::Cache<String, Arc<Mutex<Slot>>>,
}

impl Default for LocalWindows {
    fn default() -> Self {
        Self::new(1_000_000)
    }
}

impl LocalWindows {
    /// Counters for at most `max_keys` keys at a time.
    pub fn new(max_keys: usize) -> Self {
        LocalWindows {
            slots: moka::sync::Cache::builder()
                .max_capacity(max_keys.max(1) as u64)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
        }
    }

    /// Counts one hit on `key` at `now_ms`.
    pub fn hit(&self, key: &str, window: Duration, now_ms: u64) -> WindowCount {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let index = now_ms / window_ms;
        let fresh = Slot {
            index,
            current: 0,
            previous: 0,
            window_ms,
        };
        let cell = self
            .slots
            .get_with_by_ref(key, || Arc::new(Mutex::new(fresh)));
        // A poisoned lock only means another thread panicked mid-update of plain integers.
        let mut slot = cell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.window_ms != window_ms {
            *slot = fresh;
        }
        if slot.index != index {
            slot.previous = if slot.index + 1 == index {
                slot.current
            } else {
                0
            };
            slot.current = 0;
            slot.index = index;
        }
        slot.current += 1;
        WindowCount {
            current: slot.current,
            previous: slot.previous,
            elapsed: Duration::from_millis(now_ms % window_ms),
            window: Duration::from_millis(window_ms),
        }
    }

    /// Keys currently held (after pending evictions have run).
    pub fn len(&self) -> usize {
        self.slots.run_pending_tasks();
        usize::try_from(self.slots.entry_count()).unwrap_or(usize::MAX)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    #[test]
    fn counts_roll_from_window_to_window() {
        let w = LocalWindows::default();
        assert_eq!(w.hit("k", W, 10_000).current, 1);
        let c = w.hit("k", W, 12_500);
        assert_eq!((c.current, c.previous), (2, 0));
        assert_eq!(c.elapsed, Duration::from_millis(2_500));
        let c = w.hit("k", W, 20_001);
        assert_eq!((c.current, c.previous), (1, 2));
        // A window with no hits in between: nothing carries over.
        let c = w.hit("k", W, 45_000);
        assert_eq!((c.current, c.previous), (1, 0));
        assert_eq!(w.hit("other", W, 45_000).current, 1);
    }

    #[test]
    fn memory_stays_bounded() {
        let w = LocalWindows::new(100);
        for i in 0..1_000 {
            w.hit(&format!("k{i}"), W, 1_000_000);
        }
        assert!(w.len() <= 100, "{}", w.len());
    }

    #[test]
    fn a_flood_of_new_keys_does_not_reset_a_live_counter() {
        // Before: past max_keys every counter was cleared, so random keys reset an
        // attacker's failed-authentication count.
        // (moka applies writes in batches; the cap must exceed a batch, as 1M does.)
        let w = LocalWindows::new(1_000);
        let mut last = 0;
        for i in 0..20_000 {
            if i % 10 == 0 {
                last = w.hit("attacker", W, 1_000_000).current;
            }
            w.hit(&format!("flood{i}"), W, 1_000_000);
        }
        assert_eq!(last, 2_000);
        assert!(w.len() <= 1_000, "{}", w.len());
    }
}
