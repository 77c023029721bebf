//! The open connections, and who gets a slot when they run short.
//!
//! An exposed API meets clients that open sockets and send nothing, or send slowly, to hold
//! every slot. So a connection is admitted under three caps: one per source address, one for
//! connections that have not yet carried an authenticated request (the rest is a reserve for
//! callers that have), and one in all. At a cap, the newcomer takes the slot of the oldest idle
//! connection that has proved least (never authenticated first; at the per-source cap, that
//! source's own idle ones): a client that sends its request gets served, one that only holds a
//! socket loses it. A connection with a request in flight is never taken. How long idle
//! connections may stay at all is `server.rs`'s business.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// The caps (see `server::Limits`).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub total: usize,
    pub per_source: usize,
    /// Slots only connections that carried an authenticated request may use.
    pub reserved: usize,
}

/// One open connection, as the registry and its request handlers see it.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    pub source: IpAddr,
    opened: Instant,
    /// A request on it authenticated (set by `auth.rs`).
    authenticated: AtomicBool,
    in_flight: AtomicUsize,
    /// Requests started so far; the idle timer counts from the last one's end.
    requests: AtomicUsize,
    last_end: Mutex<Instant>,
    /// Told to close: another connection took its slot.
    evicted: Notify,
}

impl Connection {
    /// A request on this connection authenticated: it no longer counts against the slots of
    /// connections that have not, and is taken last.
    pub fn authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_ended(&self) {
        *self.last_end.lock().unwrap() = Instant::now();
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// When it last had anything to do: its opening, or the end of its last request.
    pub fn idle_since(&self) -> Instant {
        match self.requests.load(Ordering::Relaxed) {
            0 => self.opened,
            _ => *self.last_end.lock().unwrap(),
        }
    }

    pub fn served_any(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// Resolves once another connection has taken this one's slot.
    pub async fn evicted(&self) {
        self.evicted.notified().await
    }
}

/// Every open connection.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Arc<Connection>>,
}

/// A connection's place in the registry; dropping it frees the slot.
pub struct Slot {
    registry: Arc<Registry>,
    pub connection: Arc<Connection>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry
            .inner
            .lock()
            .unwrap()
            .open
            .remove(&self.connection.id);
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerSource,
    Unauthenticated,
    Total,
}

impl Registry {
    /// Admits a connection from `source`, taking an idle connection's slot if a cap is
    /// reached; refused when every connection in the way is busy.
    pub fn admit(self: &Arc<Self>, source: IpAddr, caps: Caps) -> Result<Slot, Refused> {
        let mut inner = self.inner.lock().unwrap();
        let from_source = inner.open.values().filter(|c| c.source == source).count();
        if from_source >= caps.per_source {
            let victim = inner.oldest_idle(|c| c.source == source, true);
            inner.evict(victim.ok_or(Refused::PerSource)?);
        }
        let unauthenticated = inner
            .open
            .values()
            .filter(|c| !c.is_authenticated())
            .count();
        if unauthenticated >= caps.total.saturating_sub(caps.reserved) {
            let victim = inner.oldest_idle(|_| true, false);
            inner.evict(victim.ok_or(Refused::Unauthenticated)?);
        }
        if inner.open.len() >= caps.total {
            let victim = inner.oldest_idle(|_| true, false);
            inner.evict(victim.ok_or(Refused::Total)?);
        }
        inner.next_id += 1;
        let now = Instant::now();
        let connection = Arc::new(Connection {
            id: inner.next_id,
            source,
            opened: now,
            authenticated: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            last_end: Mutex::new(now),
            evicted: Notify::new(),
        });
        inner.open.insert(connection.id, connection.clone());
        Ok(Slot {
            registry: self.clone(),
            connection,
        })
    }

    pub fn open(&self) -> usize {
        self.inner.lock().unwrap().open.len()
    }
}

impl Inner {
    /// The idle connection among `which` to take a slot from: never authenticated ones first,
    /// oldest first; authenticated ones too if `any`.
    fn oldest_idle(&self, which: impl Fn(&Connection) -> bool, any: bool) -> Option<u64> {
        self.open
            .values()
            .filter(|c| which(c) && !c.busy() && (any || !c.is_authenticated()))
            .min_by_key(|c| (c.is_authenticated(), c.idle_since()))
            .map(|c| c.id)
    }

    /// Takes the slot now (the registry counts it free) and tells the connection to close.
    fn evict(&mut self, id: u64) {
        if let Some(c) = self.open.remove(&id) {
            c.evicted.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    const CAPS: Caps = Caps {
        total: 6,
        per_source: 3,
        reserved: 2,
    };

    #[test]
    fn idle_holders_make_way_and_busy_or_proven_ones_do_not() {
        let registry = Arc::new(Registry::default());
        // One source fills its share with idle sockets; a fourth from it takes the oldest's.
        let idle: Vec<Slot> = (0..3)
            .map(|_| registry.admit(ip(1), CAPS).unwrap())
            .collect();
        let fourth = registry.admit(ip(1), CAPS).unwrap();
        assert_eq!(registry.open(), 3);
        assert!(
            !registry
                .inner
                .lock()
                .unwrap()
                .open
                .contains_key(&idle[0].connection.id),
            "the oldest idle connection keeps its slot"
        );
        // Busy ones are never taken: with all three busy, the source is refused.
        for s in idle.iter().skip(1).chain([&fourth]) {
            s.connection.request_started();
        }
        assert_eq!(registry.admit(ip(1), CAPS).err(), Some(Refused::PerSource));
        // Others fill the slots for the unauthenticated (6 - 2 reserved = 4 of them).
        let other = registry.admit(ip(2), CAPS).unwrap();
        other.connection.authenticated();
        let stranger = registry.admit(ip(3), CAPS).unwrap();
        // A fifth unauthenticated one takes the idle stranger's slot, not the proven caller's.
        let newcomer = registry.admit(ip(4), CAPS).unwrap();
        let open = &registry.inner.lock().unwrap().open;
        assert!(!open.contains_key(&stranger.connection.id));
        assert!(open.contains_key(&other.connection.id));
        assert!(open.contains_key(&newcomer.connection.id));
    }

    #[test]
    fn a_dropped_slot_is_free_again() {
        let registry = Arc::new(Registry::default());
        let slot = registry.admit(ip(1), CAPS).unwrap();
        assert_eq!(registry.open(), 1);
        drop(slot);
        assert_eq!(registry.open(), 0);
    }
}
