//! What relayed sockets may hold, across all of them: a budget of bytes in incomplete client
//! messages (`websocket.max_buffered_bytes`) and a cap on sockets per session
//! (`websocket.max_per_session`). Each socket holds its share through a guard that gives it
//! back when the socket ends, however it ends.

use prometheus::IntGauge;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes of incomplete client messages held across every socket of the process.
#[derive(Debug)]
pub struct Budget {
    max: usize,
    held: AtomicUsize,
    gauge: Option<IntGauge>,
}

impl Budget {
    /// A budget of `max` bytes, reported through `gauge` when there is one.
    pub fn new(max: usize, gauge: Option<IntGauge>) -> Self {
        Budget {
            max,
            held: AtomicUsize::new(0),
            gauge,
        }
    }

    /// A socket's share, empty at first.
    pub fn share(&self) -> Share<'_> {
        Share {
            budget: self,
            mine: 0,
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    fn report(&self, now: usize) {
        if let Some(g) = &self.gauge {
            g.set(i64::try_from(now).unwrap_or(i64::MAX));
        }
    }
}

/// One socket's part of the [`Budget`].
#[derive(Debug)]
pub struct Share<'a> {
    budget: &'a Budget,
    mine: usize,
}

impl Share<'_> {
    /// Makes this socket's share `bytes`. `false` (and the share unchanged) when growing it
    /// would take the process past the budget: the socket must end.
    pub fn set(&mut self, bytes: usize) -> bool {
        let b = self.budget;
        if bytes <= self.mine {
            let now = b.held.fetch_sub(self.mine - bytes, Ordering::AcqRel) - (self.mine - bytes);
            self.mine = bytes;
            b.report(now);
            return true;
        }
        let more = bytes - self.mine;
        let grown = b
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(more).filter(|&total| total <= b.max)
            });
        match grown {
            Ok(before) => {
                self.mine = bytes;
                b.report(before + more);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Sockets open per session. Shared (`Arc`): a slot lives with its socket, which outlives
/// the request that opened it once its connection is taken over (`crate::conn::Takeover`).
#[derive(Debug)]
pub struct PerSession {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

impl PerSession {
    /// At most `max` sockets per session.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PerSession {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more socket of `session_id`, or `None` when it holds `max` already
    /// (or the table is unusable: refusing is the safe side).
    pub fn acquire(self: &Arc<Self>, session_id: &str) -> Option<Slot> {
        let mut open = self.open.lock().ok()?;
        let n = open.entry(session_id.to_string()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            owner: self.clone(),
            session_id: session_id.to_string(),
        })
    }

    /// Sockets `session_id` holds now.
    pub fn open(&self, session_id: &str) -> usize {
        self.open
            .lock()
            .map(|o| o.get(session_id).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// One socket's place under its session's cap; released on drop.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<PerSession>,
    session_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A poisoned table still gets its count back: the slot was taken from it.
        let mut open = match self.owner.open.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(n) = open.get_mut(&self.session_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.session_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge() -> Result<IntGauge, prometheus::Error> {
        IntGauge::new("held", "held")
    }

    #[test]
    fn shares_stay_within_the_budget_and_come_back() -> Result<(), prometheus::Error> {
        let g = gauge()?;
        let b = Budget::new(100, Some(g.clone()));
        let mut one = b.share();
        let mut two = b.share();
        assert!(one.set(60));
        assert!(!two.set(41), "past the budget");
        assert!(two.set(40));
        assert_eq!(b.held(), 100);
        assert!(one.set(10));
        assert!(two.set(90));
        drop(two);
        assert_eq!(b.held(), 10);
        drop(one);
        assert_eq!(b.held(), 0);
        assert_eq!(g.get(), 0);
        Ok(())
    }

    #[test]
    fn a_session_holds_at_most_max_sockets() {
        let p = PerSession::new(2);
        let a = p.acquire("s");
        let b = p.acquire("s");
        assert!(a.is_some() && b.is_some());
        assert!(p.acquire("s").is_none());
        assert!(p.acquire("other").is_some());
        drop(a);
        assert_eq!(p.open("s"), 1);
        assert!(p.acquire("s").is_some());
        drop(b);
        assert_eq!(p.open("s"), 0);
    }
}
