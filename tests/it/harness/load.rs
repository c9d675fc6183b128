//! The load generator: client threads that send one kind of request until stopped,
//! and a report of every success and failure.
//!
//! ```ignore
//! let load = Load::to(fy.proxy).clients(4).keep_alive().start();
//! load.wait_for_more(&fy, 200); // flowing
//! // ... reload, kill, scale ...
//! load.finish().assert_no_failures();
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{http_request, wait_for_or_log, Conn, Forkyard, Response, BOOT};

/// What each client sends, and what the load keeps besides counts.
#[derive(Clone)]
#[must_use = "a load does nothing until `start`"]
pub struct LoadBuilder {
    addr: SocketAddr,
    clients: usize,
    keep_alive: bool,
    method: String,
    path: String,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    latencies: bool,
    answers: bool,
    every: Duration,
}

impl LoadBuilder {
    /// Client threads, each with one request in flight at a time. Default 1.
    pub fn clients(mut self, n: usize) -> LoadBuilder {
        self.clients = n;
        self
    }

    /// Each client keeps one connection open for its requests (and opens a new one
    /// only after an error or a `Connection: close`). Default: a new connection per
    /// request.
    pub fn keep_alive(mut self) -> LoadBuilder {
        self.keep_alive = true;
        self
    }

    /// GET `path`. The default is `GET /`.
    pub fn get(mut self, path: &str) -> LoadBuilder {
        self.method = "GET".into();
        self.path = path.into();
        self.body.clear();
        self
    }

    /// POST `body` to `path`.
    pub fn post(mut self, path: &str, body: &[u8]) -> LoadBuilder {
        self.method = "POST".into();
        self.path = path.into();
        self.body = body.to_vec();
        self
    }

    /// Each client sends at most one request per `interval` (default: back to back).
    pub fn every(mut self, interval: Duration) -> LoadBuilder {
        self.every = interval;
        self
    }

    /// One more request header.
    pub fn header(mut self, name: &str, value: &str) -> LoadBuilder {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Keep the latency of every successful request (`Report::latencies`).
    pub fn latencies(mut self) -> LoadBuilder {
        self.latencies = true;
        self
    }

    /// Keep every answer, with its body and when it was sent (`Report::answers`).
    pub fn answers(mut self) -> LoadBuilder {
        self.answers = true;
        self
    }

    pub fn start(self) -> Load {
        let spec = Arc::new(self);
        let shared = Arc::new(Shared::default());
        let started = Instant::now();
        let threads = (0..spec.clients)
            .map(|id| {
                let (spec, shared) = (spec.clone(), shared.clone());
                std::thread::spawn(move || client(id, &spec, &shared, started))
            })
            .collect();
        Load {
            spec,
            shared,
            threads,
            started,
        }
    }
}

/// A request that did not get a 2xx answer.
#[derive(Debug, Clone)]
pub struct Failure {
    /// When it was sent, from the start of the load.
    pub at: Duration,
    pub client: usize,
    /// `status 502: <body>`, or the I/O error.
    pub what: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "+{:.3}s client {}: {}",
            self.at.as_secs_f64(),
            self.client,
            self.what
        )
    }
}

/// One answer, kept with `LoadBuilder::answers`.
#[derive(Debug, Clone)]
pub struct Answer {
    pub sent: Instant,
    pub response: Response,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    ok: AtomicU64,
    failures: Mutex<Vec<Failure>>,
    latencies: Mutex<Vec<Duration>>,
    answers: Mutex<Vec<Answer>>,
}

