//! The `forkyard` command: parse the CLI, load the config, run, map errors to exit
//! codes (78 for a bad config, 1 for any other start-up failure, 0 after a clean
//! shutdown; the full table is in README.md, "Exit codes"). Also the small client
//! commands: `status`, `events`, `probe`, `schema`, and `reload`, `scale` and
//! `restart`, which use the control socket.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use forkyard::client::{self, Target};
use forkyard::config::{Config, ControlSocket};

/// mimalloc instead of glibc's malloc: Pingora allocates and frees many small
/// buffers per request, and this cut the proxy's CPU per request (see
/// bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits EX_CONFIG: the configuration is invalid.
const EXIT_CONFIG: u8 = 78;
/// `forkyard status`: forkyard answered but is not ready (as `systemctl status`).
const EXIT_NOT_READY: u8 = 3;
/// Where `forkyard status` looks when neither `--admin` nor a config names it.
const DEFAULT_ADMIN: &str = "127.0.0.1:9090";

#[derive(Parser)]
#[command(
    name = "forkyard",
    version,
    about = "Supervise app worker pools behind a Pingora proxy, with Prometheus metrics."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the pools, the proxy and the admin listener.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Reload when the config file changes (same as `reload: { watch: true }`).
        #[arg(long)]
        watch: bool,
    },
    /// Validate the config and print the resolved plan, then exit.
    ///
    /// Warnings (a pool's program not found, risky settings) go to stderr; with
    /// --strict they are errors and the exit code is 78.
    Check(CheckArgs),
    /// Print the workers table of a running forkyard (its /status), over the
    /// control socket when it can be found, else the admin listener.
    ///
    /// Exits 0 when forkyard is ready, 3 when it answers but is not ready, 1 when
    /// it cannot be reached.
    Status(StatusArgs),
    /// Follow the lifecycle events of a running forkyard as they happen (spawns,
    /// exits, restarts, hook failures, reloads): its GET /events, over the control
    /// socket when it can be found, else the admin listener.
    ///
    /// One line per event, or its JSON object with --json. Exits 0 when forkyard
    /// stops, 1 when it cannot be reached or the stream breaks off.
    Events(EventsArgs),
    /// Make a running forkyard re-read its config file and apply it (as SIGHUP
    /// does), over its control socket; prints what changed.
    ///
    /// Exits 0 when applied, 1 otherwise (rolled back, invalid file, a key that
    /// needs a restart, or forkyard not reached).
    Reload(ControlArgs),
    /// Run WORKERS workers in POOL, over the control socket.
    ///
    /// Exits 0 when done, 1 otherwise (unknown pool, outside its port range,
    /// forkyard not reached).
    Scale {
        /// The pool's name.
        #[arg(value_parser = pool_name)]
        pool: String,
        /// The number of workers to run.
        workers: usize,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Replace every worker of POOL, one at a time, each new one ready before the
    /// old one stops, over the control socket.
    ///
    /// Exits 0 when every worker was replaced, 1 otherwise (rolled back, unknown
    /// pool, forkyard not reached).
    Restart {
        /// The pool's name.
        #[arg(value_parser = pool_name)]
        pool: String,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// GET a URL and exit 0 on a 2xx answer, 1 otherwise (for container
    /// HEALTHCHECKs in images without curl).
    Probe(ProbeArgs),
    /// Print the JSON Schema of config.yaml (for editors; also in docs/config.schema.json).
    Schema,
}

/// How `forkyard status` and `forkyard events` reach a running forkyard.
#[derive(clap::Args)]
struct Reach {
    /// The admin address (IP:port), asked instead of the control socket. Default:
    /// `admin.listen` of the config file if it loads, else 127.0.0.1:9090, when the
    /// control socket cannot be reached.
    #[arg(long, env = "FORKYARD_ADMIN")]
    admin: Option<String>,
    /// The control socket (no fallback to the admin address when given). Default:
    /// as for `forkyard reload`.
    #[arg(long, env = "FORKYARD_SOCKET")]
    socket: Option<PathBuf>,
    /// The config file that names the control socket and the admin address.
    #[arg(short, long, env = "FORKYARD_CONFIG", default_value = "config.yaml")]
    config: PathBuf,
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    at: Reach,
    /// Print the raw /status JSON instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct EventsArgs {
    #[command(flatten)]
    at: Reach,
    /// Print each event's JSON object (the fields of its JSON log line), one per line.
    #[arg(long)]
    json: bool,
    /// Start with the last N events forkyard kept (at most 1024).
    #[arg(long, default_value_t = 0)]
    replay: usize,
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// e.g. http://127.0.0.1:9090/healthz
    url: String,
    /// Give up after this long (a duration such as "5s" or "500ms").
    #[arg(long, default_value = "5s", value_parser = forkyard::config::parse_duration)]
    timeout: Duration,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The config file.
    #[arg(short, long, env = "FORKYARD_CONFIG", default_value = "config.yaml")]
    config: PathBuf,
}

#[derive(clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Treat warnings as errors: exit 78 when there is any (for CI).
    #[arg(long)]
    strict: bool,
}

