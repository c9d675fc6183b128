//! `forkyard __child`: the first program every worker process runs.
//!
//! forkyard never runs code of its own between fork and exec in its multi-threaded
//! image. Instead each worker is started as a fresh, single-threaded `forkyard
//! __child` process (same pid as the worker will have) that reads its
//! [`ChildSpec`], applies the `post_fork` built-ins, closes inherited fds, runs the
//! `post_fork` `run:` hooks with timeouts, reports each result to forkyard over a
//! pipe, and finally execs the app with the same pid, environment (minus the spec),
//! working directory, user and limits.
//!
//! A failure with `on_failure: abort` or `kill_worker` ends the process with
//! [`EXIT_ABORTED`] before the app runs; forkyard counts it as a failed spawn.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::child_spec::{BuiltinAction, ChildBuiltin, ChildHook, ChildSpec, Report, SPEC_ENV};

/// Exit code when a post_fork hook or built-in failed with a non-skip policy.
pub const EXIT_ABORTED: i32 = 125;
/// Exit code when the spec is missing or unreadable, or the app cannot be exec'd.
pub const EXIT_SETUP: i32 = 127;

struct Reporter(Option<File>);

/// Where the passed socket must be, by the systemd protocol.
const LISTEN_FD: i32 = 3;

/// Put the inherited listening socket at fd 3 (moving the report pipe away from 3
/// first if it sits there) and make sure the app inherits it.
#[allow(unsafe_code)]
fn pass_listener(fd: i32, reporter: &mut Reporter) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    if reporter.fd() == Some(LISTEN_FD) {
        if let Some(f) = reporter.0.take() {
            // F_DUPFD_CLOEXEC to a number above 3, then the old one closes with `f`.
            // SAFETY: fcntl with F_DUPFD_CLOEXEC only duplicates a valid fd we own.
            let moved = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
            if moved < 0 {
                return Err(std::io::Error::last_os_error());
            }
            drop(f);
            // SAFETY: `moved` was just created by fcntl and nothing else owns it.
            reporter.0 = Some(unsafe { File::from_raw_fd(moved) });
        }
    }
    if fd != LISTEN_FD {
        // SAFETY: dup2 onto fd 3, which is free (the report pipe was moved) or an
        // inherited descriptor that close_fds would drop anyway; `fd` is the socket
        // forkyard passed us.
        if unsafe { libc::dup2(fd, LISTEN_FD) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the original number is not used again.
        unsafe {
            libc::close(fd);
        }
    } else {
        // SAFETY: clearing FD_CLOEXEC on fd 3, the socket passed to us.
        if unsafe { libc::fcntl(LISTEN_FD, libc::F_SETFD, 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Reporter {
    fn fd(&self) -> Option<i32> {
        use std::os::fd::AsRawFd;
        self.0.as_ref().map(|f| f.as_raw_fd())
    }

    fn send(&mut self, report: &Report) {
        if let (Some(f), Ok(mut line)) = (self.0.as_mut(), serde_json::to_string(report)) {
            line.push('\n');
            // A broken report pipe (forkyard gone) must not stop the worker.
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Take ownership of the inherited report pipe.
#[allow(unsafe_code)]
fn report_pipe(fd: i32) -> Option<File> {
    use std::os::fd::FromRawFd;
    if fd < 3
        || nix::fcntl::fcntl(
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_err()
    {
        return None;
    }
    // SAFETY: forkyard created this pipe, left this one end open across the exec for
    // us, and named it in the spec; nothing else in this fresh process owns fd `fd`.
    let file = unsafe { File::from_raw_fd(fd) };
    // Neither hooks nor the app may inherit it.
    let _ = nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(file)
}

/// Close every fd above 2 except those in `keep`.
#[allow(unsafe_code)]
fn close_inherited_fds(keep: &HashSet<i32>) {
    // Collect first: the directory iterator holds an fd of its own while it runs.
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: this process is single-threaded and holds no Rust object for
            // these inherited fds (the spec says which ones we keep); the directory
            // iterator's own fd is already closed, so closing it again is a harmless
            // EBADF.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

/// Entry point of `forkyard __child`. Never returns.
pub fn main() -> ! {
    let spec: ChildSpec = match std::env::var(SPEC_ENV)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
    {
        Some(s) => s,
        None => {
            eprintln!("forkyard __child: missing or invalid {SPEC_ENV}; this entry point is started by forkyard only");
            std::process::exit(EXIT_SETUP);
        }
    };
    let mut reporter = Reporter(report_pipe(spec.report_fd));
    let parent = nix::unistd::getppid();
    let mut env: Vec<(OsString, OsString)> =
        std::env::vars_os().filter(|(k, _)| k != SPEC_ENV).collect();

    for b in &spec.builtins {
        let started = Instant::now();
        let result = apply_builtin(&b.action, &mut env, parent);
        finish(&mut reporter, b, started, result);
    }
    if let Some(fd) = spec.listen_fd {
        if let Err(e) = pass_listener(fd, &mut reporter) {
            eprintln!("forkyard: cannot pass the listening socket: {e}");
            std::process::exit(EXIT_SETUP);
        }
        env.retain(|(k, _)| k != "LISTEN_FDS" && k != "LISTEN_PID" && k != "LISTEN_FDNAMES");
        env.push(("LISTEN_FDS".into(), "1".into()));
        env.push(("LISTEN_PID".into(), std::process::id().to_string().into()));
        env.push(("LISTEN_FDNAMES".into(), spec.listen_name.clone().into()));
    }
    if spec.close_fds {
        let mut keep: HashSet<i32> = [reporter.fd()].into_iter().flatten().collect();
        if spec.listen_fd.is_some() {
            keep.insert(LISTEN_FD);
        }
        close_inherited_fds(&keep);
    }
    for hook in &spec.hooks {
        run_hook(&mut reporter, hook, &env);
    }

    reporter.send(&Report::Exec);
    drop(reporter);
    let Some((program, args)) = spec.argv.split_first() else {
        std::process::exit(EXIT_SETUP);
    };
    let err = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .exec();
    eprintln!("forkyard: cannot start {program:?}: {err}");
    std::process::exit(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    });
}

fn finish(reporter: &mut Reporter, b: &ChildBuiltin, started: Instant, result: Result<(), String>) {
    let ok = result.is_ok();
    let message = result.err().unwrap_or_default();
    reporter.send(&Report::Attempt {
        hook: b.name.clone(),
        ok,
        reason: (!ok).then(|| "spawn_error".to_string()),
        duration_s: started.elapsed().as_secs_f64(),
        message: message.clone(),
        attempt: 1,
        last: true,
    });
    if !ok && b.abort_on_failure {
        reporter.send(&Report::Abort {
            hook: b.name.clone(),
            reason: "spawn_error".into(),
        });
        eprintln!("forkyard: post_fork {}: {message}", b.name);
        std::process::exit(EXIT_ABORTED);
    }
}

fn apply_builtin(
    action: &BuiltinAction,
    env: &mut Vec<(OsString, OsString)>,
    parent: Pid,
) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    let root = nix::unistd::geteuid().is_root();
    match action {
        BuiltinAction::Setsid => nix::unistd::setsid()
            .map(|_| ())
            .map_err(|e| format!("setsid: {e}")),
        BuiltinAction::Umask(m) => {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(*m as _));
            Ok(())
        }
        BuiltinAction::Rlimits(limits) => {
            for (name, value) in limits {
                let resource = match name.as_str() {
                    "nofile" => Resource::RLIMIT_NOFILE,
                    "core" => Resource::RLIMIT_CORE,
                    "nproc" => Resource::RLIMIT_NPROC,
                    "as" => Resource::RLIMIT_AS,
                    "fsize" => Resource::RLIMIT_FSIZE,
                    "memlock" => Resource::RLIMIT_MEMLOCK,
                    "stack" => Resource::RLIMIT_STACK,
                    "cpu" => Resource::RLIMIT_CPU,
                    "data" => Resource::RLIMIT_DATA,
                    other => return Err(format!("unknown resource limit {other}")),
                };
                let v = value.unwrap_or(RLIM_INFINITY);
                setrlimit(resource, v, v).map_err(|e| format!("rlimits {name}={v}: {e}"))?;
            }
            Ok(())
        }
        BuiltinAction::Nice(n) => set_nice(*n),
        BuiltinAction::OomScoreAdj(n) => std::fs::write("/proc/self/oom_score_adj", n.to_string())
            .map_err(|e| format!("oom_score_adj {n}: {e}")),
        BuiltinAction::Group(name) => {
            if !root {
                return Ok(());
            }
            let gid = super::account::gid(name)?;
            nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
            nix::unistd::setgid(gid).map_err(|e| format!("setgid {gid}: {e}"))
        }
        BuiltinAction::User(name) => {
            if !root {
                return Ok(());
            }
            let user = super::account::user(name)?;
            if let Ok(cname) = std::ffi::CString::new(user.name.clone()) {
                // Keep an explicitly chosen group; otherwise take the user's groups.
                let gid = if nix::unistd::getegid().as_raw() == 0 {
                    user.gid
                } else {
                    nix::unistd::getegid()
                };
                nix::unistd::initgroups(&cname, gid)
                    .map_err(|e| format!("initgroups {name}: {e}"))?;
                if nix::unistd::getegid().as_raw() == 0 {
                    nix::unistd::setgid(user.gid).map_err(|e| format!("setgid: {e}"))?;
                }
            }
            nix::unistd::setuid(user.uid).map_err(|e| format!("setuid {}: {e}", user.uid))?;
            env.retain(|(k, _)| k != "HOME" && k != "USER" && k != "LOGNAME");
            env.push(("HOME".into(), user.dir.into_os_string()));
            env.push(("USER".into(), user.name.clone().into()));
            env.push(("LOGNAME".into(), user.name.into()));
            Ok(())
        }
        BuiltinAction::ParentDeathSignal(n) => {
            let sig = Signal::try_from(*n).map_err(|e| format!("signal {n}: {e}"))?;
            nix::sys::prctl::set_pdeathsig(sig).map_err(|e| format!("parent_death_signal: {e}"))?;
            // forkyard may have died before the signal was armed.
            if nix::unistd::getppid() != parent {
                std::process::exit(EXIT_ABORTED);
            }
            Ok(())
        }
        BuiltinAction::SeedEnv(name) => {
            let seed: [u8; 32] = rand::random();
            let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
            env.retain(|(k, _)| k != name.as_str());
            env.push((name.into(), hex.into()));
            Ok(())
        }
        BuiltinAction::CloseFds(_) => Ok(()),
    }
}

#[allow(unsafe_code)]
fn set_nice(n: i32) -> Result<(), String> {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("nice {n}: {}", std::io::Error::last_os_error()))
    }
}

/// Run one `run:` hook with retries; on a final failure with abort, exit.
fn run_hook(reporter: &mut Reporter, hook: &ChildHook, env: &[(OsString, OsString)]) {
    let attempts = hook.retries.saturating_add(1);
    for n in 1..=attempts {
        let started = Instant::now();
        let result = run_once(reporter, hook, env);
        let last = n == attempts;
        let (ok, reason, message) = match result {
            Ok(()) => (true, None, String::new()),
            Err((reason, message)) => (false, Some(reason), message),
        };
        reporter.send(&Report::Attempt {
            hook: hook.name.clone(),
            ok,
            reason: reason.map(str::to_string),
            duration_s: started.elapsed().as_secs_f64(),
            message: message.clone(),
            attempt: n,
            last,
        });
        if ok {
            return;
        }
        if !last {
            std::thread::sleep(Duration::from_millis(hook.retry_delay_ms));
            continue;
        }
        if hook.abort_on_failure {
            reporter.send(&Report::Abort {
                hook: hook.name.clone(),
                reason: reason.unwrap_or("exit").into(),
            });
            eprintln!("forkyard: post_fork hook {} failed: {message}", hook.name);
            std::process::exit(EXIT_ABORTED);
        }
    }
}

/// One attempt: `Err((reason, message))` on failure.
fn run_once(
    reporter: &mut Reporter,
    hook: &ChildHook,
    env: &[(OsString, OsString)],
) -> Result<(), (&'static str, String)> {
    let (program, args) = hook
        .argv
        .split_first()
        .ok_or(("spawn_error", "empty command".to_string()))?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ("spawn_error", format!("pipe: {e}")))?;
    let write2 = write
        .try_clone()
        .map_err(|e| ("spawn_error", format!("pipe: {e}")))?;
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .envs(hook.env.iter().map(|(k, v)| (k, v)))
        .env("FORKYARD_PHASE", "post_fork")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write2))
        .spawn()
        .map_err(|e| ("spawn_error", format!("cannot start {program:?}: {e}")))?;
    let pgid = child.id() as i32;

    // Output lines come back through a thread; the last ones are kept for the error.
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(File::from(read))
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_millis(hook.timeout_ms);
    let mut tail: Vec<String> = Vec::new();
    let mut forward = |line: String, reporter: &mut Reporter| {
        reporter.send(&Report::Output {
            hook: hook.name.clone(),
            stream: "output".into(),
            line: line.clone(),
        });
        tail.push(line);
        if tail.len() > super::output::TAIL_LINES {
            tail.remove(0);
        }
    };
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            forward(line, reporter);
        }
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = nix::sys::signal::killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                let _ = child.wait();
                break None;
            }
            Ok(None) => {
                if let Ok(line) = rx.recv_timeout(Duration::from_millis(10)) {
                    forward(line, reporter);
                }
            }
            Err(e) => return Err(("spawn_error", format!("wait: {e}"))),
        }
    };
    // Nothing the hook started may outlive it.
    let _ = nix::sys::signal::killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    let linger = Instant::now() + Duration::from_secs(1);
    while let Ok(line) = rx.recv_timeout(linger.saturating_duration_since(Instant::now())) {
        forward(line, reporter);
    }
    drop(reader);
    let with_tail = |m: String| {
        if tail.is_empty() {
            m
        } else {
            format!("{m}; last output:\n{}", tail.join("\n"))
        }
    };
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => Err((
            "timeout",
            with_tail(format!(
                "still running after its timeout of {}ms; killed with its process group",
                hook.timeout_ms
            )),
        )),
        Some(s) if s.success() => Ok(()),
        Some(s) => match s.signal() {
            Some(sig) => Err(("signal", with_tail(format!("killed by signal {sig}")))),
            None => Err((
                "exit",
                with_tail(format!("exited with code {}", s.code().unwrap_or(-1))),
            )),
        },
    }
}
