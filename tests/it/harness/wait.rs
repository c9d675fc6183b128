//! Waiting by polling until a deadline, never for a fixed time.

use std::time::{Duration, Instant};

use super::{process_gone, Forkyard, TAIL_LINES};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(50);

/// Poll `f` until it returns `Some`, or panic with `what` after `timeout`. For
/// waits that involve a running forkyard, use [`wait_for_or_log`].
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Like `wait_for`, but a failure prints forkyard's last log lines, and a
/// forkyard that exits meanwhile fails the wait within 2 s.
pub fn wait_for_or_log<T>(
    fy: &Forkyard,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let mut deadline = Instant::now() + timeout;
    let mut exited = false;
    loop {
        if let Some(v) = f() {
            return v;
        }
        // forkyard exited: nothing will change any more, so fail after a short
        // grace (its last output may still be on the way) instead of the timeout.
        if !exited && process_gone(fy.pid()) {
            exited = true;
            deadline = deadline.min(Instant::now() + Duration::from_secs(2));
        }
        if Instant::now() >= deadline {
            let why = if exited {
                "forkyard exited while waiting".to_string()
            } else {
                format!("timed out after {timeout:?} waiting")
            };
            panic!(
                "{why} for {what}; the last {TAIL_LINES} lines of forkyard's log:\n{}",
                fy.tail_for_failure()
            );
        }
        std::thread::sleep(POLL);
    }
}
