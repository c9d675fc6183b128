//! A running forkyard: how it is started, what it says, and how it is stopped.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{
    forkyard_bin, free_ports, http_get, http_post, repo, wait_for_or_log, Response, Sampler, BOOT,
    SHORT,
};

/// How many of forkyard's last log lines a failure prints.
pub const TAIL_LINES: usize = 60;

/// How to start a forkyard: `Forkyard::builder(yaml)....start()`.
#[must_use = "a builder does nothing until `start`"]
pub struct Builder {
    yaml: String,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
    wrapper: Vec<String>,
    shell_prefix: Option<String>,
}

impl Builder {
    /// An environment variable for forkyard itself (its workers inherit what
    /// forkyard passes on).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Builder {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The directory forkyard starts in. Default: the repository root.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Builder {
        self.cwd = dir.as_ref().to_owned();
        self
    }

    /// A command forkyard runs under, e.g. `&["unshare", "--pid", "--fork"]`.
    pub fn wrapper(mut self, argv: &[&str]) -> Builder {
        self.wrapper = argv.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Shell commands run by bash just before forkyard is exec'd in the same
    /// process: leak fds, set a ulimit, redirect stderr, join a cgroup.
    pub fn shell_prefix(mut self, script: impl Into<String>) -> Builder {
        self.shell_prefix = Some(script.into());
        self
    }

    /// Write the config and start `forkyard run -c` on it.
    pub fn start(self) -> Forkyard {
        let base = free_ports(2);
        let proxy: SocketAddr = format!("127.0.0.1:{base}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", base + 1).parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = self
            .yaml
            .replace("{proxy}", &proxy.to_string())
            .replace("{admin}", &admin.to_string())
            .replace("{admin_port}", &admin.port().to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        // [wrapper...] [bash -c 'prefix; exec "$0" "$@"'] forkyard run -c path
        let mut argv: Vec<OsString> = self.wrapper.iter().map(OsString::from).collect();
        if let Some(prefix) = &self.shell_prefix {
            argv.extend([
                "bash".into(),
                "-c".into(),
                format!("{prefix}; exec \"$0\" \"$@\"").into(),
            ]);
        }
        argv.extend([
            forkyard_bin().into(),
            "run".into(),
            "-c".into(),
            path.into(),
        ]);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            // Configs that take their addresses from the environment get the same ones.
            .env("PROXY_LISTEN", proxy.to_string())
            .env("ADMIN_LISTEN", admin.to_string())
            .env("RUST_LOG", "info")
            .envs(self.env)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (eof_tx, eof) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            let eof_tx = eof_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                let _ = eof_tx.send(());
            });
        }
        Forkyard {
            child,
            proxy,
            admin,
            dir,
            log,
            eof,
            tail_shown: AtomicBool::new(false),
        }
    }
}

/// A running `forkyard run`, stopped (SIGINT, then harder) when dropped.
pub struct Forkyard {
    child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    /// One message per output pipe that reached EOF.
    eof: mpsc::Receiver<()>,
    /// A failure message already has the log tail (so a panic does not print it twice).
    tail_shown: AtomicBool,
}

impl Forkyard {
    /// Start `forkyard run` with `yaml`, where `{proxy}` and `{admin}` are replaced by
    /// fresh loopback addresses, `{admin_port}` by the admin address's port (for
    /// `"0.0.0.0:{admin_port}"`, still reached at `admin`), and `{dir}` by a temporary
    /// directory for the test.
    pub fn start(yaml: &str) -> Forkyard {
        Forkyard::builder(yaml).start()
    }

    /// Like `start`, with options (environment, directory, wrapper, shell prefix).
    pub fn builder(yaml: &str) -> Builder {
        Builder {
            yaml: yaml.to_string(),
            env: Vec::new(),
            cwd: repo().to_path_buf(),
            wrapper: Vec::new(),
            shell_prefix: None,
        }
    }

    /// The temporary directory holding the config (tests may put files there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Write `text` as the config file, with `{proxy}`, `{admin}` and `{dir}`
    /// filled as at start.
    pub fn write_config(&self, text: &str) {
        let text = text
            .replace("{proxy}", &self.proxy.to_string())
            .replace("{admin}", &self.admin.to_string())
            .replace("{admin_port}", &self.admin.port().to_string())
            .replace("{dir}", &self.dir().display().to_string());
        std::fs::write(self.dir().join("config.yaml"), text).unwrap();
    }

    /// `write_config(text)`, then `POST /reload`.
    pub fn reload_with(&self, text: &str) -> Response {
        self.write_config(text);
        http_post(self.admin, "/reload").expect("POST /reload")
    }

    /// Everything forkyard (and its workers) wrote so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The log tail for a failure message (which then need not be printed again).
    pub(super) fn tail_for_failure(&self) -> String {
        self.tail_shown.store(true, Ordering::Relaxed);
        self.log_tail(TAIL_LINES)
    }

