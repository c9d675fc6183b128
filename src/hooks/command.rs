//! One command run to its end or its timeout, the way every `run:` hook is (and a
//! hung worker's `hang.dump`): its own process group, its exit seen through the
//! one reaper, each output line handed to a sink as it comes (a full pipe would
//! block it), the whole group SIGKILLed at the timeout and again after the end, so
//! nothing it started survives it.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::timeout;

use crate::process::output::forward_lines;
use crate::process::signal::signal_group;
use crate::process::{spawn, ExitStatus, Reaper, SpawnError, SpawnSpec};

/// How long to wait for a finished command's output pipes to close.
const OUTPUT_LINGER: Duration = Duration::from_secs(1);

/// Run `spec` for at most `limit`, handing each line it writes to `sink` with its
/// stream (`stdout`, `stderr`). `Ok(None)`: it ran past `limit` and was killed.
pub(crate) async fn run_command(
    spec: &SpawnSpec,
    limit: Duration,
    reaper: &Reaper,
    sink: &(dyn Fn(&str, &'static str) + Sync),
) -> Result<Option<ExitStatus>, SpawnError> {
    let child = spawn(spec)?;
    let pipes = [child.stdout, child.stderr];
    let forwarding = async {
        let forward = |pipe, stream: &'static str| async move {
            if let Some(pipe) = pipe {
                forward_lines(pipe, |line, _| sink(line, stream)).await;
            }
        };
        let [out, err] = pipes;
        tokio::join!(forward(out, "stdout"), forward(err, "stderr"));
    };
    tokio::pin!(forwarding);
    let mut exit = reaper.watch(child.pid);
    let mut output_closed = false;
    let finished = {
        let waiting = timeout(limit, &mut exit);
        tokio::pin!(waiting);
        loop {
            tokio::select! {
                r = &mut waiting => break r.ok().map(|s| s.ok()),
                _ = &mut forwarding, if !output_closed => output_closed = true,
            }
        }
    };
    let status = match finished {
        Some(status) => status,
        None => {
            let _ = signal_group(child.pid, Signal::SIGKILL);
            let _ = (&mut exit).await;
            None
        }
    };
    // Whatever it left running in its group goes too; its last lines follow.
    let _ = signal_group(child.pid, Signal::SIGKILL);
    if !output_closed {
        let _ = timeout(OUTPUT_LINGER, forwarding).await;
    }
    Ok(status)
}
