//! Reading a child's stdout/stderr line by line: worker output goes into forkyard's
//! log, one event per line; hook output goes to the hook's recorder.
//!
//! Lines longer than [`MAX_LINE`] bytes are cut there and marked, so a child that
//! writes without newlines cannot grow forkyard's memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

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

/// Log a worker's output until it closes its pipes: target `forkyard::worker`,
/// with its pool, slot and stream.
pub(crate) async fn log_worker_output(
    pipe: pipe::Receiver,
    pool: Arc<str>,
    worker: usize,
    stream: &'static str,
) {
    forward_lines(pipe, |text, truncated| {
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