/// Where the control commands find forkyard.
#[derive(clap::Args)]
struct ControlArgs {
    /// The control socket. Default: `admin.socket` of the config file, or the
    /// default socket of its admin port (`forkyard-<port>.sock` in
    /// $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/forkyard, /run/forkyard or
    /// /tmp/forkyard-<uid>); without a config, the only such socket there is.
    #[arg(long, env = "FORKYARD_SOCKET")]
    socket: Option<PathBuf>,
    /// The config file that says where the control socket is.
    #[arg(short, long, env = "FORKYARD_CONFIG", default_value = "config.yaml")]
    config: PathBuf,
    /// Give up waiting for the answer after this long (a reload or restart waits
    /// for each new worker to be ready), e.g. "90s".
    #[arg(long, default_value = "10m", value_parser = forkyard::config::parse_duration)]
    timeout: Duration,
}

/// A pool name as config.yaml allows it (`[a-z0-9_-]+`).
fn pool_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(name.to_owned())
    } else {
        Err("a pool name is lower-case letters, digits, '_' and '-'".to_owned())
    }
}

fn main() -> ExitCode {
    // Each worker process starts here first (see `process::child`); keep it before
    // any other work so the fresh image stays minimal.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__child") {
        forkyard::child_main();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Status(args) => status(args),
        Command::Events(args) => events(args),
        Command::Reload(args) => control("reload", args, "/reload"),
        Command::Scale {
            pool,
            workers,
            control: args,
        } => control(
            "scale",
            args,
            &format!("/pools/{pool}/scale?workers={workers}"),
        ),
        Command::Restart {
            pool,
            control: args,
        } => control("restart", args, &format!("/pools/{pool}/restart")),
        Command::Probe(args) => probe(args),
        Command::Schema => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{}", forkyard::config::json_schema()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Command::Check(args) => check(args),
        Command::Run { config: arg, watch } => {
            let config = match forkyard::config::load(&arg.config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!(
                        "forkyard: {} problem(s) in {}; nothing was started",
                        errors.0.len(),
                        arg.config.display()
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            forkyard::logging::init(&config.log);
            let result = forkyard::server::run(config, watch);
            if let Err(e) = &result {
                tracing::error!("{}", error_chain(e));
            }
            forkyard::logging::flush();
            match result {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    // Not `eprintln!`, which panics when stderr is a closed pipe.
                    let _ = writeln!(std::io::stderr(), "forkyard: {}", error_chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `forkyard check`: the plan on stdout, then warnings (errors with `--strict`).
fn check(args: CheckArgs) -> ExitCode {
    let path = &args.config.config;
    let config = match forkyard::config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "forkyard: {} problem(s) in {}",
                errors.0.len(),
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    print!("{}", forkyard::describe_plan(&config));
    let as_root = nix::unistd::geteuid().is_root();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let file = path.display();
    let mut warnings: Vec<String> = forkyard::program_findings(&config, as_root)
        .into_iter()
        .map(|f| match forkyard::config::value_position(&text, &f.key) {
            Some((line, column)) => format!("{file}:{line}:{column}: {}: {}", f.key, f.message),
            None => format!("{file}: {}: {}", f.key, f.message),
        })
        .collect();
    warnings.extend(
        forkyard::security_warnings(&config, as_root)
            .into_iter()
            .map(|w| w.message),
    );
    let label = if args.strict { "error" } else { "warning" };
    for w in &warnings {
        eprintln!("{label}: {w}");
    }
    if args.strict && !warnings.is_empty() {
        eprintln!(
            "forkyard: {} warning(s) in {file}, which --strict makes errors",
            warnings.len()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    ExitCode::SUCCESS
}

/// The config file, when it loads (the commands that only read where forkyard
/// listens do not mind a config they cannot load).
fn config_if_valid(path: &Path) -> Option<Config> {
    forkyard::config::load(path).ok()
}

/// The control socket: `--socket`, else the config's `admin.socket` (or the
/// default socket of its admin port), else the only forkyard socket there is.
fn control_socket(socket: Option<PathBuf>, config: &Path) -> Result<PathBuf, String> {
    if let Some(path) = socket {
        return Ok(path);
    }
    match config_if_valid(config) {
        Some(c) => match c.admin.socket {
            ControlSocket::Off => Err(format!(
                "{} sets admin.socket: false, so forkyard has no control socket",
                config.display()
            )),
            ControlSocket::Path(path) => Ok(path),
            ControlSocket::Default => forkyard::find_control_socket(c.admin.listen.port()),
        },
        None => forkyard::find_any_control_socket()
            .map_err(|e| format!("{e} (and {} did not load)", config.display())),
    }
}

/// `forkyard reload`, `scale` and `restart`: one POST over the control socket.
fn control(what: &str, args: ControlArgs, path: &str) -> ExitCode {
    let socket = match control_socket(args.socket, &args.config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "forkyard {what}: {e}; is forkyard running? (name its socket with --socket PATH, or its config with -c)"
            );
            return ExitCode::FAILURE;
        }
    };
    match client::request(&Target::Unix(socket), "POST", path, args.timeout) {
        Ok(r) if (200..300).contains(&r.status) => {
            print!("{}", r.body);
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprint!(
                "forkyard {what}: {} ({}): {}",
                r.status,
                reason(r.status),
                r.body
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("forkyard {what}: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// A word on what a control command's error status means.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        404 => "not found",
        409 => "rolled back",
        422 => "not applied",
        503 => "unavailable",
        _ => "error",
    }
}

fn status(args: StatusArgs) -> ExitCode {
    if args.at.admin.is_none() {
        let named = args.at.socket.is_some();
        if let Ok(socket) = control_socket(args.at.socket.clone(), &args.at.config) {
            let target = Target::Unix(socket);
            match client::request(&target, "GET", "/status", Duration::from_secs(5)) {
                Ok(r) => return show_status(&target, r, args.json),
                Err(e) if named => {
                    eprintln!("forkyard status: {}", error_chain(&e));
                    return ExitCode::FAILURE;
                }
                // Not reachable (another user's socket, a stale one): ask TCP.
                Err(_) => {}
            }
        }
    }
    let admin = admin_address(args.at.admin, &args.at.config);
    let target = Target::Tcp(admin.clone());
    match client::request(&target, "GET", "/status", Duration::from_secs(5)) {
        Ok(r) => show_status(&target, r, args.json),
        Err(e) => {
            eprintln!("forkyard status: {}; is forkyard running with admin.listen {admin}? (use --admin ADDR)", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The admin listener's address for `forkyard status` and `events`: `--admin`, else
/// `admin.listen` of the config (an all-interfaces address is reached on
/// loopback), else 127.0.0.1:9090.
fn admin_address(admin: Option<String>, config: &Path) -> String {
    admin.unwrap_or_else(|| match config_if_valid(config) {
        Some(c) => {
            let mut addr = c.admin.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            addr.to_string()
        }
        None => DEFAULT_ADMIN.to_owned(),
    })
}

/// `forkyard events`: follow GET /events over the control socket (when it can be
/// found and reached) or the admin listener, printing each event.
fn events(args: EventsArgs) -> ExitCode {
    let path = format!("/events?replay={}", args.replay);
    let mut targets = Vec::new();
    let named_socket = args.at.socket.is_some();
    if args.at.admin.is_none() {
        if let Ok(socket) = control_socket(args.at.socket.clone(), &args.at.config) {
            targets.push(Target::Unix(socket));
        }
    }
    if !named_socket {
        targets.push(Target::Tcp(admin_address(
            args.at.admin.clone(),
            &args.at.config,
        )));
    }
    let json = args.json;
    let mut print = |m: client::Message| {
        let line = if json {
            m.data
        } else {
            client::event_text(&m.data)
        };
        // stdout closed (`| head`): stop quietly.
        writeln!(std::io::stdout(), "{line}").is_ok()
    };
    let mut last_error = None;
    for (i, target) in targets.iter().enumerate() {
        let last = i + 1 == targets.len();
        match client::follow(
            target,
            &path,
            Duration::from_secs(5),
            Duration::from_secs(45),
            &mut print,
        ) {
            Ok(client::StreamEnd::Ended | client::StreamEnd::Stopped) => return ExitCode::SUCCESS,
            Ok(client::StreamEnd::Closed) => {
                eprintln!(
                    "forkyard events: the stream from {target} broke off without forkyard stopping (forkyard was killed, or cut this reader off for falling behind)"
                );
                return ExitCode::FAILURE;
            }
            // Not reachable there (another user's socket, a stale one): the next.
            Err(
                e @ (client::ClientError::Connect { .. } | client::ClientError::Resolve { .. }),
            ) if !last => {
                last_error = Some(e);
            }
            Err(e) => {
                let hint = match e {
                    client::ClientError::Connect { .. } => {
                        "; is forkyard running? (use --admin ADDR or --socket PATH)"
                    }
                    _ => "",
                };
                eprintln!("forkyard events: {}{hint}", error_chain(&e));
                return ExitCode::FAILURE;
            }
        }
    }
    match last_error {
        Some(e) => eprintln!("forkyard events: {}", error_chain(&e)),
        None => eprintln!("forkyard events: no control socket or admin address to ask (use --admin ADDR or --socket PATH)"),
    }
    ExitCode::FAILURE
}

/// Print a `/status` answer from `target` as the table (or JSON), and exit as
/// `forkyard status` does.
fn show_status(target: &Target, response: client::Response, json: bool) -> ExitCode {
    if response.status != 200 {
        eprintln!(
            "forkyard status: {target} answered {}: {}",
            response.status,
            response.body.trim()
        );
        return ExitCode::FAILURE;
    }
    let report: forkyard::StatusReport = match serde_json::from_str(&response.body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("forkyard status: {target} did not answer a status document: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        print!("{}", response.body);
    } else {
        print!("{}", forkyard::status_table(&report));
    }
    if report.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_READY)
    }
}

fn probe(args: ProbeArgs) -> ExitCode {
    match forkyard::client::get(&args.url, args.timeout) {
        Ok(r) if (200..300).contains(&r.status) => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!(
                "forkyard probe: {} answered {}: {}",
                args.url,
                r.status,
                r.body.trim()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("forkyard probe: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_str = c.to_string();
        if !s.contains(&c_str) {
            s.push_str(": ");
            s.push_str(&c_str);
        }
        cur = c.source();
    }
    s
}
