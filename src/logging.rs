//! Log output: tracing-subscriber, as text or JSON lines on stderr. Pingora's own
//! `log` records are bridged into the same stream.
//!
//! Nothing that logs ever writes to stderr itself. Each formatted event goes through
//! tracing-appender's non-blocking writer: a queue of at most `QUEUE_LINES` events
//! that one writer thread drains into stderr. When the queue is full (stderr is a
//! pipe nobody reads) the event is dropped and counted in
//! `forkyard_log_dropped_total`, as is an event that could not be written (stderr
//! is a closed pipe). So a blocked or closed stderr costs log lines, never
//! supervision: the control runtime that restarts workers also logs their output,
//! and a blocking write there would stop it.
//!
//! The level is a reloadable filter: `set_level` changes it while forkyard runs,
//! unless `RUST_LOG` chose the filter at start. It filters the log only: the live
//! event feed (`events::capture`) is a second layer with its own filter.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus::IntCounter;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder};
use tracing_log::AsLog;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat, LogLevel};
use crate::events::capture::{Capture, Lifecycle};

/// Formatted events waiting for stderr before new ones are dropped. tracing-appender
/// bounds lines, not bytes: a typical event is about 220 bytes (so about 1 MiB in
/// all), and a worker line is cut at 16 KiB (`process::output::MAX_LINE`), so the
/// queue holds at most about 66 MiB (more only if JSON escaping inflates lines of
/// control characters).
const QUEUE_LINES: usize = 4096;

/// How long exit waits for queued lines to reach stderr.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// Lines lost on the way to stderr.
static DROPS: Drops = Drops::new();
/// For [`flush`].
static FLUSHER: OnceLock<Flusher> = OnceLock::new();
/// The installed filter, for [`set_level`].
static FILTER: OnceLock<Filter> = OnceLock::new();

/// Dropped lines, counted exactly once each, whether they were dropped by the queue
/// (tracing-appender's `ErrorCounter`) or failed to be written.
struct Drops {
    /// Counted before the metric existed.
    early: AtomicU64,
    metric: OnceLock<IntCounter>,
    /// How much of the queue's own drop count has been added here.
    queue_seen: AtomicU64,
}

impl Drops {
    const fn new() -> Drops {
        Drops {
            early: AtomicU64::new(0),
            metric: OnceLock::new(),
            queue_seen: AtomicU64::new(0),
        }
    }

    fn add(&self, n: u64) {
        if let Some(metric) = self.metric.get() {
            return metric.inc_by(n);
        }
        self.early.fetch_add(n, Ordering::SeqCst);
        // The metric may have been set since: move what is early into it.
        if let Some(metric) = self.metric.get() {
            metric.inc_by(self.early.swap(0, Ordering::SeqCst));
        }
    }

    /// Add the drops the queue has counted since the last call. The queue's count
    /// only grows, and whoever moves `queue_seen` forward adds the difference, so
    /// every drop is added once however many threads log at the same time.
    fn catch_up(&self, queue: &ErrorCounter) {
        let total = queue.dropped_lines() as u64;
        if total > self.queue_seen.load(Ordering::Relaxed) {
            let before = self.queue_seen.fetch_max(total, Ordering::Relaxed);
            if total > before {
                self.add(total - before);
            }
        }
    }

    fn count_in(&self, metric: IntCounter) {
        let metric = self.metric.get_or_init(|| metric);
        metric.inc_by(self.early.swap(0, Ordering::SeqCst));
    }

    #[cfg(test)]
    fn total(&self) -> u64 {
        self.early.load(Ordering::SeqCst) + self.metric.get().map_or(0, |m| m.get())
    }
}

/// The writer thread's end: a line that cannot be written (a closed pipe) is counted
/// and lost, and nothing else happens. An empty line is [`Flusher`]'s marker.
struct CountFailures<W> {
    out: W,
    drops: &'static Drops,
    flushed: Sender<()>,
}

impl<W: Write> Write for CountFailures<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    /// The writer thread hands over one event per call.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            let _ = self.out.flush();
            let _ = self.flushed.send(());
        } else if self.out.write_all(buf).is_err() {
            self.drops.add(1);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.out.flush();
        Ok(())
    }
}

/// The logging end: the non-blocking writer, counting the queue's drops as they
/// happen.
struct Queue {
    writer: NonBlocking,
    dropped: ErrorCounter,
    drops: &'static Drops,
}

