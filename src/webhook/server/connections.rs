//! The open connections and which of them may make room for a new one.
//!
//! A hard cap alone lets a client that opens connections and sends nothing (or stops after its
//! TLS handshake) fill every slot and lock the API server out until the deadlines free them.
//! So at the limit a new connection takes the place of an idle one, as nginx reuses keep-alive
//! connections when it runs out: one with no request in progress, preferring one that never
//! completed a request, then the longest idle. Only when every connection is busy is the new
//! one closed at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

pub struct Connections {
    max: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    by_id: HashMap<u64, Slot>,
}

struct Slot {
    /// Requests being answered right now.
    busy: u32,
    /// Whether a request was ever answered on it (the API server's pooled connections).
    served: bool,
    idle_since: Instant,
    close: Arc<Notify>,
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
    /// Notified when the connection should finish: evicted, or the server is shutting down.
    pub close: Arc<Notify>,
}

/// What a request handler needs to mark its connection busy.
#[derive(Clone)]
pub struct Activity {
    connections: Arc<Connections>,
    id: u64,
}

/// Marks a connection busy while a request is answered on it.
pub struct Busy(Activity);

impl Connections {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
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
                .filter(|(_, s)| s.busy == 0)
                .min_by_key(|(id, s)| (s.served, s.idle_since, **id))
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
        open.by_id.insert(
            id,
            Slot {
                busy: 0,
                served: false,
                idle_since: Instant::now(),
                close: close.clone(),
            },
        );
        let ticket = Ticket {
            connections: self.clone(),
            id,
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
}

impl Ticket {
    pub fn activity(&self) -> Activity {
        Activity {
            connections: self.connections.clone(),
            id: self.id,
        }
    }
}

impl Activity {
    /// Marks the connection busy until the returned guard is dropped.
    pub fn busy(&self) -> Busy {
        if let Some(slot) = self.connections.open().by_id.get_mut(&self.id) {
            slot.busy += 1;
        }
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
        if let Some(slot) = self.0.connections.open().by_id.get_mut(&self.0.id) {
            slot.busy = slot.busy.saturating_sub(1);
            slot.served = true;
            slot.idle_since = Instant::now();
        }
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
