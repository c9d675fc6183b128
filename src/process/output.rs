//! Forwarding a child's stdout/stderr into forkyard's log, one event per line.
//!
//! Lines longer than [`MAX_LINE`] bytes are cut there and marked, so a child that
//! writes without newlines cannot grow forkyard's memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;

/// Longest line forwarded as is; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 16 * 1024;

/// How many lines a [`Tail`] keeps.
pub const TAIL_LINES: usize = 20;

/// The last lines a child wrote, for error messages.
#[derive(Debug, Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: &str) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line.to_string());
    }

    /// The kept lines, oldest first, joined with newlines.
    pub fn text(&self) -> String {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }
}

/// Who wrote the lines, for the log fields.
#[derive(Debug, Clone)]
pub struct OutputLabel {
    /// Empty for forkyard-wide hooks.
    pub pool: Arc<str>,
    pub worker: Option<usize>,
    pub stream: &'static str,
    /// Set for hook output: (phase, hook name).
    pub hook: Option<(&'static str, Arc<str>)>,
    /// Where to keep the last lines, if anywhere.
    pub tail: Option<Tail>,
}

/// Read `pipe` until EOF, logging each line with `label`.
pub async fn forward_lines(pipe: pipe::Receiver, label: OutputLabel) {
    let mut reader = BufReader::with_capacity(8 * 1024, pipe);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut truncated = false;
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            if !line.is_empty() {
                emit(&label, &line, truncated);
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
            emit(&label, &line, truncated);
            line.clear();
            truncated = false;
        }
    }
}

fn emit(label: &OutputLabel, line: &[u8], truncated: bool) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    if let Some(tail) = &label.tail {
        tail.push(text);
    }
    match &label.hook {
        None => tracing::info!(
            target: "forkyard::worker",
            pool = %label.pool,
            worker = label.worker,
            stream = label.stream,
            truncated,
            "{text}"
        ),
        Some((phase, hook)) => tracing::info!(
            target: "forkyard::hook",
            pool = %label.pool,
            worker = label.worker,
            phase,
            hook = %hook,
            stream = label.stream,
            truncated,
            "{text}"
        ),
    }
}
