//! The open connections and which of them may make room for a new one.
//!
//! A hard cap alone lets a client that opens connections and sends nothing (or stops after its
//! TLS handshake) fill every slot and lock the API server out until the deadlines free them.
//! So at the limit a new connection takes the place of an idle one, as nginx reuses keep-alive
//! connections when it runs out: one with no request in progress, preferring one that never
//! completed a request, then the longest idle. Only when every connection is busy is the new
//! one closed at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

pub struct Connections {
    max: usize,
    /// What `idle_since` counts from.
    epoch: Instant,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    by_id: HashMap<u64, Slot>,
}

struct Slot {
    activity: Arc<SlotActivity>,
    close: Arc<Notify>,
}

/// A connection's requests, marked by its handlers without the connections' lock: every request
/// passes here twice, and only admitting a connection at the limit reads it.
#[derive(Default)]
struct SlotActivity {
    /// Requests being answered right now.
    busy: AtomicU32,
    /// Whether a request was ever answered on it (the API server's pooled connections).
    served: AtomicBool,
    /// Nanoseconds from `Connections::epoch` to the end of its last request (or its admission).
    idle_since: AtomicU64,
}

/// What [`Connections::admit`] decided for a new connection.
pub enum Admitted {
    /// There was room.
    Room(Ticket),
    /// An idle connection was told to close to make room.
    Evicted(Ticket),
    /// Every connection is busy: close the new one.
    Full,
}

/// One admitted connection's place; it leaves when this is dropped.
pub struct Ticket {
    connections: Arc<Connections>,
    id: u64,
    activity: Arc<SlotActivity>,
    /// Notified when the connection should finish: evicted, or the server is shutting down.
    pub close: Arc<Notify>,
}

/// What a request handler needs to mark its connection busy.
#[derive(Clone)]
pub struct Activity {
    epoch: Instant,
    slot: Arc<SlotActivity>,
}

/// Marks a connection busy while a request is answered on it.
pub struct Busy(Activity);

impl Connections {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            epoch: Instant::now(),
            open: Mutex::default(),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn admit(self: &Arc<Self>) -> Admitted {
        let mut open = self.open();
        let mut evicted = false;
        if open.by_id.len() >= self.max {
            let idlest = open
                .by_id
                .iter()
                .filter(|(_, s)| s.activity.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|(id, s)| {
                    let a = &s.activity;
                    let served = a.served.load(Ordering::Relaxed);
                    (served, a.idle_since.load(Ordering::Relaxed), **id)
                })
                .map(|(id, _)| *id);
            let Some(id) = idlest else {
                return Admitted::Full;
            };
            if let Some(slot) = open.by_id.remove(&id) {
                slot.close.notify_one();
            }
            evicted = true;
        }
        let id = open.next_id;
        open.next_id += 1;
        let close = Arc::new(Notify::new());
        let activity = Arc::new(SlotActivity::default());
        activity
            .idle_since
            .store(self.since_epoch(), Ordering::Relaxed);
        let slot = Slot {
            activity: activity.clone(),
            close: close.clone(),
        };
        open.by_id.insert(id, slot);
        let ticket = Ticket {
            connections: self.clone(),
            id,
            activity,
            close,
        };
        match evicted {
            true => Admitted::Evicted(ticket),
            false => Admitted::Room(ticket),
        }
    }

    /// Tells every open connection to finish (at shutdown).
    pub fn close_all(&self) {
        for slot in self.open().by_id.values() {
            slot.close.notify_one();
        }
    }

    pub fn count(&self) -> usize {
        self.open().by_id.len()
    }

    fn since_epoch(&self) -> u64 {
        nanos_since(self.epoch)
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Ticket {
    pub fn activity(&self) -> Activity {
        Activity {
            epoch: self.connections.epoch,
            slot: self.activity.clone(),
        }
    }
}

impl Activity {
    /// Marks the connection busy until the returned guard is dropped.
    pub fn busy(&self) -> Busy {
        self.slot.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.connections.open().by_id.remove(&self.id);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let slot = &self.0.slot;
        slot.served.store(true, Ordering::Relaxed);
        slot.idle_since
            .store(nanos_since(self.0.epoch), Ordering::Relaxed);
        slot.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(a: Admitted) -> Ticket {
        match a {
            Admitted::Room(t) | Admitted::Evicted(t) => t,
            Admitted::Full => panic!("refused"),
        }
    }

    /// Whether `t` was told to close (without waiting).
    fn told_to_close(t: &Ticket) -> bool {
        use std::future::Future;
        let notified = t.close.notified();
        let mut notified = std::pin::pin!(notified);
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        notified.as_mut().enable();
        notified.poll(&mut cx).is_ready()
    }

    #[test]
    fn admits_up_to_the_limit_then_evicts_the_longest_idle() {
        let c = Connections::new(2);
        let first = ticket(c.admit());
        let second = ticket(c.admit());
        let third = c.admit();
        assert!(matches!(third, Admitted::Evicted(_)));
        assert!(told_to_close(&first));
        assert!(!told_to_close(&second));
        assert_eq!(c.count(), 2);
    }

    #[test]
    fn evicts_a_connection_that_never_completed_a_request_before_a_served_one() {
        let c = Connections::new(2);
        let served = ticket(c.admit());
        drop(served.activity().busy());
        let fresh = ticket(c.admit());
        let _third = ticket(c.admit());
        assert!(told_to_close(&fresh), "the never-served one goes first");
        assert!(!told_to_close(&served));
    }

    #[test]
    fn never_evicts_a_busy_connection_and_refuses_when_all_are_busy() {
        let c = Connections::new(2);
        let a = ticket(c.admit());
        let b = ticket(c.admit());
        let _busy_a = a.activity().busy();
        let busy_b = b.activity().busy();
        assert!(matches!(c.admit(), Admitted::Full));
        drop(busy_b);
        assert!(matches!(c.admit(), Admitted::Evicted(_)));
        assert!(told_to_close(&b) && !told_to_close(&a));
    }

    #[test]
    fn a_dropped_ticket_frees_its_place_and_close_all_reaches_everyone() {
        let c = Connections::new(2);
        let a = ticket(c.admit());
        drop(ticket(c.admit()));
        assert_eq!(c.count(), 1);
        let b = ticket(c.admit());
        c.close_all();
        assert!(told_to_close(&a) && told_to_close(&b));
    }
}
