//! Reading a child's stdout/stderr line by line: worker output goes into forkyard's
//! log, one event per line (and, while a [`Tap`] is armed, into it too: the dump a
//! hung worker writes after `hang.dump: { signal }`); hook output goes to the
//! hook's recorder.
//!
//! Lines longer than [`MAX_LINE`] bytes are cut there and marked, so a child that
//! writes without newlines cannot grow forkyard's memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;

/// Longest line forwarded as is; the rest of a longer line is dropped.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// How many lines a [`Tail`] keeps.
pub(crate) const TAIL_LINES: usize = 20;

/// The last lines a child wrote, for error messages.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    pub(crate) fn push(&self, line: &str) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line.to_string());
    }

    /// The kept lines, oldest first, joined with newlines.
    pub(crate) fn text(&self) -> String {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }
}

/// Most bytes a [`Tap`] keeps; later lines are dropped and the capture is marked.
pub(crate) const TAP_LIMIT: usize = 64 * 1024;

/// A copy of a worker's output lines while armed (both streams, in arrival order).
/// Unarmed, the output task pays one atomic load per line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tap(Arc<TapInner>);

#[derive(Debug, Default)]
struct TapInner {
    armed: AtomicBool,
    captured: Mutex<Captured>,
}

/// What a [`Tap`] collected.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Captured {
    pub(crate) text: String,
    pub(crate) lines: usize,
    /// When the last line came.
    pub(crate) last: Option<Instant>,
    /// Lines past [`TAP_LIMIT`] were dropped.
    pub(crate) truncated: bool,
}

impl Tap {
    /// Start collecting (anything collected before is dropped).
    pub(crate) fn arm(&self) {
        *self.0.captured.lock().unwrap_or_else(|e| e.into_inner()) = Captured::default();
        self.0.armed.store(true, Ordering::Release);
    }

    /// What was collected so far (collecting goes on).
    pub(crate) fn peek(&self) -> Captured {
        self.0
            .captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stop collecting and return what was collected.
    pub(crate) fn disarm(&self) -> Captured {
        self.0.armed.store(false, Ordering::Release);
        std::mem::take(&mut *self.0.captured.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// One line of the worker's output (kept only while armed).
    pub(crate) fn feed(&self, line: &str) {
        if !self.0.armed.load(Ordering::Acquire) {
            return;
        }
        let mut c = self.0.captured.lock().unwrap_or_else(|e| e.into_inner());
        if c.text.len() + line.len() + 1 > TAP_LIMIT {
            c.truncated = true;
        } else {
            c.text.push_str(line);
            c.text.push('\n');
            c.lines += 1;
        }
        c.last = Some(Instant::now());
    }
}

/// Read `pipe` until EOF, handing each line (and whether it was cut) to `sink`.
pub(crate) async fn forward_lines(pipe: pipe::Receiver, mut sink: impl FnMut(&str, bool)) {
    let mut reader = BufReader::with_capacity(8 * 1024, pipe);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut truncated = false;
    let mut emit = |line: &[u8], truncated: bool| {
        let text = String::from_utf8_lossy(line);
        sink(text.trim_end_matches('\r'), truncated);
    };
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            if !line.is_empty() {
                emit(&line, truncated);
            }
            break;
        }
        let (chunk, found_newline) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len() + usize::from(found_newline);
        reader.consume(used);
        if found_newline {
            emit(&line, truncated);
            line.clear();
            truncated = false;
        }
    }
}

/// Log a new worker's stdout and stderr (each if piped) with [`log_worker_output`],
/// one task per pipe; the returned tap sees the lines of both.
pub(crate) fn forward_worker_output(
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    pool: &Arc<str>,
    worker: usize,
) -> Tap {
    let tap = Tap::default();
    for (pipe, stream) in [(stdout, "stdout"), (stderr, "stderr")] {
        if let Some(pipe) = pipe {
            tokio::spawn(log_worker_output(
                pipe,
                pool.clone(),
                worker,
                stream,
                tap.clone(),
            ));
        }
    }
    tap
}

/// Log a worker's output until it closes its pipes: target `forkyard::worker`,
/// with its pool, slot and stream; each line also goes to `tap`.
pub(crate) async fn log_worker_output(
    pipe: pipe::Receiver,
    pool: Arc<str>,
    worker: usize,
    stream: &'static str,
    tap: Tap,
) {
    forward_lines(pipe, |text, truncated| {
        tap.feed(text);
        tracing::info!(
            target: "forkyard::worker",
            pool = %pool,
            worker,
            stream,
            truncated,
            "{text}"
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_keeps_lines_only_while_armed_and_within_its_limit() {
        let tap = Tap::default();
        tap.feed("before");
        tap.arm();
        tap.feed("Thread 0x1 (most recent call first):");
        tap.feed("  File \"app.py\", line 3 in stuck");
        assert_eq!(tap.peek().lines, 2);
        let long = "x".repeat(TAP_LIMIT);
        tap.feed(&long);
        let got = tap.disarm();
        assert_eq!(got.lines, 2);
        assert!(got.truncated);
        assert!(got.text.starts_with("Thread 0x1"), "{}", got.text);
        assert!(got.text.contains("in stuck\n"));
        tap.feed("after");
        assert_eq!(tap.peek(), Captured::default());
    }
}
