//! The live feed of lifecycle events: every event the log carries with an `event`
//! field, as the same JSON object, numbered, for `GET /events` (see `admin::events`).
//!
//! Publishing never waits: it takes a short lock, numbers the event, keeps it in a
//! ring of the last [`KEEP`] (for replay to new subscribers) and hands it to a
//! `tokio::sync::broadcast` channel of the same capacity. A subscriber that falls
//! more than that far behind finds out on its next receive (`Lagged`) and is cut
//! off by its reader; nothing here ever waits for a subscriber.

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use tokio::sync::broadcast;

/// Events kept for replay, and how far a subscriber may fall behind.
pub(crate) const KEEP: usize = 1024;

/// One lifecycle event, as it goes out.
#[derive(Debug)]
pub(crate) struct Event {
    /// Counts up from 1 in each run of forkyard: the SSE `id`.
    pub(crate) seq: u64,
    /// The `event` field (`spawn`, `exit`, …): the SSE `event`.
    pub(crate) name: String,
    /// The JSON object, as the JSON log line would be (one line).
    pub(crate) json: String,
}

/// Which past events a new subscriber gets first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// None: only what happens from now on.
    Nothing,
    /// The last `n` kept events (at most [`KEEP`]).
    Last(usize),
    /// Every kept event after this `seq` (an SSE `Last-Event-ID`). An id this run
    /// has not reached came from an earlier run of forkyard: everything kept.
    After(u64),
}

pub(crate) struct Hub {
    inner: Mutex<Inner>,
}

struct Inner {
    next_seq: u64,
    recent: VecDeque<Arc<Event>>,
    tx: broadcast::Sender<Arc<Event>>,
}

/// The feed of this process: the logging layer publishes into it, the admin
/// endpoint reads it.
pub(crate) fn global() -> &'static Hub {
    static HUB: LazyLock<Hub> = LazyLock::new(Hub::new);
    &HUB
}

impl Hub {
    pub(crate) fn new() -> Hub {
        Hub {
            inner: Mutex::new(Inner {
                next_seq: 1,
                recent: VecDeque::with_capacity(KEEP),
                tx: broadcast::channel(KEEP).0,
            }),
        }
    }

    /// Number `json` (the event `name`) and hand it to every subscriber. Never
    /// waits for one.
    pub(crate) fn publish(&self, name: String, json: String) {
        let mut inner = self.inner.lock();
        let event = Arc::new(Event {
            seq: inner.next_seq,
            name,
            json,
        });
        inner.next_seq += 1;
        if inner.recent.len() == KEEP {
            inner.recent.pop_front();
        }
        inner.recent.push_back(event.clone());
        // An error only means nobody listens now.
        let _ = inner.tx.send(event);
    }

    /// The kept events `replay` asks for, and a receiver of every later one: none
    /// missing, none twice.
    pub(crate) fn subscribe(
        &self,
        replay: Replay,
    ) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let inner = self.inner.lock();
        let rx = inner.tx.subscribe();
        let kept = inner.recent.len();
        let skip = match replay {
            Replay::Nothing => kept,
            Replay::Last(n) => kept.saturating_sub(n),
            Replay::After(id) if id >= inner.next_seq => 0,
            Replay::After(id) => inner.recent.iter().take_while(|e| e.seq <= id).count(),
        };
        (inner.recent.iter().skip(skip).cloned().collect(), rx)
    }

    /// Subscribers now.
    #[cfg(test)]
    pub(crate) fn receivers(&self) -> usize {
        self.inner.lock().tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn replay_then_live_without_gaps_or_repeats() {
        let hub = Hub::new();
        for i in 0..5 {
            hub.publish("spawn".into(), format!("{{\"i\":{i}}}"));
        }
        let (past, mut rx) = hub.subscribe(Replay::Last(2));
        assert_eq!(seqs(&past), [4, 5]);
        hub.publish("ready".into(), "{}".into());
        let next = rx.try_recv().unwrap();
        assert_eq!((next.seq, next.name.as_str()), (6, "ready"));
        assert!(rx.try_recv().is_err());

        assert_eq!(seqs(&hub.subscribe(Replay::After(3)).0), [4, 5, 6]);
        assert_eq!(seqs(&hub.subscribe(Replay::After(6)).0), Vec::<u64>::new());
        assert!(hub.subscribe(Replay::Nothing).0.is_empty());
        // An id from an earlier run: everything kept.
        assert_eq!(hub.subscribe(Replay::After(99)).0.len(), 6);
        assert_eq!(hub.subscribe(Replay::Last(100)).0.len(), 6);
    }

    #[test]
    fn a_subscriber_that_falls_behind_learns_it_and_publishing_never_waits() {
        let hub = Hub::new();
        let (_, mut rx) = hub.subscribe(Replay::Nothing);
        for _ in 0..KEEP + 10 {
            hub.publish("exit".into(), "{}".into());
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
        // Only the last KEEP are kept.
        let (past, _) = hub.subscribe(Replay::Last(usize::MAX));
        assert_eq!(past.len(), KEEP);
        assert_eq!(past[0].seq, 11);
        assert_eq!(hub.receivers(), 1, "the receiver above");
    }
}
