//! Connection admission: a cap on open connections in total and per client address, taken
//! before anything is read, so a flood of idle sockets from one address cannot crowd out
//! everyone else.
//!
//! Addresses are counted as the rate limits count them (IPv6 by /64, see
//! [`crate::limits::ip_subject`]); trusted proxies, which carry many clients' connections,
//! count only towards the total.

use crate::config::ConnectionsConfig;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Counts open connections, in total and per client address.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    max_per_ip: usize,
    exempt: Vec<IpNet>,
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The listener is at `max_connections`.
    Total,
    /// This address is at `max_connections_per_ip`.
    PerIp,
}

impl Refused {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerIp => "max_connections_per_ip",
        }
    }
}

/// An admitted connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    key: Option<IpAddr>,
}

impl Slots {
    /// Caps from config; `exempt` (trusted proxies) only count towards the total.
    pub fn new(cfg: &ConnectionsConfig, exempt: Vec<IpNet>) -> Arc<Slots> {
        Slots::with_caps(cfg.max, cfg.max_per_ip, exempt)
    }

    /// These caps (0: none).
    pub fn with_caps(max: usize, max_per_ip: usize, exempt: Vec<IpNet>) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            max_per_ip,
            exempt,
            open: AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for a connection from `peer`, or says which cap refuses it.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refused> {
        let prior = self.open.fetch_add(1, Ordering::AcqRel);
        if self.max > 0 && prior >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        let key = (self.max_per_ip > 0 && !self.exempt.iter().any(|n| n.contains(&peer)))
            .then(|| crate::limits::ip_subject(peer));
        if let Some(k) = key {
            // A poisoned map only means another thread panicked mid-update; the counts are
            // still whole numbers, so keep using them.
            let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = by_ip.entry(k).or_insert(0);
            if *n >= self.max_per_ip {
                drop(by_ip);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::PerIp);
            }
            *n += 1;
        }
        Ok(Slot {
            slots: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            let mut by_ip = self.slots.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = by_ip.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&k);
                }
            }
        }
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cfg(max: usize, per_ip: usize) -> ConnectionsConfig {
        ConnectionsConfig {
            max,
            max_per_ip: per_ip,
            ..ConnectionsConfig::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn caps_count_and_free() {
        let slots = Slots::new(&cfg(3, 2), vec![]);
        let a1 = slots.admit(ip(1));
        let a2 = slots.admit(ip(1));
        assert!(a1.is_ok() && a2.is_ok());
        assert_eq!(slots.admit(ip(1)).err(), Some(Refused::PerIp));
        let b1 = slots.admit(ip(2));
        assert!(b1.is_ok());
        assert_eq!(slots.admit(ip(3)).err(), Some(Refused::Total));
        assert_eq!(slots.open(), 3);
        drop(a1);
        assert_eq!(slots.open(), 2);
        assert!(slots.admit(ip(1)).is_ok());
        drop((a2, b1));
        assert_eq!(slots.open(), 0);
        assert!(slots.by_ip.lock().map(|m| m.is_empty()).unwrap_or(false));
    }

    #[test]
    fn trusted_proxies_only_count_in_total() -> Result<(), ipnet::AddrParseError> {
        let slots = Slots::new(&cfg(0, 1), vec!["10.0.0.0/30".parse()?]);
        let held: Vec<_> = (0..5).map(|_| slots.admit(ip(1))).collect();
        assert!(held.iter().all(Result::is_ok));
        let x = slots.admit(ip(9));
        assert!(x.is_ok());
        assert_eq!(slots.admit(ip(9)).err(), Some(Refused::PerIp));
        Ok(())
    }

    #[test]
    fn zero_means_no_cap() {
        let slots = Slots::new(&cfg(0, 0), vec![]);
        let held: Vec<_> = (0..1000).map(|_| slots.admit(ip(1))).collect();
        assert!(held.iter().all(Result::is_ok));
    }
}
