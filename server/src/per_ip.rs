//! The per-address cap (`--max-connections-per-ip`): how many sockets one
//! client address may hold at once, handshakes in progress included.
//!
//! Without it one address can take every slot of `--max-connections`. The
//! count is taken in the accept loop, before the socket gets a connection
//! slot, so a refused socket (HTTP 429) never holds one. Each counted socket
//! holds an [`IpSlot`] whose `Drop` gives the count back, so it comes back
//! however the connection ends — close, error, cancellation or a panic
//! unwinding through the task — the same guard shape as `cap::Slot`.
//!
//! Off by default (0): behind a reverse proxy every client arrives from the
//! proxy's address, and any limit would cap the whole server. An address is
//! the exact IP; IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, seen on a
//! dual-stack listener) count as the IPv4 address. An IPv6 client usually
//! holds a whole /64, so the cap slows such a client down rather than
//! stopping it; `--max-connections` remains the server's bound.
//!
//! The map holds an entry only for addresses with a connection (an entry is
//! removed when its count reaches zero), so it never outgrows the number of
//! open sockets, itself bounded by `--max-connections`. A
//! `std::sync::Mutex`: the lock is held for one map operation and never
//! across an `.await`, and a `Drop` cannot await an async lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Connections held per address; an address with none has no entry.
type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Connections held per client address.
pub(crate) struct PerIpCap {
    /// `--max-connections-per-ip`; 0 means no limit and no counting.
    limit: usize,
    held: Counts,
}

/// One counted connection of one address; dropping it gives the count back.
pub(crate) struct IpSlot {
    /// `None` when the cap is off: nothing to give back.
    counted: Option<(Counts, IpAddr)>,
}

impl PerIpCap {
    pub(crate) fn new(limit: usize) -> PerIpCap {
        PerIpCap {
            limit,
            held: Arc::default(),
        }
    }

    /// Counts one more connection from `ip`, or `None` if that address
    /// already holds the limit.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        if self.limit == 0 {
            return Some(IpSlot { counted: None });
        }
        let ip = ip.to_canonical();
        let mut held = lock(&self.held);
        let count = held.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            counted: Some((self.held.clone(), ip)),
        })
    }

    /// Addresses holding at least one connection (0 when the cap is off).
    pub(crate) fn addresses(&self) -> usize {
        lock(&self.held).len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some((held, ip)) = self.counted.take() else {
            return;
        };
        let mut held = lock(&held);
        if let Some(count) = held.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&ip);
            }
        }
    }
}

/// The map, even if a thread panicked while holding the lock: every update
/// is a single step, so the map is never left half-changed. (A `Drop` that
/// panicked on a poisoned lock during unwinding would abort the process.)
fn lock(held: &Mutex<HashMap<IpAddr, usize>>) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

    #[test]
    fn counts_per_address_and_forgets_at_zero() {
        let cap = PerIpCap::new(2);
        let a1 = cap.try_acquire(A).unwrap();
        let a2 = cap.try_acquire(A).unwrap();
        assert!(cap.try_acquire(A).is_none());
        // A refusal left nothing behind, and another address is not limited.
        let b1 = cap.try_acquire(B).unwrap();
        assert_eq!(cap.addresses(), 2);
        drop(a1);
        let a3 = cap.try_acquire(A).unwrap();
        drop((a2, a3, b1));
        assert_eq!(cap.addresses(), 0);
    }

    #[test]
    fn mapped_ipv6_counts_as_ipv4() {
        let cap = PerIpCap::new(1);
        let _a = cap.try_acquire(A).unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped());
        assert!(cap.try_acquire(mapped).is_none());
        assert!(cap.try_acquire(IpAddr::V6(Ipv6Addr::LOCALHOST)).is_some());
    }

    #[test]
    fn off_counts_nothing() {
        let cap = PerIpCap::new(0);
        let slots: Vec<_> = (0..100).map(|_| cap.try_acquire(A).unwrap()).collect();
        assert_eq!(cap.addresses(), 0);
        drop(slots);
    }

    #[test]
    fn a_panic_gives_the_count_back() {
        let cap = PerIpCap::new(1);
        let result = catch_unwind(AssertUnwindSafe(|| {
            let _slot = cap.try_acquire(A).unwrap();
            panic!("the connection task panics");
        }));
        assert!(result.is_err());
        assert_eq!(cap.addresses(), 0);
        assert!(cap.try_acquire(A).is_some());
    }
}
