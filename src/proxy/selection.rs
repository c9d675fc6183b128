//! Choosing a worker slot: the balancing algorithms, as pure functions over a
//! [`View`] of the pool's slots (available or not, in-flight count, weight,
//! identity), so they can be tested without sockets.
//!
//! - Round robin walks a precomputed smooth weighted schedule (nginx's algorithm),
//!   skipping slots that are unavailable.
//! - Least requests is the power of two choices: two distinct random available
//!   slots, the one with fewer in-flight requests per unit of weight wins.
//! - Random is weighted random.
//! - Hash is rendezvous (highest random weight) hashing: each key goes to the
//!   available slot with the highest score for (key, slot identity). Removing a slot
//!   moves only that slot's keys, and its keys return when it does. The identity is
//!   the worker's slot ([`crate::slot::SlotId::hash_id`]), not its port or socket,
//!   so keys stay with a slot across restarts and rolling replacements.
//!
//! [`Selector::new`] matches every [`LbPolicy`] without a fallback arm: a new
//! algorithm that is not handled here does not compile.
//!
//! None of this allocates for pools of up to 64 workers.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::config::LbPolicy;
pub(crate) use crate::slot::mix;

/// What selection needs to know about a pool's slots.
pub(crate) trait View {
    fn slots(&self) -> usize;
    /// Ready, not ejected, and not already tried by this request.
    fn available(&self, slot: usize) -> bool;
    fn in_flight(&self, slot: usize) -> i64;
    fn weight(&self, slot: usize) -> u32;
    fn hash_id(&self, slot: usize) -> u64;
}

#[derive(Debug)]
pub(crate) struct Selector {
    policy: LbPolicy,
    /// Slot order for round robin, each slot `weight` times, interleaved.
    schedule: Box<[u32]>,
    next: AtomicUsize,
    uniform: bool,
}

impl Selector {
    pub(crate) fn new(policy: &LbPolicy, weights: &[u32]) -> Selector {
        Selector {
            policy: policy.clone(),
            schedule: smooth_schedule(weights).into_boxed_slice(),
            next: AtomicUsize::new(0),
            uniform: weights.windows(2).all(|w| w[0] == w[1]),
        }
    }

    /// The slot for the next attempt, or `None` when no slot is available. `key` is
    /// the request's hash key (hash only; without one, round robin is used).
    pub(crate) fn pick(&self, view: &impl View, key: Option<u64>) -> Option<usize> {
        match &self.policy {
            LbPolicy::RoundRobin => self.round_robin(view),
            LbPolicy::LeastRequests => two_choices(view),
            LbPolicy::Random => weighted_random(view),
            LbPolicy::Hash(_) => match key {
                Some(key) => self.rendezvous(view, key),
                None => self.round_robin(view),
            },
        }
    }

    fn round_robin(&self, view: &impl View) -> Option<usize> {
        let n = self.schedule.len();
        if n == 0 {
            return None;
        }
        // Each unavailable position consumes its tick, so the available slots share
        // the cycle evenly (rather than the slot after a gap taking its turns).
        (0..n).find_map(|_| {
            let s = self.schedule[self.next.fetch_add(1, Relaxed) % n] as usize;
            (s < view.slots() && view.available(s)).then_some(s)
        })
    }

    fn rendezvous(&self, view: &impl View, key: u64) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for s in (0..view.slots()).filter(|&s| view.available(s)) {
            let h = mix(key ^ view.hash_id(s));
            let score = if self.uniform {
                h as f64
            } else {
                // Weighted HRW: w / -ln(u) with u uniform in (0, 1).
                let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                f64::from(view.weight(s)) / -u.ln()
            };
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((s, score));
            }
        }
        best.map(|(s, _)| s)
    }
}

/// Available slots, on the stack for small pools.
fn available(view: &impl View, out: &mut Vec<usize>, small: &mut [usize; 64]) -> usize {
    let mut n = 0;
    for s in 0..view.slots() {
        if view.available(s) {
            if n < small.len() && out.is_empty() {
                small[n] = s;
            } else {
                if out.is_empty() {
                    out.extend_from_slice(&small[..n]);
                }
                out.push(s);
            }
            n += 1;
        }
    }
    n
}

fn two_choices(view: &impl View) -> Option<usize> {
    let (mut big, mut small) = (Vec::new(), [0usize; 64]);
    let n = available(view, &mut big, &mut small);
    let list: &[usize] = if big.is_empty() { &small[..n] } else { &big };
    match n {
        0 => None,
        1 => Some(list[0]),
        _ => {
            let i = rand_below(n);
            let mut j = rand_below(n - 1);
            if j >= i {
                j += 1;
            }
            let (a, b) = (list[i], list[j]);
            // Compare in-flight per unit of weight without dividing.
            let load_a = view.in_flight(a) * i64::from(view.weight(b));
            let load_b = view.in_flight(b) * i64::from(view.weight(a));
            Some(if load_b < load_a { b } else { a })
        }
    }
}

fn weighted_random(view: &impl View) -> Option<usize> {
    let total: u64 = (0..view.slots())
        .filter(|&s| view.available(s))
        .map(|s| u64::from(view.weight(s)))
        .sum();
    if total == 0 {
        return None;
    }
    let mut r = rand_below(total as usize) as u64;
    (0..view.slots()).filter(|&s| view.available(s)).find(|&s| {
        let w = u64::from(view.weight(s));
        if r < w {
            true
        } else {
            r -= w;
            false
        }
    })
}