/// Waits for the lines queued so far to be written, by queueing an empty line
/// behind them and waiting for the writer thread to reach it.
///
/// Not tracing-appender's `WorkerGuard`, whose drop does this too: with the queue
/// full (stderr blocked) it prints a complaint on stdout, which is the access log's
/// stream and may block as well, and it waits a fixed second.
struct Flusher {
    writer: NonBlocking,
    dropped: ErrorCounter,
    flushed: Mutex<Receiver<()>>,
}

impl Flusher {
    /// Whether everything queued before the call reached the writer within `limit`.
    /// Returns at once when the queue is full.
    fn flush(&self, limit: Duration) -> bool {
        let flushed = self.flushed.lock().unwrap_or_else(|e| e.into_inner());
        while flushed.try_recv().is_ok() {}
        let before = self.dropped.dropped_lines();
        let _ = self.writer.clone().write(&[]);
        // The marker itself was dropped (and counted, which only matters at exit,
        // where this is used): stderr is not keeping up, and waiting would not help.
        if self.dropped.dropped_lines() != before {
            return false;
        }
        flushed.recv_timeout(limit).is_ok()
    }
}

impl Queue {
    /// The queue to `out` of at most `lines` lines, and its flusher.
    fn new<W: Write + Send + 'static>(
        out: W,
        lines: usize,
        drops: &'static Drops,
    ) -> (Queue, Flusher) {
        let (flushed_tx, flushed_rx) = channel();
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(lines)
            .thread_name("forkyard-log")
            .finish(CountFailures {
                out,
                drops,
                flushed: flushed_tx,
            });
        // Dropping the guard would stop the writer thread; it runs until exit.
        std::mem::forget(guard);
        let dropped = writer.error_counter();
        let flusher = Flusher {
            writer: writer.clone(),
            dropped: dropped.clone(),
            flushed: Mutex::new(flushed_rx),
        };
        let queue = Queue {
            writer,
            dropped,
            drops,
        };
        (queue, flusher)
    }
}

struct QueueWriter<'a> {
    writer: NonBlocking,
    queue: &'a Queue,
}

impl Write for QueueWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            // An empty line is the flush marker; the fmt layer never writes one.
            return Ok(0);
        }
        let n = self.writer.write(buf)?;
        self.queue.drops.catch_up(&self.queue.dropped);
        Ok(n)
    }

    /// The fmt layer writes each event with one `write_all`: one queued line.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.write(buf).map(drop)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Queue {
    type Writer = QueueWriter<'a>;
    fn make_writer(&'a self) -> QueueWriter<'a> {
        QueueWriter {
            writer: self.writer.clone(),
            queue: self,
        }
    }
}

/// Count dropped log events in `counter` (`forkyard_log_dropped_total`), including
/// the ones dropped before it existed.
pub fn count_dropped_in(counter: IntCounter) {
    DROPS.count_in(counter);
}

/// Wait (at most a moment) until the queued log lines reached stderr; for exit,
/// so the last lines are not lost. A stderr that blocks does not block exit.
pub fn flush() {
    if let Some(flusher) = FLUSHER.get() {
        flusher.flush(FLUSH_AT_EXIT);
    }
}

/// What [`set_level`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LevelChange {
    /// The new level is in force.
    Applied,
    /// `RUST_LOG` chose the filter at start, and it stays in force.
    KeptRustLog,
    /// No logger is installed ([`init`] was not called, or failed).
    NotInstalled,
}

/// Change the log level while forkyard runs (a reload that changes `log.level`).
/// `RUST_LOG`, when it was set at start, keeps precedence.
pub(crate) fn set_level(level: LogLevel) -> LevelChange {
    match FILTER.get() {
        Some(filter) => filter.set(level),
        None => LevelChange::NotInstalled,
    }
}

/// The installed filter, behind a reload layer.
struct Filter {
    handle: reload::Handle<EnvFilter, Registry>,
    from_rust_log: bool,
}

impl Filter {
    fn set(&self, level: LogLevel) -> LevelChange {
        if self.from_rust_log {
            return LevelChange::KeptRustLog;
        }
        match self.handle.reload(EnvFilter::new(level.as_str())) {
            Ok(()) => {
                // The `log` bridge skips records above the level it was given.
                tracing_log::log::set_max_level(LevelFilter::current().as_log());
                LevelChange::Applied
            }
            Err(_) => LevelChange::NotInstalled,
        }
    }
}

