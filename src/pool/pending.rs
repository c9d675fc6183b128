//! The requests in flight on one worker process, as a pool with `hang:` sees them:
//! what each is (method, path, request id), since when it waits for its response
//! head, and whether that head has come. The proxy adds a request when it sends it
//! to the worker and removes it when the request ends; the worker's supervisor
//! checks the waits (`check`) every fraction of `hang.after`.
//!
//! A pool without `hang:` never touches this (the proxy checks the setting first),
//! so the lean path pays nothing for it. With it, a request takes this worker's
//! lock three times (sent, head arrived, ended): one worker's requests only, never
//! a pool-wide or global lock.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Longest path kept (the rest is cut at a character boundary).
const MAX_PATH: usize = 512;
/// Longest method and request id kept.
const MAX_SHORT: usize = 128;

#[derive(Debug)]
struct Request {
    method: Box<str>,
    path: Box<str>,
    request_id: Box<str>,
    started: Instant,
    /// When it last made progress towards the worker: sent, or a piece of its body
    /// passed on. It waits for its head from here.
    since: Instant,
    /// The response head arrived (or the connection was upgraded): never a hang.
    answered: bool,
    /// Counted as hung: it is answered 504 and never retried if its attempt fails.
    hung: bool,
}

/// One request as the `hang` event and `/status` show it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shown {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) request_id: String,
    /// For the hung request: how long it has waited for its head. For the others:
    /// how long they have been in flight.
    pub(crate) age: Duration,
}

/// A hang found by [`Pending::check`]: the request that waited longest, and every
/// other request in flight on the same worker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hang {
    pub(crate) request: Shown,
    pub(crate) others: Vec<Shown>,
}

/// The registry of one worker process (one [`crate::pool::Member`]).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    inner: Mutex<Slab>,
}

#[derive(Debug, Default)]
struct Slab {
    entries: Vec<Option<Request>>,
    free: Vec<usize>,
}

fn cut(s: &str, max: usize) -> Box<str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

impl Pending {
    /// A request was sent to the worker; the key is for the calls below.
    pub(crate) fn begin(&self, method: &str, path: &str, request_id: &str) -> usize {
        let now = Instant::now();
        let request = Request {
            method: cut(method, MAX_SHORT),
            path: cut(path, MAX_PATH),
            request_id: cut(request_id, MAX_SHORT),
            started: now,
            since: now,
            answered: false,
            hung: false,
        };
        let mut slab = self.inner.lock();
        match slab.free.pop() {
            Some(key) => {
                slab.entries[key] = Some(request);
                key
            }
            None => {
                slab.entries.push(Some(request));
                slab.entries.len() - 1
            }
        }
    }

    fn with(&self, key: usize, f: impl FnOnce(&mut Request)) {
        if let Some(Some(r)) = self.inner.lock().entries.get_mut(key) {
            f(r);
        }
    }

    /// A piece of the request's body went on to the worker: it is not stuck yet.
    pub(crate) fn progress(&self, key: usize) {
        self.with(key, |r| r.since = Instant::now());
    }

    /// The response head arrived, or the connection was upgraded.
    pub(crate) fn answered(&self, key: usize) {
        self.with(key, |r| r.answered = true);
    }

    /// Whether the request was counted as hung.
    pub(crate) fn is_hung(&self, key: usize) -> bool {
        let slab = self.inner.lock();
        matches!(slab.entries.get(key), Some(Some(r)) if r.hung)
    }

    /// The request ended (answered or not).
    pub(crate) fn end(&self, key: usize) {
        let mut slab = self.inner.lock();
        let taken = slab.entries.get_mut(key).and_then(Option::take).is_some();
        if taken {
            slab.free.push(key);
        }
    }

