//! `sessiongate serve` / `sessiongate check`.

use clap::{Parser, Subcommand};
use sessiongate::config::{env::ProcessEnv, Config, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "config/sessiongate.toml";

/// jemalloc, not the system allocator: under glibc's malloc every idle keep-alive connection
/// kept ~80 KiB resident and a connection spike's memory never came back; under jemalloc
/// (then with a 16 KiB `connections.read_buffer_bytes`) ~37 KiB, returned to the OS within
/// seconds of the connections closing (`benches/idle_conns.py`, docs/benchmarks.md).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Authentication gateway in front of Hasura GraphQL Engine or any HTTP backend.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file (with environment overrides) and exit.
    Check {
        /// Config file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// Crates that print wire data at debug or trace level: request targets with their query,
/// header blocks (the admin token, the minted Hasura JWT), bodies with tokens (pingora-core
/// 0.9.1: `apps/http_app.rs` traces every request header, `protocols/http/v1/client.rs`
/// every upstream request header). They stay at
/// `info` whatever `RUST_LOG` asks: the clamp is a filter of its own, ANDed with `RUST_LOG`'s,
/// so no more specific directive there can lift it (CWE-532).
const WIRE_LOGGERS: &[&str] = &[
    "pingora_core",
    "pingora_proxy",
    "pingora_http",
    "h2",
    "redis",
];

fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let most_verbose = filter.max_level_hint();
    let clamp = WIRE_LOGGERS
        .iter()
        .fold(
            Targets::new().with_default(LevelFilter::TRACE),
            |t, name| t.with_target(*name, LevelFilter::INFO),
        )
        // h2 warns on every PING ack it never asked for: a client could write a log line
        // per 17 bytes it sends. Its errors still show.
        .with_target("h2", LevelFilter::ERROR);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let layer = tracing_subscriber::fmt::layer().with_ansi(ansi);
    let registry = tracing_subscriber::registry();
    // One filter (both ANDed), not two nested ones: with nested per-layer filters the
    // subscriber answered "enabled" for `debug` callsites that no layer would print, so
    // `tracing::enabled!` (which decides whether a request builds its span) was always true
    // and the global level hint stayed at TRACE.
    let _ = match format {
        LogFormat::Text => registry
            .with(layer.with_filter(filter.and(clamp)))
            .try_init(),
        LogFormat::Json => registry
            .with(layer.json().with_filter(filter.and(clamp)))
            .try_init(),
    };
    // `try_init` lets every `log` record through to the bridge (the clamp's default is
    // TRACE), so each of Pingora's per-request `debug!`/`trace!` calls was built and then
    // filtered out: 3 % of a proxied request's CPU. `log`'s own static level check is free;
    // give it the most verbose level `RUST_LOG` can let through.
    log::set_max_level(match most_verbose {
        Some(level) => tracing_log::AsLog::as_log(&level),
        None => log::LevelFilter::Trace,
    });
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path, &ProcessEnv).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        // EX_CONFIG
        ExitCode::from(78)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(&config) {
            Ok(cfg) => {
                for key in cfg.development_credentials() {
                    eprintln!("warning: {key} holds a shipped development credential");
                }
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve { config } => {
            let cfg = match load(&config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            init_logging(cfg.log_format);
            for key in cfg.development_credentials() {
                tracing::warn!(
                    key,
                    "DEVELOPMENT credential in use: public, never use it in production"
                );
            }
            let app = match sessiongate::build_app(cfg) {
                Ok(app) => app,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    return ExitCode::FAILURE;
                }
            };
            match sessiongate::run(app) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
