//! Log output: tracing-subscriber, as text or JSON lines on stderr. Pingora's own
//! `log` records are bridged into the same stream.
//!
//! Nothing that logs ever writes to stderr itself. Each formatted event is queued
//! for one writer thread, and the queue holds at most [`QUEUE_BYTES`]; when it is
//! full (stderr is a pipe nobody reads) the event is dropped and counted in
//! `forkyard_log_dropped_total`, as is an event that could not be written (stderr
//! is a closed pipe). So a blocked or closed stderr costs log lines,
//! never supervision: the control runtime that restarts workers also logs their
//! output, and a blocking write there would stop it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::IntCounter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Bytes of formatted log events waiting for stderr before new ones are dropped.
pub const QUEUE_BYTES: usize = 4 << 20;

/// How long exit waits for queued lines to reach stderr.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

enum Msg {
    Line(Vec<u8>),
    Flush(Sender<()>),
}

struct Queue {
    tx: Sender<Msg>,
    queued: AtomicUsize,
    /// Dropped before the metric exists.
    dropped_early: AtomicU64,
    dropped: OnceLock<IntCounter>,
}

static QUEUE: OnceLock<Arc<Queue>> = OnceLock::new();

impl Queue {
    fn send(&self, line: Vec<u8>) {
        let len = line.len();
        if self.queued.fetch_add(len, Relaxed) + len > QUEUE_BYTES {
            self.queued.fetch_sub(len, Relaxed);
            self.drop_one();
            return;
        }
        if self.tx.send(Msg::Line(line)).is_err() {
            self.queued.fetch_sub(len, Relaxed);
            self.drop_one();
        }
    }

    fn drop_one(&self) {
        match self.dropped.get() {
            Some(c) => c.inc(),
            None => {
                self.dropped_early.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The writer thread: drains the queue into stderr. A write error (a closed pipe)
/// loses the line, counted like a dropped one, and nothing else.
fn write_loop(queue: Arc<Queue>, rx: Receiver<Msg>) {
    let stderr = std::io::stderr();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Line(line) => {
                if stderr.lock().write_all(&line).is_err() {
                    queue.drop_one();
                }
                queue.queued.fetch_sub(line.len(), Relaxed);
            }
            Msg::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// One event's bytes, queued when the subscriber drops it (the fmt layer writes an
/// event with one `write_all`, so one buffer is one line).
pub struct QueuedLine(Vec<u8>);

impl Write for QueuedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.0);
        match QUEUE.get() {
            Some(q) => q.send(line),
            None => {
                let _ = std::io::stderr().write_all(&line);
            }
        }
    }
}

struct MakeQueued;

impl<'a> MakeWriter<'a> for MakeQueued {
    type Writer = QueuedLine;
    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine(Vec::with_capacity(256))
    }
}

/// Count dropped log events in `counter` (`forkyard_log_dropped_total`), including
/// the ones dropped before it existed.
pub fn count_dropped_in(counter: IntCounter) {
    if let Some(q) = QUEUE.get() {
        counter.inc_by(q.dropped_early.swap(0, Relaxed));
        let _ = q.dropped.set(counter);
    }
}

/// Wait (at most a moment) until the queued log lines reached stderr; for exit,
/// so the last lines are not lost. A stderr that blocks does not block exit.
pub fn flush() {
    let Some(q) = QUEUE.get() else { return };
    let (done_tx, done_rx) = channel();
    if q.tx.send(Msg::Flush(done_tx)).is_ok() {
        let _ = done_rx.recv_timeout(FLUSH_AT_EXIT);
    }
}

/// Install the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(config: &LogConfig) {
    let (tx, rx) = channel();
    let queue = Arc::new(Queue {
        tx,
        queued: AtomicUsize::new(0),
        dropped_early: AtomicU64::new(0),
        dropped: OnceLock::new(),
    });
    let q = queue.clone();
    let started = std::thread::Builder::new()
        .name("forkyard-log".into())
        .spawn(move || write_loop(q, rx));
    match started {
        // Without the thread, events fall back to direct writes.
        Ok(_) => {
            let _ = QUEUE.set(queue);
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "forkyard: could not start the log writer thread: {e}"
            );
        }
    }
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(config.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MakeQueued)
        // Colours only for a person at a terminal, never in files or pipelines.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(true);
    // `try_init` also installs the `log` → tracing bridge for Pingora's records.
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if let Err(e) = result {
        let _ = writeln!(
            std::io::stderr(),
            "forkyard: could not install the logger: {e}"
        );
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
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (tx, rx) = channel();
        let q = Queue {
            tx,
            queued: AtomicUsize::new(0),
            dropped_early: AtomicU64::new(0),
            dropped: OnceLock::new(),
        };
        // Nobody drains `rx`: a stderr that blocks.
        let line = vec![b'x'; 64 * 1024];
        for _ in 0..(QUEUE_BYTES / line.len() + 10) {
            q.send(line.clone());
        }
        assert_eq!(q.dropped_early.load(Relaxed), 10);
        assert!(q.queued.load(Relaxed) <= QUEUE_BYTES);
        drop(rx);
        // A closed channel drops too.
        let counter = IntCounter::new("t", "t").unwrap();
        let _ = q.dropped.set(counter.clone());
        q.queued.store(0, Relaxed);
        q.send(b"gone\n".to_vec());
        assert_eq!(counter.get(), 1);
    }
}