    /// The pid of the process started: forkyard, or its wrapper.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn get(&self, path: &str) -> std::io::Result<Response> {
        http_get(self.proxy, path, &[])
    }

    pub fn admin_get(&self, path: &str) -> std::io::Result<Response> {
        http_get(self.admin, path, &[])
    }

    /// Wait until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        wait_for_or_log(self, BOOT, "/readyz to answer 200", || {
            self.admin_get("/readyz").ok().filter(|r| r.status == 200)
        });
    }

    /// Wait until `n` workers of `pool` are ready.
    pub fn wait_workers_ready(&self, pool: &str, n: usize) {
        let series = format!(r#"forkyard_workers{{pool="{pool}",state="ready"}}"#);
        wait_for_or_log(self, BOOT, &format!("{n} ready workers in {pool}"), || {
            (self.metric(&series) == Some(n as f64)).then_some(())
        });
    }

    pub fn metrics(&self) -> String {
        self.admin_get("/metrics").expect("scrape /metrics").body
    }

    /// The `/status` document.
    pub fn status(&self) -> serde_json::Value {
        self.admin_get("/status").expect("GET /status").json()
    }

    /// `(slot, pid)` of each worker of the `pool`-th pool on `/status`, by slot.
    pub fn slot_pids(&self, pool: usize) -> Vec<(u64, i64)> {
        let mut v: Vec<(u64, i64)> = self.status()["pools"][pool]["workers"]
            .as_array()
            .expect("the pool's workers on /status")
            .iter()
            .filter_map(|w| Some((w["slot"].as_u64()?, w["pid"].as_i64()?)))
            .collect();
        v.sort();
        v
    }

    /// The value of one series, e.g. `forkyard_workers{pool="web",state="ready"}`;
    /// `None` also while the admin listener is not up yet.
    pub fn metric(&self, series: &str) -> Option<f64> {
        scrape(self.admin, series)
    }

    /// Sample the count of ready workers of `pool` on a thread, every 10 ms.
    pub fn sample_ready(&self, pool: &str) -> Sampler<f64> {
        let (admin, series) = (
            self.admin,
            format!(r#"forkyard_workers{{pool="{pool}",state="ready"}}"#),
        );
        Sampler::start(move || scrape(admin, &series))
    }

    /// The slot that answered `GET path` through the proxy (fixture JSON).
    pub fn slot_of(&self, path: &str, headers: &[(&str, &str)]) -> usize {
        let r = http_get(self.proxy, path, headers).expect("request through the proxy");
        assert_eq!(r.status, 200, "{r:?}");
        r.json()["slot"].as_str().unwrap().parse().unwrap()
    }

    /// Send `sig` to the process started (forkyard, or its wrapper).
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Wait for the process started to exit by itself; then the log is complete.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Both output pipes at EOF: `log()` has every line.
                for _ in 0..2 {
                    let _ = self.eof.recv_timeout(SHORT);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "forkyard did not exit within {timeout:?}; the last {TAIL_LINES} lines of its log:\n{}",
                self.tail_for_failure()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send `sig` and wait for the exit.
    pub fn signal_and_wait(&mut self, sig: Signal, timeout: Duration) -> ExitStatus {
        self.signal(sig);
        self.wait_exit(timeout)
    }

    /// Send `sig` to `pid` (e.g. forkyard under a wrapper) and wait for the exit of
    /// the process started.
    pub fn signal_pid_and_wait(&mut self, pid: i32, sig: Signal, timeout: Duration) -> ExitStatus {
        kill(Pid::from_raw(pid), sig).unwrap();
        self.wait_exit(timeout)
    }
}

impl Drop for Forkyard {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.tail_shown.load(Ordering::Relaxed) {
            // Captured, so shown with the failing test's output.
            eprintln!(
                "--- the last {TAIL_LINES} lines of forkyard's log ---\n{}",
                self.log_tail(TAIL_LINES)
            );
        }
        if let Ok(None) = self.child.try_wait() {
            // A second SIGINT makes forkyard SIGKILL its workers and exit.
            for (sig, patience) in [(Signal::SIGINT, 10), (Signal::SIGINT, 5)] {
                let _ = kill(Pid::from_raw(self.pid()), sig);
                let deadline = Instant::now() + Duration::from_secs(patience);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One series' value from the `/metrics` of the admin listener at `admin`.
pub fn scrape(admin: SocketAddr, series: &str) -> Option<f64> {
    metric_value(&http_get(admin, "/metrics", &[]).ok()?.body, series)
}

/// Parse one series' value out of a Prometheus text exposition. `series` is the
/// metric name with its labels in the exposition's order (alphabetical).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}
