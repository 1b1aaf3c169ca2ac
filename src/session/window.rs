//! Sliding-window hit counters: what a store returns when asked to count one more hit, and
//! the in-process implementation (the memory store's, and the rate limiter's fallback while
//! a shared store is unreachable).
//!
//! A key's hits are kept per fixed window (`unix_ms / window`); a caller weighs the previous
//! window's count by how much of it still overlaps the sliding window. Two integers per key,
//! whatever the rate, and within a few percent of an exact sliding log.

use std::collections::HashMap;
use std::sync::Mutex;
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

/// Counters in process memory, bounded: slots older than two windows are swept, and past
/// `max_keys` live keys the oldest state is dropped (a reset counter, never a refusal).
#[derive(Debug)]
pub struct LocalWindows {
    slots: Mutex<HashMap<String, Slot>>,
    max_keys: usize,
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
            slots: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
        }
    }

    /// Counts one hit on `key` at `now_ms`.
    pub fn hit(&self, key: &str, window: Duration, now_ms: u64) -> WindowCount {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let index = now_ms / window_ms;
        // A poisoned lock only means another thread panicked mid-update of plain integers.
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slots.len() >= self.max_keys && !slots.contains_key(key) {
            slots.retain(|_, s| s.index + 1 >= now_ms / s.window_ms);
            if slots.len() >= self.max_keys {
                slots.clear();
            }
        }
        let slot = slots.entry(key.to_string()).or_insert(Slot {
            index,
            current: 0,
            previous: 0,
            window_ms,
        });
        if slot.window_ms != window_ms {
            *slot = Slot {
                index,
                current: 0,
                previous: 0,
                window_ms,
            };
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

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
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
        assert!(w.len() <= 100);
        // Stale keys are swept before anything live is dropped.
        let w = LocalWindows::new(10);
        for i in 0..10 {
            w.hit(&format!("old{i}"), W, 0);
        }
        w.hit("live", W, 1_000_000);
        assert_eq!(w.len(), 1);
    }
}