/// nginx's smooth weighted round robin, unrolled into one period.
fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(weights) {
            *c += i64::from(*w);
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
        else {
            break;
        };
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
}

/// A fast per-thread xorshift; selection needs spread, not secrecy.
fn rand_below(n: usize) -> usize {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        ((u128::from(x) * n as u128) >> 64) as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Fake {
        up: RefCell<Vec<bool>>,
        load: Vec<i64>,
        weights: Vec<u32>,
    }

    impl Fake {
        fn new(n: usize) -> Fake {
            Fake {
                up: RefCell::new(vec![true; n]),
                load: vec![0; n],
                weights: vec![1; n],
            }
        }
    }

    impl View for Fake {
        fn slots(&self) -> usize {
            self.load.len()
        }
        fn available(&self, s: usize) -> bool {
            self.up.borrow()[s]
        }
        fn in_flight(&self, s: usize) -> i64 {
            self.load[s]
        }
        fn weight(&self, s: usize) -> u32 {
            self.weights[s]
        }
        fn hash_id(&self, s: usize) -> u64 {
            crate::slot::SlotId(s).hash_id()
        }
    }

    fn counts(
        sel: &Selector,
        view: &Fake,
        n: usize,
        key: impl Fn(usize) -> Option<u64>,
    ) -> Vec<usize> {
        let mut c = vec![0; view.slots()];
        for i in 0..n {
            c[sel.pick(view, key(i)).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_is_even_and_skips_unavailable() {
        let view = Fake::new(4);
        let sel = Selector::new(&LbPolicy::RoundRobin, &view.weights);
        assert_eq!(counts(&sel, &view, 40, |_| None), [10, 10, 10, 10]);
        view.up.borrow_mut()[2] = false;
        let c = counts(&sel, &view, 30, |_| None);
        assert_eq!(c[2], 0);
        assert_eq!(c.iter().sum::<usize>(), 30);
        view.up.borrow_mut().iter_mut().for_each(|u| *u = false);
        assert_eq!(sel.pick(&view, None), None);
    }

    #[test]
    fn weights_shape_round_robin_and_random() {
        let mut view = Fake::new(3);
        view.weights = vec![1, 2, 5];
        let sel = Selector::new(&LbPolicy::RoundRobin, &view.weights);
        assert_eq!(counts(&sel, &view, 80, |_| None), [10, 20, 50]);
        assert_eq!(smooth_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        let sel = Selector::new(&LbPolicy::Random, &view.weights);
        let c = counts(&sel, &view, 8000, |_| None);
        assert!(
            (700..1300).contains(&c[0]) && (4500..5500).contains(&c[2]),
            "{c:?}"
        );
    }

    #[test]
    fn least_requests_prefers_the_idle_slot() {
        let mut view = Fake::new(2);
        view.load = vec![5, 0];
        let sel = Selector::new(&LbPolicy::LeastRequests, &view.weights);
        assert_eq!(counts(&sel, &view, 100, |_| None), [0, 100]);
        // With many slots, the busiest one is almost never picked.
        let mut view = Fake::new(8);
        view.load = vec![9, 0, 0, 0, 0, 0, 0, 0];
        let c = counts(&sel, &view, 1000, |_| None);
        assert_eq!(c[0], 0, "{c:?}");
        view.up.borrow_mut()[1..]
            .iter_mut()
            .for_each(|u| *u = false);
        assert_eq!(sel.pick(&view, None), Some(0), "the only one left");
    }

    #[test]
    fn hash_moves_only_the_removed_slots_keys() {
        let view = Fake::new(5);
        let sel = Selector::new(
            &LbPolicy::Hash(crate::config::HashKey::ClientIp),
            &view.weights,
        );
        let keys: Vec<u64> = (0..2000u64).map(|k| mix(k * 7919)).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|k| sel.pick(&view, Some(*k)).unwrap())
            .collect();
        let spread = (0..5).map(|s| before.iter().filter(|&&b| b == s).count());
        assert!(
            spread.clone().all(|n| (300..500).contains(&n)),
            "{:?}",
            spread.collect::<Vec<_>>()
        );
        view.up.borrow_mut()[3] = false;
        let during: Vec<usize> = keys
            .iter()
            .map(|k| sel.pick(&view, Some(*k)).unwrap())
            .collect();
        for (b, d) in before.iter().zip(&during) {
            if *b != 3 {
                assert_eq!(b, d, "a key not on slot 3 moved");
            } else {
                assert_ne!(*d, 3);
            }
        }
        view.up.borrow_mut()[3] = true;
        let after: Vec<usize> = keys
            .iter()
            .map(|k| sel.pick(&view, Some(*k)).unwrap())
            .collect();
        assert_eq!(before, after, "keys return when the slot does");
        // No key: round robin.
        assert_eq!(counts(&sel, &view, 50, |_| None), [10; 5]);
    }

    #[test]
    fn weighted_hash_follows_weights() {
        let mut view = Fake::new(2);
        view.weights = vec![1, 3];
        let sel = Selector::new(
            &LbPolicy::Hash(crate::config::HashKey::ClientIp),
            &view.weights,
        );
        let c = counts(&sel, &view, 4000, |i| Some(mix(i as u64)));
        assert!((800..1200).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn large_pools_work_too() {
        let view = Fake::new(100);
        let sel = Selector::new(&LbPolicy::LeastRequests, &view.weights);
        let c = counts(&sel, &view, 1000, |_| None);
        assert!(c.iter().filter(|n| **n > 0).count() > 50);
    }
}