/// The subscriber that writes to `writer`: `rust_log` (the value of `RUST_LOG`), when
/// it parses, overrides `config.level`.
fn subscriber<W>(
    config: &LogConfig,
    rust_log: Option<&str>,
    writer: W,
    ansi: bool,
) -> (impl tracing::Subscriber + Send + Sync, Filter)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let from_env = rust_log.and_then(|s| EnvFilter::try_new(s).ok());
    let from_rust_log = from_env.is_some();
    let env_filter = from_env.unwrap_or_else(|| EnvFilter::new(config.level.as_str()));
    let (filter, handle) = reload::Layer::new(env_filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(true);
    let fmt = match config.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    };
    // The level filters the log alone (a per-layer filter): the event feed has its
    // own, and carries every lifecycle event whatever the log shows.
    let capture = Capture::new(crate::events::hub::global()).with_filter(Lifecycle);
    let subscriber = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(capture);
    (
        subscriber,
        Filter {
            handle,
            from_rust_log,
        },
    )
}

/// Install the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(config: &LogConfig) {
    let (queue, flusher) = Queue::new(std::io::stderr(), QUEUE_LINES, &DROPS);
    let _ = FLUSHER.set(flusher);
    let rust_log = std::env::var("RUST_LOG").ok();
    // Colours only for a person at a terminal, never in files or pipelines.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (sub, filter) = subscriber(config, rust_log.as_deref(), queue, ansi);
    // `try_init` also installs the `log` → tracing bridge for Pingora's records.
    match sub.try_init() {
        Ok(()) => {
            let _ = FILTER.set(filter);
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "forkyard: could not install the logger: {e}"
            );
        }
    }
    log_panics();
}

