//! The access log: one line per proxied request on stdout, in common log format or
//! JSON. Off by default (`log.access`).
//!
//! Lines are formatted on the proxy thread and handed to a dedicated writer thread
//! through a bounded channel, so a slow stdout never blocks a request; when the
//! channel is full the line is dropped and counted.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 8192;

pub(crate) struct AccessLog {
    tx: SyncSender<String>,
    json: bool,
    dropped: AtomicU64,
}

/// What one line says about a request.
pub(crate) struct Entry<'a> {
    pub client: Option<std::net::IpAddr>,
    pub method: &'a str,
    pub target: &'a str,
    pub version: http::Version,
    pub status: u16,
    pub bytes: usize,
    pub duration_us: u64,
    pub pool: &'a str,
    pub worker: Option<usize>,
    pub attempts: u32,
    pub request_id: &'a str,
}

impl AccessLog {
    /// Start the writer thread. `json` picks JSON lines over common log format.
    pub(crate) fn start(json: bool) -> std::io::Result<AccessLog> {
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("forkyard-access".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    while let Ok(line) = rx.try_recv() {
                        let _ = out.write_all(line.as_bytes());
                    }
                    let _ = out.flush();
                }
            })?;
        Ok(AccessLog {
            tx,
            json,
            dropped: AtomicU64::new(0),
        })
    }

    pub(crate) fn log(&self, e: &Entry<'_>) {
        let line = if self.json {
            json_line(e, now())
        } else {
            common_line(e, now())
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            if self.dropped.fetch_add(1, Relaxed) % 10_000 == 0 {
                tracing::warn!("access log cannot keep up; dropping lines");
            }
        }
    }
}

fn now() -> (u64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_millis())
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

/// `127.0.0.1 - - [10/Oct/2026:13:55:36 +0000] "GET / HTTP/1.1" 200 42 "-" 1.234ms pool=web worker=2 id=…`
pub(crate) fn common_line(e: &Entry<'_>, (secs, _): (u64, u32)) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut l = String::with_capacity(160);
    match e.client {
        Some(ip) => {
            let _ = write!(l, "{ip}");
        }
        None => l.push('-'),
    }
    let _ = write!(
        l,
        " - - [{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000] \"{} {} {}\" {} {} {}.{:03}ms pool={} worker=",
        MONTHS[(mo - 1) as usize],
        e.method,
        e.target.escape_debug(),
        version(e.version),
        e.status,
        e.bytes,
        e.duration_us / 1000,
        e.duration_us % 1000,
        e.pool,
    );
    match e.worker {
        Some(w) => {
            let _ = write!(l, "{w}");
        }
        None => l.push('-'),
    }
    let _ = writeln!(
        l,
        " attempts={} id={}",
        e.attempts,
        e.request_id.escape_debug()
    );
    l
}

pub(crate) fn json_line(e: &Entry<'_>, (secs, millis): (u64, u32)) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    let mut l = String::with_capacity(256);
    let _ = write!(
        l,
        r#"{{"time":"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z","type":"access","client":"#
    );
    match e.client {
        Some(ip) => {
            let _ = write!(l, "\"{ip}\"");
        }
        None => l.push_str("null"),
    }
    l.push_str(r#","method":"#);
    json_str(&mut l, e.method);
    l.push_str(r#","target":"#);
    json_str(&mut l, e.target);
    let _ = write!(
        l,
        r#","version":"{}","status":{},"bytes":{},"duration_ms":{}.{:03},"pool":"#,
        version(e.version),
        e.status,
        e.bytes,
        e.duration_us / 1000,
        e.duration_us % 1000
    );
    json_str(&mut l, e.pool);
    match e.worker {
        Some(w) => {
            let _ = write!(l, r#","worker":{w}"#);
        }
        None => l.push_str(r#","worker":null"#),
    }
    let _ = write!(l, r#","attempts":{},"request_id":"#, e.attempts);
    json_str(&mut l, e.request_id);
    l.push_str("}\n");
    l
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Seconds since the epoch → (year, month, day, hour, minute, second) in UTC
/// (Howard Hinnant's days-to-civil).
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            client: Some("127.0.0.1".parse().unwrap()),
            method: "GET",
            target: "/a?b=\"c\"",
            version: http::Version::HTTP_11,
            status: 200,
            bytes: 42,
            duration_us: 1234,
            pool: "web",
            worker: Some(2),
            attempts: 1,
            request_id: "abc",
        }
    }

    #[test]
    fn formats() {
        // 2026-11-27T09:24:05Z
        let t = (1_795_771_445, 7);
        assert_eq!(civil(t.0), (2026, 11, 27, 9, 24, 5));
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(
            common_line(&entry(), t),
            "127.0.0.1 - - [27/Nov/2026:09:24:05 +0000] \"GET /a?b=\\\"c\\\" HTTP/1.1\" 200 42 1.234ms pool=web worker=2 attempts=1 id=abc\n"
        );
        let j = json_line(&entry(), t);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["time"], "2026-11-27T09:24:05.007Z");
        assert_eq!(v["target"], "/a?b=\"c\"");
        assert_eq!(v["status"], 200);
        assert_eq!(v["worker"], 2);
        assert_eq!(v["request_id"], "abc");
    }
}
