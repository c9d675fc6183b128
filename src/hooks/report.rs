//! What a new worker process tells forkyard about its `post_fork` stage: one JSON
//! line per [`PostForkReport`] on an inherited pipe. Typed on both sides, so a
//! failure reason or a policy cannot be lost in translation.

use serde::{Deserialize, Serialize};

use super::action::AttemptError;
use crate::config::OnFailure;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum PostForkReport {
    /// One attempt of a hook or built-in finished.
    Attempt {
        hook: String,
        /// The kind of a `post_fork` built-in, when it is one.
        builtin: Option<String>,
        number: u32,
        of: u32,
        on_failure: OnFailure,
        duration_s: f64,
        result: Result<(), AttemptError>,
    },
    /// A line of a `run:` hook's output on `stream` (`stdout` or `stderr`).
    Output {
        hook: String,
        stream: String,
        line: String,
    },
    /// A hook failed with `abort`/`kill_worker`: the process exits without the app.
    Abort { hook: String },
    /// Everything passed; the app is exec'd next.
    Exec,
}

impl PostForkReport {
    /// The report as one line for the pipe.
    pub(crate) fn line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::FailureReason;

    #[test]
    fn reports_survive_the_pipe() {
        for report in [
            PostForkReport::Attempt {
                hook: "migrate".into(),
                builtin: Some("rlimits".into()),
                number: 2,
                of: 3,
                on_failure: OnFailure::KillWorker,
                duration_s: 0.25,
                result: Err(AttemptError {
                    reason: FailureReason::Timeout,
                    message: "took too long".into(),
                }),
            },
            PostForkReport::Output {
                hook: "migrate".into(),
                stream: "stderr".into(),
                line: "a \"quoted\" line".into(),
            },
            PostForkReport::Abort {
                hook: "migrate".into(),
            },
            PostForkReport::Exec,
        ] {
            let line = report.line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            let back: PostForkReport = serde_json::from_str(&line).unwrap();
            assert_eq!(back, report);
        }
    }
}