/// Report panics as one `panic` log event (in the configured format) instead of
/// std's plain text on stderr. Unwinding is unchanged: a panic in a proxy request
/// task still ends only that task (see docs/reliability.md).
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            event = crate::events::PANIC,
            thread = thread.name().unwrap_or("unnamed"),
            location,
            "panic: {message}"
        );
    }));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    fn leaked_drops() -> &'static Drops {
        Box::leak(Box::new(Drops::new()))
    }

    /// A stderr that takes one line, says so, and then blocks until released.
    struct Blocked {
        took_one: Sender<()>,
        release: Receiver<()>,
    }

    impl Write for Blocked {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.took_one.send(());
            let _ = self.release.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let drops = leaked_drops();
        let (took_tx, took_rx) = channel();
        let (release_tx, release_rx) = channel();
        let stderr = Blocked {
            took_one: took_tx,
            release: release_rx,
        };
        let (queue, _flusher) = Queue::new(stderr, 8, drops);
        let mut writer = queue.make_writer();
        writer.write_all(b"first\n").unwrap();
        // The writer thread holds the first line and is stuck writing it.
        took_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // 8 lines fill the queue; the next 5 would block a blocking writer.
        let (done_tx, done_rx) = channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut writer = queue.make_writer();
                for _ in 0..13 {
                    writer.write_all(b"line\n").unwrap();
                }
                done_tx.send(()).unwrap();
            });
            let finished = done_rx.recv_timeout(Duration::from_secs(10));
            // Unblock the writer thread either way, so the scope can end.
            for _ in 0..20 {
                let _ = release_tx.send(());
            }
            finished.expect("writing to a full queue blocked");
        });
        assert_eq!(drops.total(), 5);
        let counter = IntCounter::new("t", "t").unwrap();
        drops.count_in(counter.clone());
        assert_eq!(counter.get(), 5, "drops before the metric existed count");
    }

    #[test]
    fn flush_waits_until_the_queued_lines_are_written() {
        let (release_tx, release_rx) = channel();
        let (took_tx, took_rx) = channel();
        let out = Captured::default();
        let stderr = Gated {
            out: out.clone(),
            took_one: took_tx,
            release: release_rx,
        };
        let (queue, flusher) = Queue::new(stderr, 64, leaked_drops());
        let mut writer = queue.make_writer();
        for i in 0..20 {
            writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        took_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let (done_tx, done_rx) = channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                done_tx
                    .send(flusher.flush(Duration::from_secs(20)))
                    .unwrap()
            });
            // stderr still holds the first line: flush must not have returned.
            assert!(done_rx.recv_timeout(Duration::from_millis(200)).is_err());
            drop(release_tx);
            assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        });
        assert_eq!(out.text().lines().count(), 20, "{}", out.text());
    }

    #[test]
    fn flush_does_not_wait_for_a_blocked_stderr_with_a_full_queue() {
        let (_release_tx, release_rx) = channel::<()>();
        let (took_tx, took_rx) = channel();
        let stderr = Blocked {
            took_one: took_tx,
            release: release_rx,
        };
        let (queue, flusher) = Queue::new(stderr, 4, leaked_drops());
        let mut writer = queue.make_writer();
        writer.write_all(b"first\n").unwrap();
        took_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        for _ in 0..4 {
            writer.write_all(b"line\n").unwrap();
        }
        let started = Instant::now();
        assert!(!flusher.flush(Duration::from_secs(30)));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    /// A stderr that holds its first line until released, then writes into `out`.
    struct Gated {
        out: Captured,
        took_one: Sender<()>,
        release: Receiver<()>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.took_one.send(());
            let _ = self.release.recv();
            self.out.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A stderr whose reader is gone.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_line_that_cannot_be_written_is_counted_and_lost_quietly() {
        let drops = leaked_drops();
        let counter = IntCounter::new("t", "t").unwrap();
        drops.count_in(counter.clone());
        let mut out = CountFailures {
            out: Closed,
            drops,
            flushed: channel().0,
        };
        out.write_all(b"a\n").unwrap();
        out.write_all(b"b\n").unwrap();
        out.flush().unwrap();
        assert_eq!(counter.get(), 2);
    }

    #[test]
    fn queue_drops_are_counted_once_across_threads() {
        let drops = leaked_drops();
        let counter = IntCounter::new("t", "t").unwrap();
        drops.count_in(counter.clone());
        let (tx, rx) = channel::<()>();
        let stderr = Blocked {
            took_one: channel().0,
            release: rx,
        };
        let (queue, _flusher) = Queue::new(stderr, 1, drops);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut writer = queue.make_writer();
                    for _ in 0..500 {
                        writer.write_all(b"x\n").unwrap();
                    }
                });
            }
        });
        // 2000 lines: at most one written (held by the stuck writer thread) and one
        // queued; every other one is dropped and counted once.
        let counted = counter.get();
        assert_eq!(counted, queue.dropped.dropped_lines() as u64);
        assert!((1998..=2000).contains(&counted), "{counted}");
        drop(tx);
    }

    /// Everything the subscriber writes, as text.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn config(level: LogLevel) -> LogConfig {
        LogConfig {
            level,
            format: LogFormat::Text,
            access: false,
        }
    }

    #[test]
    fn set_level_changes_what_is_logged_while_running() {
        let out = Captured::default();
        let (sub, filter) = subscriber(&config(LogLevel::Info), None, out.clone(), false);
        tracing::subscriber::with_default(sub, || {
            tracing::debug!("debug before");
            tracing::info!("info before");
            assert_eq!(filter.set(LogLevel::Debug), LevelChange::Applied);
            tracing::debug!("debug after");
            assert_eq!(filter.set(LogLevel::Warn), LevelChange::Applied);
            tracing::info!("info after warn");
            tracing::warn!("warn after warn");
        });
        let text = out.text();
        assert!(!text.contains("debug before"), "{text}");
        assert!(text.contains("info before"), "{text}");
        assert!(text.contains("debug after"), "{text}");
        assert!(!text.contains("info after warn"), "{text}");
        assert!(text.contains("warn after warn"), "{text}");
    }

    #[test]
    fn rust_log_overrides_the_level_and_keeps_it_on_set_level() {
        let out = Captured::default();
        let (sub, filter) = subscriber(
            &config(LogLevel::Info),
            Some("warn,forkyard::logging=debug"),
            out.clone(),
            false,
        );
        tracing::subscriber::with_default(sub, || {
            tracing::debug!("debug shown by RUST_LOG");
            tracing::debug!(target: "elsewhere", "debug elsewhere");
            tracing::info!(target: "elsewhere", "info elsewhere");
            assert_eq!(filter.set(LogLevel::Trace), LevelChange::KeptRustLog);
            tracing::info!(target: "elsewhere", "info elsewhere after set_level");
        });
        let text = out.text();
        assert!(text.contains("debug shown by RUST_LOG"), "{text}");
        assert!(!text.contains("elsewhere"), "{text}");

        // An unparsable RUST_LOG is ignored, as before: log.level applies and can change.
        let (sub, filter) = subscriber(&config(LogLevel::Info), Some("forkyard=loud"), out, false);
        assert_eq!(filter.set(LogLevel::Debug), LevelChange::Applied);
        // Once the subscriber is gone there is nothing to change.
        drop(sub);
        assert_eq!(filter.set(LogLevel::Info), LevelChange::NotInstalled);
    }
}
