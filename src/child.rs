//! `forkyard __child`: the first program every worker process runs.
//!
//! forkyard never runs code of its own between fork and exec in its multi-threaded
//! image. Instead each worker is started as a fresh, single-threaded `forkyard
//! __child` process (same pid as the worker will have) that reads its
//! [`ChildSpec`], applies the `post_fork` built-ins, closes inherited fds, runs the
//! `post_fork` `run:` hooks with forkyard's own hook runner (on a small runtime of
//! this process, with its own reaper), reports each result to forkyard over a pipe
//! as a typed `PostForkReport`, and finally execs the app with the same pid,
//! environment (minus the spec), working directory, user and limits.
//!
//! A failure with `on_failure: abort` or `kill_worker` ends the process with
//! [`EXIT_ABORTED`] before the app runs; forkyard counts it as a failed spawn.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use nix::unistd::Pid;
use parking_lot::Mutex;

use crate::config::{Builtin, Hook, HookAction, OnFailure, Phase, Rlimit};
use crate::hooks::{
    Attempt, AttemptError, FailureReason, HookContext, HookRunner, PostForkReport, Recorder,
};
use crate::process::child_spec::{ChildSpec, SPEC_ENV};

/// Exit code when a post_fork hook or built-in failed with a non-skip policy.
pub(crate) const EXIT_ABORTED: i32 = 125;
/// Exit code when the spec is missing or unreadable, or the app cannot be exec'd.
pub(crate) const EXIT_SETUP: i32 = 127;

/// The report pipe to forkyard; a broken pipe (forkyard gone) never stops the
/// worker.
struct Reporter(Mutex<Option<File>>);

/// Where the passed socket must be, by the systemd protocol.
const LISTEN_FD: i32 = 3;

/// Put the inherited listening socket at fd 3 (moving the report pipe away from 3
/// first if it sits there) and make sure the app inherits it.
#[allow(unsafe_code)]
fn pass_listener(fd: i32, reporter: &Reporter) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    if reporter.fd() == Some(LISTEN_FD) {
        let mut pipe = reporter.0.lock();
        if let Some(f) = pipe.take() {
            // F_DUPFD_CLOEXEC to a number above 3, then the old one closes with `f`.
            // SAFETY: fcntl with F_DUPFD_CLOEXEC only duplicates a valid fd we own.
            let moved = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
            if moved < 0 {
                return Err(std::io::Error::last_os_error());
            }
            drop(f);
            // SAFETY: `moved` was just created by fcntl and nothing else owns it.
            *pipe = Some(unsafe { File::from_raw_fd(moved) });
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
        self.0.lock().as_ref().map(|f| f.as_raw_fd())
    }

    fn send(&self, report: &PostForkReport) {
        if let Some(f) = self.0.lock().as_mut() {
            let _ = f.write_all(report.line().as_bytes());
        }
    }

    fn close(&self) {
        self.0.lock().take();
    }
}

impl Recorder for Reporter {
    /// forkyard logs the result of each attempt; the start needs no report.
    fn started(&self, _: &HookContext, _: &str, _: u32) {}

    fn finished(&self, _: &HookContext, a: &Attempt<'_>) {
        self.send(&PostForkReport::Attempt {
            hook: a.hook.to_owned(),
            builtin: a.builtin.map(str::to_owned),
            number: a.number,
            of: a.of,
            on_failure: a.on_failure,
            duration_s: a.took.as_secs_f64(),
            result: a.result.clone(),
        });
    }

