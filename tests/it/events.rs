//! `GET /events`, the live stream of lifecycle events (Server-Sent Events), read by a
//! raw client: what a restart sends and with which fields, replay, a subscriber
//! that stops reading (cut off and counted while supervision goes on), and
//! `forkyard events`, which follows it and exits 0 when forkyard stops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::*;

/// One SSE message as read off the wire.
#[derive(Debug, Clone)]
struct Message {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// A raw SSE client on one connection.
struct Sse {
    reader: BufReader<TcpStream>,
    head: String,
}

impl Sse {
    /// `GET path` on `stream`; reads the answer's head.
    fn on(mut stream: TcpStream, addr: SocketAddr, path: &str, headers: &str) -> Sse {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("the answer's head");
            if line.trim().is_empty() {
                break;
            }
            head.push_str(&line);
        }
        Sse { reader, head }
    }

    fn open(addr: SocketAddr, path: &str) -> Sse {
        Sse::on(TcpStream::connect(addr).unwrap(), addr, path, "")
    }

    /// The next message (comments skipped); `None` at the end of the stream. Fails
    /// after `BOOT` (heartbeats alone do not count).
    fn next(&mut self) -> Option<Message> {
        let deadline = Instant::now() + BOOT;
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        loop {
            assert!(Instant::now() < deadline, "no message within {BOOT:?}");
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => panic!("reading the stream: {e}"),
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if event.is_empty() && data.is_empty() {
                    continue;
                }
                return Some(Message {
                    id,
                    event,
                    data: serde_json::from_str(&data)
                        .unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}")),
                });
            }
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().expect("a numeric id"));
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    }

    /// Messages until `until` says stop (or the deadline passes: a failure).
    fn until(&mut self, what: &str, mut until: impl FnMut(&[Message]) -> bool) -> Vec<Message> {
        let deadline = Instant::now() + BOOT;
        let mut seen = Vec::new();
        while !until(&seen) {
            assert!(
                Instant::now() < deadline,
                "no {what} within {BOOT:?}; got {seen:#?}"
            );
            match self.next() {
                Some(m) => seen.push(m),
                None => panic!("the stream ended before {what}; got {seen:#?}"),
            }
        }
        seen
    }
}

fn web(workers: u16) -> String {
    config_with(&[fixture_pool("web", workers, "")], "")
}