/// A running load; stopped (without waiting for its clients) when dropped.
pub struct Load {
    spec: Arc<LoadBuilder>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Load {
    /// A load against `addr`: one client sending `GET /` on a new connection each
    /// time, until stopped.
    pub fn to(addr: SocketAddr) -> LoadBuilder {
        LoadBuilder {
            addr,
            clients: 1,
            keep_alive: false,
            method: "GET".into(),
            path: "/".into(),
            body: Vec::new(),
            headers: Vec::new(),
            latencies: false,
            answers: false,
            every: Duration::ZERO,
        }
    }

    /// Requests answered 2xx so far.
    pub fn ok(&self) -> u64 {
        self.shared.ok.load(Ordering::Relaxed)
    }

    /// Requests that failed so far.
    pub fn failed(&self) -> usize {
        self.shared.failures.lock().unwrap().len()
    }

    /// Wait until `n` more requests than now have succeeded (the load flows, or
    /// keeps flowing after something happened).
    pub fn wait_for_more(&self, fy: &Forkyard, n: u64) {
        let target = self.ok() + n;
        let what = format!(
            "{n} more successful {} {} (failed so far: {})",
            self.spec.method,
            self.spec.path,
            self.failed()
        );
        wait_for_or_log(fy, BOOT, &what, || (self.ok() >= target).then_some(()));
    }

    /// Stop: every client finishes the request it has in flight. Returns the report.
    pub fn finish(mut self) -> Report {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("a load client panicked");
        }
        Report {
            what: format!("{} {}", self.spec.method, self.spec.path),
            elapsed: self.started.elapsed(),
            ok: self.ok(),
            failures: take(&self.shared.failures),
            latencies: take(&self.shared.latencies),
            answers: take(&self.shared.answers),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// What a load did.
#[derive(Debug)]
pub struct Report {
    /// `METHOD path`.
    pub what: String,
    pub elapsed: Duration,
    /// Requests answered 2xx.
    pub ok: u64,
    pub failures: Vec<Failure>,
    /// Of the successful requests, with `LoadBuilder::latencies`.
    pub latencies: Vec<Duration>,
    /// Every answer, with `LoadBuilder::answers`.
    pub answers: Vec<Answer>,
}

impl Report {
    pub fn sent(&self) -> u64 {
        self.ok + self.failures.len() as u64
    }

    /// Panic, listing the first failures, unless every request succeeded; and
    /// unless at least one did (a load that never ran proves nothing).
    #[track_caller]
    pub fn assert_no_failures(&self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests ({}) failed; the first ones:\n  {}",
            self.failures.len(),
            self.sent(),
            self.what,
            self.failures
                .iter()
                .take(10)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  ")
        );
        assert!(self.ok > 0, "the load ({}) never got an answer", self.what);
    }
}

fn take<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *m.lock().unwrap())
}

/// One client: requests back to back until the load is stopped.
fn client(id: usize, spec: &LoadBuilder, shared: &Shared, started: Instant) {
    let headers: Vec<(&str, &str)> = spec
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut conn: Option<Conn> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let result = if spec.keep_alive {
            let open = match conn.take() {
                Some(c) => Ok(c),
                None => Conn::open(spec.addr),
            };
            open.and_then(|mut c| {
                let r = c.request(&spec.method, &spec.path, &headers, &spec.body)?;
                if r.keeps_alive() {
                    conn = Some(c);
                }
                Ok(r)
            })
        } else {
            http_request(spec.addr, &spec.method, &spec.path, &headers, &spec.body)
        };
        let latency = sent.elapsed();
        let failure = match &result {
            Ok(r) if (200..300).contains(&r.status) => None,
            Ok(r) => Some(format!(
                "status {}: {}",
                r.status,
                r.body.chars().take(120).collect::<String>()
            )),
            Err(e) => Some(format!("{:?}: {e}", e.kind())),
        };
        match failure {
            None => {
                shared.ok.fetch_add(1, Ordering::Relaxed);
                if spec.latencies {
                    shared.latencies.lock().unwrap().push(latency);
                }
            }
            Some(what) => shared.failures.lock().unwrap().push(Failure {
                at: sent - started,
                client: id,
                what,
            }),
        }
        let refused = result.is_err();
        if let (true, Ok(response)) = (spec.answers, result) {
            shared
                .answers
                .lock()
                .unwrap()
                .push(Answer { sent, response });
        }
        // Pacing, not a wait for anything; also for a client whose connects fail at once.
        let pause = if refused {
            spec.every.max(Duration::from_millis(10))
        } else {
            spec.every
        };
        if let Some(left) = pause.checked_sub(sent.elapsed()) {
            std::thread::sleep(left);
        }
    }
}