    fn output(&self, _: &HookContext, hook: &str, stream: &str, line: &str) {
        self.send(&PostForkReport::Output {
            hook: hook.to_owned(),
            stream: stream.to_owned(),
            line: line.to_owned(),
        });
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
    let reporter = Arc::new(Reporter(Mutex::new(report_pipe(spec.report_fd))));
    let parent = nix::unistd::getppid();
    let mut env: Vec<(OsString, OsString)> =
        std::env::vars_os().filter(|(k, _)| k != SPEC_ENV).collect();
    let ctx = HookContext {
        pool: spec.pool.as_str().into(),
        worker: Some(spec.worker),
        port: spec.port,
        socket: spec.socket.clone(),
        phase: Phase::PostFork,
        exit: None,
        pool_env: Vec::new(),
        cwd: spec.cwd.clone(),
        base_env: None,
    };

    for hook in &spec.builtins {
        let HookAction::Builtin(b) = &hook.action else {
            continue;
        };
        let started = Instant::now();
        let result = apply_builtin(b, &mut env, parent).map_err(|message| AttemptError {
            reason: FailureReason::SpawnError,
            message,
        });
        reporter.finished(
            &ctx,
            &Attempt {
                hook: &hook.name,
                builtin: Some(b.kind()),
                number: 1,
                of: 1,
                on_failure: hook.on_failure,
                took: started.elapsed(),
                result: &result,
            },
        );
        if let Err(e) = result {
            if hook.on_failure != OnFailure::Skip {
                abort(&reporter, hook, &e.message);
            }
        }
    }
    if let Some(fd) = spec.listen_fd {
        if let Err(e) = pass_listener(fd, &reporter) {
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
        keep.extend(spec.keep_fd);
        close_inherited_fds(&keep);
    }
    if !spec.hooks.is_empty() {
        let ctx = HookContext {
            base_env: Some(
                env.iter()
                    .map(|(k, v)| {
                        (
                            k.to_string_lossy().into_owned(),
                            v.to_string_lossy().into_owned(),
                        )
                    })
                    // The hook context adds the worker's own variables again.
                    .filter(|(k, _)| !k.starts_with("FORKYARD_"))
                    .collect(),
            ),
            ..ctx
        };
        if let Err(failure) = run_hooks(&spec.hooks, &ctx, reporter.clone()) {
            if let Some(hook) = spec.hooks.iter().find(|h| h.name == failure.hook) {
                abort(&reporter, hook, &failure.message);
            }
            std::process::exit(EXIT_ABORTED);
        }
    }

    reporter.send(&PostForkReport::Exec);
    reporter.close();
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

/// Run the `post_fork` `run:` hooks on a runtime of this process, with forkyard's
/// hook runner. The runtime is gone before the app is exec'd.
fn run_hooks(
    hooks: &[Hook],
    ctx: &HookContext,
    reporter: Arc<Reporter>,
) -> Result<(), crate::hooks::HookFailure> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("forkyard: cannot run the post_fork hooks: {e}");
            std::process::exit(EXIT_SETUP);
        }
    };
    runtime.block_on(async {
        let reaper = match crate::process::Reaper::start() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("forkyard: cannot run the post_fork hooks: {e}");
                std::process::exit(EXIT_SETUP);
            }
        };
        HookRunner {
            reaper,
            recorder: reporter,
            caller: None,
        }
        .run_phase(hooks, ctx)
        .await
    })
}

/// A hook failed with a policy that stops the worker: tell forkyard, and exit
/// before the app runs.
fn abort(reporter: &Reporter, hook: &Hook, message: &str) -> ! {
    reporter.send(&PostForkReport::Abort {
        hook: hook.name.clone(),
    });
    eprintln!("forkyard: post_fork {}: {message}", hook.name);
    std::process::exit(EXIT_ABORTED);
}

fn resource(r: Rlimit) -> nix::sys::resource::Resource {
    use nix::sys::resource::Resource;
    match r {
        Rlimit::Nofile => Resource::RLIMIT_NOFILE,
        Rlimit::Core => Resource::RLIMIT_CORE,
        Rlimit::Nproc => Resource::RLIMIT_NPROC,
        Rlimit::As => Resource::RLIMIT_AS,
        Rlimit::Fsize => Resource::RLIMIT_FSIZE,
        Rlimit::Memlock => Resource::RLIMIT_MEMLOCK,
        Rlimit::Stack => Resource::RLIMIT_STACK,
        Rlimit::Cpu => Resource::RLIMIT_CPU,
        Rlimit::Data => Resource::RLIMIT_DATA,
    }
}

fn apply_builtin(
    action: &Builtin,
    env: &mut Vec<(OsString, OsString)>,
    parent: Pid,
) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, RLIM_INFINITY};
    let root = nix::unistd::geteuid().is_root();
    match action {
        Builtin::Setsid(_) => nix::unistd::setsid()
            .map(|_| ())
            .map_err(|e| format!("setsid: {e}")),
        Builtin::Umask(m) => {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(*m as _));
            Ok(())
        }
        Builtin::Rlimits(limits) => {
            for (r, value) in limits {
                let v = value.unwrap_or(RLIM_INFINITY);
                setrlimit(resource(*r), v, v)
                    .map_err(|e| format!("rlimits {}={v}: {e}", r.name()))?;
            }
            Ok(())
        }
        Builtin::Nice(n) => set_nice(*n),
        Builtin::OomScoreAdj(n) => std::fs::write("/proc/self/oom_score_adj", n.to_string())
            .map_err(|e| format!("oom_score_adj {n}: {e}")),
        Builtin::Group(name) => {
            if !root {
                return Ok(());
            }
            let gid = crate::account::gid(name)?;
            nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
            nix::unistd::setgid(gid).map_err(|e| format!("setgid {gid}: {e}"))
        }
        Builtin::User(name) => {
            if !root {
                return Ok(());
            }
            let user = crate::account::user(name)?;
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
        Builtin::ParentDeathSignal(sig) => {
            nix::sys::prctl::set_pdeathsig(*sig)
                .map_err(|e| format!("parent_death_signal: {e}"))?;
            // forkyard may have died before the signal was armed.
            if nix::unistd::getppid() != parent {
                std::process::exit(EXIT_ABORTED);
            }
            Ok(())
        }
        Builtin::SeedEnv(name) => {
            let seed: [u8; 32] = rand::random();
            let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
            env.retain(|(k, _)| k != name.as_str());
            env.push((name.into(), hex.into()));
            Ok(())
        }
        Builtin::CloseFds(_) => Ok(()),
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