#[test]
fn a_restart_streams_spawn_and_ready_with_the_log_field_names() {
    let fy = Forkyard::start(&web(2));
    fy.wait_workers_ready("web", 2);
    let mut sse = Sse::open(fy.admin, "/events");
    assert!(sse.head.starts_with("HTTP/1.1 200"), "{}", sse.head);
    assert!(
        sse.head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        sse.head
    );
    let old: Vec<i64> = fy.status()["pools"][0]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["pid"].as_i64())
        .collect();
    let r = http_post(fy.admin, "/pools/web/restart").unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    let new_ready =
        |m: &&Message| m.event == "ready" && !old.contains(&m.data["pid"].as_i64().unwrap_or(0));
    let seen = sse.until("two new ready workers and two exits", |seen| {
        seen.iter().filter(new_ready).count() == 2
            && seen.iter().filter(|m| m.event == "exit").count() == 2
    });
    let spawns: Vec<&Message> = seen.iter().filter(|m| m.event == "spawn").collect();
    assert_eq!(spawns.len(), 2, "{seen:#?}");
    for m in seen.iter() {
        // The SSE event is the record's `event` field; the fields are the log's.
        assert_eq!(m.data["event"], m.event.as_str(), "{m:?}");
        for key in ["timestamp", "level", "message", "target"] {
            assert!(m.data.get(key).is_some(), "no {key} in {m:?}");
        }
    }
    for m in &spawns {
        assert_eq!(m.data["pool"], "web");
        assert_eq!(m.data["level"], "INFO");
        assert!(m.data["worker"].is_u64() && m.data["pid"].is_i64(), "{m:?}");
        assert!(
            m.data["endpoint"].is_string() && m.data["port"].is_u64(),
            "{m:?}"
        );
    }
    for m in seen.iter().filter(new_ready) {
        assert!(
            m.data["boot_ms"].is_u64() && m.data["worker"].is_u64(),
            "{m:?}"
        );
    }
    // The old workers' exits are there too, and ids count up.
    for m in seen.iter().filter(|m| m.event == "exit") {
        assert!(old.contains(&m.data["pid"].as_i64().unwrap()), "{m:?}");
        assert!(
            m.data["reason"].is_string() && m.data["uptime_ms"].is_u64(),
            "{m:?}"
        );
    }
    let ids: Vec<u64> = seen.iter().map(|m| m.id.expect("an id")).collect();
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "{ids:?}");

    // A late subscriber asks for what it missed: the start of this run, in order.
    let mut late = Sse::open(fy.admin, "/events?replay=1024");
    let replayed = late.until("the replayed start", |seen| {
        seen.iter().any(|m| m.event == "pools_ready")
    });
    assert_eq!(replayed[0].event, "start", "{replayed:#?}");
    // EventSource reconnecting: only what came after its last id.
    let last = *ids.last().unwrap();
    let mut again = Sse::on(
        TcpStream::connect(fy.admin).unwrap(),
        fy.admin,
        "/events",
        &format!("Last-Event-ID: {}\r\n", last - 1),
    );
    assert_eq!(again.next().unwrap().id, Some(last));

    let bad = http_get(fy.admin, "/events?replay=lots", &[]).unwrap();
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body.contains("replay"), "{bad:?}");
}

/// A TCP connection to `addr` with a receive buffer as small as the kernel allows,
/// so that a client that never reads fills it quickly.
fn tiny_window(addr: SocketAddr) -> TcpStream {
    use nix::sys::socket::{
        connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &1024).unwrap();
    let SocketAddr::V4(v4) = addr else {
        panic!("{addr}")
    };
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4)).unwrap();
    TcpStream::from(fd)
}

#[test]
fn a_subscriber_that_stops_reading_is_cut_off_and_counted_while_supervision_goes_on() {
    let fy = Forkyard::start(&web(6));
    fy.wait_workers_ready("web", 6);
    let dropped = |reason: &str| {
        fy.metric(&format!(
            r#"forkyard_events_subscribers_dropped_total{{reason="{reason}"}}"#
        ))
    };
    assert_eq!(dropped("stalled"), Some(0.0));
    // A subscriber that never reads after the head, and one that reads everything.
    let stuck = Sse::on(tiny_window(fy.admin), fy.admin, "/events", "");
    assert!(stuck.head.starts_with("HTTP/1.1 200"), "{}", stuck.head);
    let reader = Sse::open(fy.admin, "/events");
    let seen = Arc::new(Mutex::new(0usize));
    let reading = {
        let seen = seen.clone();
        let mut reader = reader;
        std::thread::spawn(move || {
            while reader.next().is_some() {
                *seen.lock().unwrap() += 1;
            }
        })
    };
    wait_for_or_log(&fy, SHORT, "two subscribers", || {
        (fy.metric("forkyard_events_subscribers") == Some(2.0)).then_some(())
    });

    // Events, many: scale up and down until the stuck one's buffers are full and
    // its write has waited out the deadline. Meanwhile every scale is answered as
    // quickly as ever: nothing waits for the stuck subscriber.
    let started = Instant::now();
    let mut rounds = 0;
    let mut slowest = Duration::ZERO;
    while dropped("stalled") != Some(1.0) {
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "the stuck subscriber was not cut off after {rounds} rounds of scaling"
        );
        for n in [1, 6] {
            let asked = Instant::now();
            let r = http_post(fy.admin, &format!("/pools/web/scale?workers={n}")).unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            slowest = slowest.max(asked.elapsed());
            // Every slot settled (scaled-down workers gone, new ones ready).
            wait_for_or_log(&fy, BOOT, &format!("{n} workers, all ready"), || {
                let pool = &fy.status()["pools"][0];
                (pool["workers_total"] == n && pool["workers_ready"] == n).then_some(())
            });
        }
        rounds += 1;
    }
    announce(&format!(
        "events: the stuck subscriber was cut off after {rounds} rounds of scaling ({:.1}s); the slowest scale took {slowest:?}",
        started.elapsed().as_secs_f64()
    ));
    assert_eq!(dropped("lagged"), Some(0.0));
    wait_for_or_log(&fy, SHORT, "one subscriber left", || {
        (fy.metric("forkyard_events_subscribers") == Some(1.0)).then_some(())
    });
    // The reading subscriber stays and got the events of every round.
    let r = http_post(fy.admin, "/pools/web/restart").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    wait_for_or_log(&fy, SHORT, "the reader to keep up", || {
        (*seen.lock().unwrap() >= rounds * 10).then_some(())
    });
    // The stuck one's connection was closed: what it has buffered ends with EOF.
    let mut stuck = stuck.reader.into_inner();
    stuck
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    stuck.read_to_end(&mut rest).expect("the stream ends");
    drop(fy);
    reading.join().unwrap();
}

