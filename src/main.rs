//! The `forkyard` command: parse the CLI, load the config, run, map errors to exit
//! codes (78 for a bad config, 1 for any other start-up failure, 0 after a clean
//! shutdown).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: Pingora allocates and frees many small
/// buffers per request, and this cut the proxy's CPU per request (see
/// bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits EX_CONFIG: the configuration is invalid.
const EXIT_CONFIG: u8 = 78;

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
    Run(ConfigArg),
    /// Validate the config and print the resolved plan, then exit.
    Check(ConfigArg),
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The config file.
    #[arg(short, long, env = "FORKYARD_CONFIG", default_value = "config.yaml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(arg) => match forkyard::config::load(&arg.config) {
            Ok(config) => {
                print!("{}", forkyard::plan::describe(&config));
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
        Command::Run(arg) => {
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
            match forkyard::server::run(config) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    tracing::error!("{}", error_chain(&e));
                    eprintln!("forkyard: {}", error_chain(&e));
                    ExitCode::FAILURE
                }
            }
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
