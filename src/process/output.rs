//! Forwarding a child's stdout/stderr into forkyard's log, one event per line.
//!
//! Lines longer than [`MAX_LINE`] bytes are cut there and marked, so a child that
//! writes without newlines cannot grow forkyard's memory.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;

/// Longest line forwarded as is; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 16 * 1024;

/// Who wrote the lines, for the log fields.
#[derive(Debug, Clone)]
pub struct OutputLabel {
    pub pool: Arc<str>,
    pub worker: usize,
    pub stream: &'static str,
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
    tracing::info!(
        target: "forkyard::worker",
        pool = %label.pool,
        worker = label.worker,
        stream = label.stream,
        truncated,
        "{text}"
    );
}