/// `forkyard events` with `args`, its stdout collected line by line.
struct Follower {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(args: &[&str]) -> Follower {
        let mut child = Command::new(forkyard_bin())
            .arg("events")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        Follower { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Its exit status and stderr, waiting at most `within`.
    fn wait(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
                return (status, err);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("forkyard events did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn forkyard_events_prints_events_and_exits_0_when_forkyard_stops() {
    let mut fy = Forkyard::start(&web(1));
    fy.wait_workers_ready("web", 1);
    let admin = fy.admin.to_string();
    let json = Follower::start(&["--json", "--admin", &admin]);
    // Over the control socket (named, so there is no fallback to TCP).
    let socket = wait_for_or_log(&fy, SHORT, "the control socket's log line", || {
        fy.log().lines().find_map(|l| {
            l.contains("control socket ready")
                .then(|| l.split("path=").nth(1)?.split_whitespace().next())
                .flatten()
                .map(str::to_owned)
        })
    });
    let human = Follower::start(&["--socket", &socket]);
    wait_for_or_log(&fy, SHORT, "two subscribers", || {
        (fy.metric("forkyard_events_subscribers") == Some(2.0)).then_some(())
    });
    let r = http_post(fy.admin, "/pools/web/restart").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    wait_for_or_log(&fy, SHORT, "both to print the new worker's ready", || {
        let ready_json = json.lines().iter().any(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["event"] == "ready" && v["pool"] == "web")
        });
        let ready_text = human
            .lines()
            .iter()
            .any(|l| l.contains(" ready ") && l.contains("pool=web") && l.contains("boot_ms="));
        (ready_json && ready_text).then_some(())
    });

    let status = fy.signal_and_wait(Signal::SIGTERM, BOOT);
    assert!(status.success(), "{status:?}");
    for (name, follower) in [("--json", json), ("text", human)] {
        let lines = follower.lines.clone();
        let (status, stderr) = follower.wait(SHORT);
        assert_eq!(status.code(), Some(0), "{name}: {stderr}");
        let lines = lines.lock().unwrap();
        let last = lines.last().cloned().unwrap_or_default();
        assert!(last.contains("shutdown_complete"), "{name}: {lines:#?}");
    }

    // Nothing to follow: a clear error and exit 1.
    let gone = forkyard_cli(&["events", "--admin", &admin]);
    assert_eq!(gone.code, Some(1), "{gone:?}");
    assert!(
        gone.stderr.contains("cannot reach") && gone.stderr.contains("--admin"),
        "{gone:?}"
    );
}
