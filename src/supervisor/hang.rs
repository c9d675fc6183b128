//! Hung requests (`hang:`): how often a worker's actor looks at its requests in
//! flight, and how a hung worker's stacks are dumped before it is killed.
//!
//! The proxy lists each request in flight on a worker process
//! (`pool::pending`); the worker's own actor, which owns the process, checks that
//! list every [`check_every`] and, on a new hang, dumps the stacks ([`dump`]),
//! records the `hang` event (`lifecycle`), and with `hang.kill` kills the process
//! itself, so its exit takes the one exit path like any other. No other task
//! signals a worker.
//!
//! A dump is either a command, run like a `run:` hook (its own process group, the
//! one reaper, a time limit, then SIGKILL of its group), whose output is kept; or a
//! signal to the worker process alone, after which the worker's own output (which
//! forkyard forwards to its log anyway) is copied for a moment: until it has been
//! quiet for [`QUIET`] after its first line, or `dump_timeout`.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::launch::Os;
use crate::config::{HangDump, HangPolicy};
use crate::process::output::{Tap, TAP_LIMIT};
use crate::process::{ExitStatus, SpawnSpec};

/// After a signal, the dump is complete once the worker wrote nothing for this long.
const QUIET: Duration = Duration::from_millis(300);

/// How often a worker's requests in flight are checked: a quarter of `after`,
/// within 100 ms and 1 s, so a hang is seen at most that late.
pub(crate) fn check_every(after: Duration) -> Duration {
    (after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// What a dump produced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dump {
    /// The command's output, or the worker's output after the signal.
    pub(crate) output: String,
    /// `none`, `ok`, `exit code N`, `killed by signal S`, `timeout`, `error: …`, or
    /// `signal SIGUSR1` (and ` (no output)` when the worker wrote nothing).
    pub(crate) result: String,
    pub(crate) took: Duration,
}

/// Dump the stacks of worker `pid` as `policy` says. `spec` is the filled command
/// for `HangDump::Command`; `output` is the worker's output tap.
pub(crate) async fn dump(
    os: &Os,
    policy: &HangPolicy,
    pid: i32,
    spec: Option<SpawnSpec>,
    output: &Tap,
) -> Dump {
    let started = Instant::now();
    let (mut text, result, truncated) = match (&policy.dump, spec) {
        (None, _) | (Some(HangDump::Command(_)), None) => (String::new(), "none".into(), false),
        (Some(HangDump::Command(_)), Some(spec)) => {
            let ran = os.run_command(&spec, policy.dump_timeout).await;
            let result = match ran.status {
                Ok(Some(ExitStatus::Code(0))) => "ok".to_owned(),
                Ok(Some(s @ ExitStatus::Code(_))) => s.to_string(),
                Ok(Some(s @ ExitStatus::Signal(_))) => format!("killed by {s}"),
                Ok(None) => "timeout".to_owned(),
                Err(e) => format!("error: {e}"),
            };
            (ran.output, result, ran.truncated)
        }
        (Some(HangDump::Signal(signal)), _) => {
            output.arm();
            os.signal_one(pid, *signal);
            let deadline = started + policy.dump_timeout;
            loop {
                let seen = output.peek();
                let quiet = seen
                    .last
                    .is_some_and(|t| Instant::from_std(t) + QUIET <= Instant::now());
                if quiet || Instant::now() >= deadline {
                    break;
                }
                sleep(Duration::from_millis(50)).await;
            }
            let seen = output.disarm();
            let result = if seen.lines == 0 {
                format!("signal {} (no output)", signal.as_str())
            } else {
                format!("signal {}", signal.as_str())
            };
            (seen.text, result, seen.truncated)
        }
    };
    if truncated {
        text.push_str(&format!("[output cut at {} KiB]\n", TAP_LIMIT / 1024));
    }
    Dump {
        output: text,
        result,
        took: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_run_a_quarter_of_after_apart_within_bounds() {
        assert_eq!(
            check_every(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            check_every(Duration::from_millis(50)),
            Duration::from_millis(100)
        );
        assert_eq!(check_every(Duration::from_secs(60)), Duration::from_secs(1));
    }
}
