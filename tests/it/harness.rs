//! Starting the real forkyard binary with a temporary config, talking HTTP to it over
//! loopback, reading its metrics, and waiting by polling with deadlines.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous deadlines: CI is a loaded 2-core machine.
pub const BOOT: Duration = Duration::from_secs(60);
pub const SHORT: Duration = Duration::from_secs(30);

pub fn fixture_worker() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/worker.py")
}

/// A block of `n` consecutive free loopback ports, unique within this test run.
pub fn free_ports(n: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 200) as u16 * 100,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let start = NEXT.fetch_add(n, Ordering::SeqCst);
        assert!(start < 60_000, "ran out of test ports");
        if (start..start + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return start;
        }
    }
}

/// Poll `f` until it returns `Some`, or panic with `what` after `timeout`.
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
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A POST with an empty body on a fresh connection.
pub fn http_post(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    extra_headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !extra_headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"))
    {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<HashMap<_, _>>();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Options for `Forkyard::start_with`.
#[derive(Default)]
pub struct StartOpts {
    /// Extra environment for forkyard itself.
    pub env: Vec<(String, String)>,
    /// Shell commands run (by bash) just before forkyard is exec'd, e.g. to leak fds.
    pub shell_prefix: Option<String>,
    /// A command forkyard runs under, e.g. `["unshare", "--pid", "--fork"]`.
    pub wrapper: Vec<String>,
    /// The directory forkyard starts in. Default: the repository root.
    pub cwd: Option<PathBuf>,
}

/// A running forkyard.
pub struct Forkyard {
    child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    /// One message per output pipe that reached EOF.
    eof: std::sync::mpsc::Receiver<()>,
}

impl Forkyard {
    /// Start `forkyard run` with `yaml`, where `{proxy}` and `{admin}` are replaced by
    /// fresh loopback addresses and `{dir}` by a temporary directory for the test.
    pub fn start(yaml: &str) -> Forkyard {
        Forkyard::start_with(yaml, &StartOpts::default())
    }

    /// Like `start`, with extra environment variables for forkyard.
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Forkyard {
        Forkyard::start_in(yaml, env, Path::new(env!("CARGO_MANIFEST_DIR")))
    }

    /// Like `start_with_env`, with forkyard started in directory `cwd`.
    pub fn start_in(yaml: &str, env: &[(&str, &str)], cwd: &Path) -> Forkyard {
        let opts = StartOpts {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: Some(cwd.to_path_buf()),
            ..StartOpts::default()
        };
        Forkyard::start_with(yaml, &opts)
    }

    /// Like `start`, with extra environment and/or a shell prefix run before exec.
    pub fn start_with(yaml: &str, opts: &StartOpts) -> Forkyard {
        let base = free_ports(2);
        let proxy: SocketAddr = format!("127.0.0.1:{base}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", base + 1).parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = yaml
            .replace("{proxy}", &proxy.to_string())
            .replace("{admin}", &admin.to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        let mut cmd = match &opts.shell_prefix {
            None if !opts.wrapper.is_empty() => {
                let mut c = Command::new(&opts.wrapper[0]);
                c.args(&opts.wrapper[1..])
                    .arg(env!("CARGO_BIN_EXE_forkyard"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_forkyard")),
            Some(prefix) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("{prefix}; exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_forkyard"));
                c
            }
        };
        // Configs that take their addresses from the environment get the same ones.
        cmd.env("PROXY_LISTEN", proxy.to_string())
            .env("ADMIN_LISTEN", admin.to_string())
            .envs(opts.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd
            .args(["run", "-c"])
            .arg(&path)
            .current_dir(
                opts.cwd
                    .as_deref()
                    .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR"))),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start forkyard");
        let log = Arc::new(Mutex::new(String::new()));
        let (eof_tx, eof) = std::sync::mpsc::channel();
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
        }
    }

    /// The temporary directory holding the config (tests may put files there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

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
        let ok = wait_for_or_log(self, BOOT, "/readyz to answer 200", || {
            self.admin_get("/readyz").ok().filter(|r| r.status == 200)
        });
        drop(ok);
    }

    pub fn metrics(&self) -> String {
        self.admin_get("/metrics").expect("scrape /metrics").body
    }

    /// The `/status` document.
    pub fn status(&self) -> serde_json::Value {
        self.admin_get("/status").expect("GET /status").json()
    }

    /// The value of one series, e.g. `forkyard_workers{pool="web",state="ready"}`;
    /// `None` also while the admin listener is not up yet.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.admin_get("/metrics").ok()?.body, series)
    }

    /// After an exit: wait until both output pipes reached EOF, so `log()` is complete.
    fn drain_output(&self) {
        for _ in 0..2 {
            let _ = self.eof.recv_timeout(SHORT);
        }
    }

    /// Wait for forkyard to exit by itself.
    pub fn signal_and_wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.drain_output();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "forkyard did not exit within {timeout:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send `sig` to `pid` (e.g. forkyard under a wrapper) and wait for our child's exit.
    pub fn signal_pid_and_wait(
        &mut self,
        pid: i32,
        sig: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> ExitStatus {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
        self.signal_and_wait_exit(timeout)
    }

    /// Send `sig` and wait for the exit.
    pub fn signal_and_wait(
        &mut self,
        sig: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> ExitStatus {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.drain_output();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "forkyard did not exit within {timeout:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Like `wait_for`, but prints forkyard's log on timeout.
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
            panic!("{why} for {what}; forkyard log:\n{}", fy.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Forkyard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.pid());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // A second signal makes forkyard SIGKILL its workers and exit.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            std::thread::sleep(Duration::from_millis(500));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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

/// Whether a process is gone (or a zombie waiting to be reaped by someone else).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// A pool block for the fixture worker.
pub fn fixture_pool(name: &str, workers: u16, extra: &str) -> String {
    let port = free_ports(workers + 2);
    format!(
        r#"  {name}:
    command: ["python3", "{worker}"]
    workers: {workers}
    ports: "{port}-{end}"
    restart: {{ backoff_min: "50ms", backoff_max: "500ms" }}
    stop: {{ grace: "5s" }}
{extra}"#,
        worker = fixture_worker().display(),
        end = port + workers + 1,
    )
}

/// A config with the proxy/admin placeholders and the given pools (and routes).
pub fn config_with(pools: &[String], routes: &str) -> String {
    format!(
        "proxy:\n  listen: \"{{proxy}}\"\nadmin:\n  listen: \"{{admin}}\"\nshutdown:\n  timeout: \"10s\"\npools:\n{}\n{}",
        pools.join("\n"),
        routes
    )
}

/// What `forkyard check -c <path>` printed and how it exited.
pub struct CheckRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `forkyard check -c path`, without the environment variables in `env_remove`.
pub fn forkyard_check(path: &Path, env_remove: &[&str]) -> CheckRun {
    let mut cmd = Command::new(forkyard_bin());
    cmd.args(["check", "-c"]).arg(path);
    for name in env_remove {
        cmd.env_remove(name);
    }
    let out = cmd.output().expect("run forkyard check");
    CheckRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The forkyard binary under test.
pub fn forkyard_bin() -> &'static str {
    env!("CARGO_BIN_EXE_forkyard")
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where tests leave files for people to look at (screenshots).
pub fn artifacts_dir() -> PathBuf {
    let dir = repo().join("target/artifacts");
    std::fs::create_dir_all(&dir).expect("create target/artifacts");
    dir
}

/// A command on `PATH`.
pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

/// A tool the test needs, found on `PATH` or in the test virtualenv
/// (`target/pytools/bin`, made by `make test`). `None` means: skip this test, which
/// is only allowed outside CI; with `CI` set a missing tool fails the test.
pub fn tool(cmd: &str, installed_by: &str) -> Option<PathBuf> {
    let venv = repo().join("target/pytools/bin").join(cmd);
    if venv.is_file() {
        return Some(venv);
    }
    if let Some(p) = which(cmd) {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{cmd} is required in CI; `make test` installs it ({installed_by})"
    );
    announce(&format!(
        "\n*** SKIPPED: {cmd} is not installed; run `make test`, which installs it ({installed_by}) ***\n"
    ));
    None
}

/// Run `cmd` and return (success, stdout + stderr).
pub fn run_tool(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Say something in the test output even when the harness captures it (`eprintln!`
/// is captured; a direct write to stderr is not): artifact paths, awaited features.
pub fn announce(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// One request with any method, headers and body on a fresh connection
/// (`Connection: close`); a `Content-Length` is added for a non-empty body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    parse_response(&raw_exchange(addr, &raw, Duration::from_secs(30))?)
}

/// Send `bytes` as they are and read until the server closes or `timeout` passes
/// without data.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// The status code at the start of a raw response, if any.
pub fn status_of(raw: &[u8]) -> Option<u16> {
    std::str::from_utf8(raw.get(9..12)?).ok()?.parse().ok()
}

/// A process's resident set size in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The first port of a `fixture_pool` block: slot i listens on it plus i.
pub fn first_port(pool_yaml: &str) -> u16 {
    pool_yaml
        .split("ports: \"")
        .nth(1)
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse().ok())
        .expect("a fixture pool with ports")
}

impl Forkyard {
    /// Wait until `n` workers of `pool` are ready.
    pub fn wait_workers_ready(&self, pool: &str, n: usize) {
        let series = format!(r#"forkyard_workers{{pool="{pool}",state="ready"}}"#);
        wait_for_or_log(self, BOOT, &format!("{n} ready workers in {pool}"), || {
            (self.metric(&series) == Some(n as f64)).then_some(())
        });
    }

    /// The slot that answered `GET path` through the proxy (fixture JSON).
    pub fn slot_of(&self, path: &str, headers: &[(&str, &str)]) -> usize {
        let r = http_get(self.proxy, path, headers).expect("request through the proxy");
        assert_eq!(r.status, 200, "{r:?}");
        r.json()["slot"].as_str().unwrap().parse().unwrap()
    }
}

/// One GET on a keep-alive connection: (status, body, whether the connection stays
/// open). Any failure to get a whole response is an error.
pub fn keepalive_get(
    c: &mut BufReader<TcpStream>,
    path: &str,
) -> std::io::Result<(u16, String, bool)> {
    c.get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: load\r\n\r\n").as_bytes())?;
    let mut line = String::new();
    if c.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before the status line",
        ));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut keep) = (0usize, true);
    loop {
        line.clear();
        if c.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed in the headers",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse().unwrap_or(0);
            } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                keep = false;
            }
        }
    }
    let mut body = vec![0u8; length];
    c.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned(), keep))
}
