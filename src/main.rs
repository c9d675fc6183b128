//! The `forkyard` command: parse the CLI, load the config, run, map errors to exit
//! codes (78 for a bad config, 1 for any other start-up failure, 0 after a clean
//! shutdown; the full table is in README.md, "Exit codes"). Also the small client
//! commands: `status`, `probe` and `schema`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

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
    Check(ConfigArg),
    /// Print the workers table of a running forkyard (from its admin /status).
    ///
    /// Exits 0 when forkyard is ready, 3 when it answers but is not ready, 1 when
    /// it cannot be reached.
    Status(StatusArgs),
    /// GET a URL and exit 0 on a 2xx answer, 1 otherwise (for container
    /// HEALTHCHECKs in images without curl).
    Probe(ProbeArgs),
    /// Print the JSON Schema of config.yaml (for editors; also in docs/config.schema.json).
    Schema,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The admin address (IP:port). Default: `admin.listen` of the config file if
    /// it loads, else 127.0.0.1:9090.
    #[arg(long, env = "FORKYARD_ADMIN")]
    admin: Option<String>,
    /// The config file that names the admin address when --admin is not given.
    #[arg(short, long, env = "FORKYARD_CONFIG", default_value = "config.yaml")]
    config: PathBuf,
    /// Print the raw /status JSON instead of the table.
    #[arg(long)]
    json: bool,
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

fn main() -> ExitCode {
    // Each worker process starts here first (see `process::child`); keep it before
    // any other work so the fresh image stays minimal.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__child") {
        forkyard::child_main();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Status(args) => status(args),
        Command::Probe(args) => probe(args),
        Command::Schema => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{}", forkyard::config::json_schema()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Command::Check(arg) => match forkyard::config::load(&arg.config) {
            Ok(config) => {
                print!("{}", forkyard::describe_plan(&config));
                let as_root = nix::unistd::geteuid().is_root();
                for w in forkyard::security_warnings(&config, as_root) {
                    eprintln!("warning: {}", w.message);
                }
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!(
                    "forkyard: {} problem(s) in {}",
                    errors.0.len(),
                    arg.config.display()
                );
                ExitCode::from(EXIT_CONFIG)
            }
        },
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

fn status(args: StatusArgs) -> ExitCode {
    let admin = args
        .admin
        .unwrap_or_else(|| match forkyard::config::load(&args.config) {
            Ok(c) => {
                let mut addr = c.admin.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                addr.to_string()
            }
            Err(_) => DEFAULT_ADMIN.to_owned(),
        });
    let url = format!("http://{admin}/status");
    let response = match forkyard::client::get(&url, Duration::from_secs(5)) {
        Ok(r) if r.status == 200 => r,
        Ok(r) => {
            eprintln!(
                "forkyard status: {url} answered {}: {}",
                r.status,
                r.body.trim()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("forkyard status: {}; is forkyard running with admin.listen {admin}? (use --admin ADDR)", error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let report: forkyard::StatusReport = match serde_json::from_str(&response.body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("forkyard status: {url} did not answer a status document: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
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