    /// Requests in flight now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().entries.iter().flatten().count()
    }

    /// Mark every request that has waited `after` (or longer) for its head as hung.
    /// Returns a new hang: the longest-waiting of them and every other request on
    /// the worker; `None` when none waited that long, or when requests counted as
    /// hung earlier are still in flight (the same hang goes on: one event for it).
    pub(crate) fn check(&self, after: Duration, now: Instant) -> Option<Hang> {
        let mut slab = self.inner.lock();
        let ongoing = slab.entries.iter().flatten().any(|r| r.hung);
        let mut oldest: Option<(usize, Duration)> = None;
        for (i, r) in slab.entries.iter_mut().enumerate() {
            let Some(r) = r else { continue };
            let waited = now.saturating_duration_since(r.since);
            if r.answered || waited < after {
                continue;
            }
            r.hung = true;
            if oldest.is_none_or(|(_, w)| waited > w) {
                oldest = Some((i, waited));
            }
        }
        if ongoing {
            return None;
        }
        let (hung, waited) = oldest?;
        let shown = |r: &Request, age| Shown {
            method: r.method.to_string(),
            path: r.path.to_string(),
            request_id: r.request_id.to_string(),
            age,
        };
        let mut request = None;
        let mut others = Vec::new();
        for (i, r) in slab.entries.iter().enumerate() {
            let Some(r) = r else { continue };
            if i == hung {
                request = Some(shown(r, waited));
            } else {
                others.push(shown(r, now.saturating_duration_since(r.started)));
            }
        }
        others.sort_by_key(|r| std::cmp::Reverse(r.age));
        Some(Hang {
            request: request?,
            others,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(30);

    #[test]
    fn only_a_request_waiting_for_its_head_past_after_is_a_hang() {
        let p = Pending::default();
        let t0 = Instant::now();
        let slow = p.begin("GET", "/slow", "id-1");
        let streaming = p.begin("GET", "/stream", "id-2");
        p.answered(streaming);
        assert_eq!(p.check(AFTER, t0 + Duration::from_secs(29)), None);
        let hang = p
            .check(AFTER, t0 + Duration::from_secs(31))
            .expect("a hang");
        assert_eq!(hang.request.path, "/slow");
        assert_eq!(hang.request.request_id, "id-1");
        assert!(hang.request.age >= Duration::from_secs(30));
        assert_eq!(hang.others.len(), 1);
        assert_eq!(hang.others[0].path, "/stream");
        assert!(p.is_hung(slow));
        assert!(
            !p.is_hung(streaming),
            "a response already flowing never hangs"
        );
    }

    #[test]
    fn one_hang_is_reported_once_while_its_requests_are_in_flight() {
        let p = Pending::default();
        let t0 = Instant::now();
        let a = p.begin("GET", "/a", "a");
        let later = t0 + Duration::from_secs(31);
        assert!(p.check(AFTER, later).is_some());
        let b = p.begin("POST", "/b", "b");
        assert_eq!(p.check(AFTER, later + AFTER * 2), None, "the same hang");
        assert!(p.is_hung(b), "joined the hang silently");
        p.end(a);
        p.end(b);
        assert_eq!(p.len(), 0);
        let c = p.begin("GET", "/c", "c");
        assert!(
            p.check(AFTER, Instant::now() + AFTER).is_some(),
            "a new hang"
        );
        p.end(c);
    }

    #[test]
    fn body_progress_restarts_the_wait_and_keys_are_reused() {
        let p = Pending::default();
        let t0 = Instant::now();
        let up = p.begin("PUT", "/upload", "u");
        std::thread::sleep(Duration::from_millis(5));
        p.progress(up);
        assert_eq!(
            p.check(Duration::from_millis(5), t0 + Duration::from_millis(6)),
            None
        );
        p.end(up);
        p.end(up);
        let again = p.begin("GET", "/", "x");
        assert_eq!(again, up, "the freed key is reused");
        assert!(!p.is_hung(again));
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        let p = Pending::default();
        let path = format!("/{}", "é".repeat(600));
        let k = p.begin("GET", &path, "id");
        let hang = p.check(Duration::ZERO, Instant::now()).unwrap();
        assert!(hang.request.path.len() <= MAX_PATH);
        assert!(path.starts_with(&hang.request.path));
        p.end(k);
    }
}
