//! Command-line plumbing every tool shares: the common flags (one
//! `#[command(flatten)]` struct), exit codes, logging to stderr, and how a
//! failure is shown to a person.

use std::io::BufRead;
use std::path::PathBuf;

use crate::http::RetryPolicy;
use crate::oci::credentials::Credential;
use crate::oci::registry::RegistryOptions;

/// Exit codes, the same for every tool (listed in each `--help`).
pub mod exit {
    /// Every record succeeded.
    pub const SUCCESS: u8 = 0;
    /// At least one record failed; it was emitted as an error record.
    pub const FAILED: u8 = 1;
    /// Usage error or unreadable input (the message names the line).
    pub const USAGE: u8 = 2;
}

/// Ends a tool's `main`: the exit code of a run, or `TOOL: error: …` (with
/// its causes, for anyhow errors) on stderr and exit 2.
pub fn exit_with(tool: &str, result: Result<u8, impl std::fmt::Display>) -> std::process::ExitCode {
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(error) => {
            eprintln!("{tool}: error: {error:#}");
            std::process::ExitCode::from(exit::USAGE)
        }
    }
}

/// The exit-code table for `after_help`.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0  every record succeeded
  1  at least one record failed (it was written out as an error record)
  2  usage error or unreadable input (the message names the line)";

/// Flags shared by every tool: registry access, concurrency, verbosity.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Allow plain HTTP (and self-signed TLS is still refused) for this
    /// registry host[:port]. Loopback registries may always use HTTP.
    #[arg(long = "insecure-registry", value_name = "HOST", global = true)]
    pub insecure_registries: Vec<String>,

    /// Trust the CA certificates in this PEM file too (repeatable).
    #[arg(long = "ca-file", value_name = "PEM", global = true)]
    pub ca_files: Vec<PathBuf>,

    /// Registry user name; the password comes from --password-stdin or
    /// OS_REGISTRY_PASSWORD. Applies to every registry the run contacts;
    /// use the auth file for per-registry credentials.
    #[arg(long, env = "OS_REGISTRY_USERNAME", value_name = "USER", global = true)]
    pub username: Option<String>,

    /// Read the registry password from the first line of stdin (references
    /// then come from the arguments).
    #[arg(long, requires = "username", global = true)]
    pub password_stdin: bool,

    /// How many records (and requests) to work on at once.
    #[arg(short = 'j', long, default_value_t = 8, value_name = "N", global = true,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,

    /// More detail on stderr (-v: each step, -vv: each request).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("--password-stdin: could not read the password from stdin: {0}")]
    PasswordUnreadable(std::io::Error),
    #[error("--password-stdin: stdin held no password")]
    PasswordEmpty,
    #[error("--username {0:?} needs a password: use --password-stdin or set OS_REGISTRY_PASSWORD")]
    PasswordMissing(String),
}

impl CommonArgs {
    /// Registry options from the flags; reads the password from `stdin`
    /// when `--password-stdin` is given (so call it before reading records).
    pub fn registry_options(&self, stdin: &mut impl BufRead) -> Result<RegistryOptions, UsageError> {
        let credential = match &self.username {
            None => None,
            Some(username) => {
                let password = if self.password_stdin {
                    let mut line = String::new();
                    stdin
                        .read_line(&mut line)
                        .map_err(UsageError::PasswordUnreadable)?;
                    let password = line.trim_end_matches(['\n', '\r']).to_string();
                    if password.is_empty() {
                        return Err(UsageError::PasswordEmpty);
                    }
                    password
                } else {
                    std::env::var("OS_REGISTRY_PASSWORD")
                        .ok()
                        .filter(|p| !p.is_empty())
                        .ok_or_else(|| UsageError::PasswordMissing(username.clone()))?
                };
                Some(Credential::Basic {
                    username: username.clone(),
                    password,
                })
            }
        };
        Ok(RegistryOptions {
            insecure_registries: self.insecure_registries.clone(),
            ca_files: self.ca_files.clone(),
            credential,
            retry: RetryPolicy::default(),
        })
    }

    /// Logs go to stderr; stdout carries records only.
    pub fn init_logging(&self) {
        let level = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            (false, _) => "debug",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_env("OS_LOG")
            // -vv is about our requests, not hyper's connection pool.
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("os_core={level},warn")));
        use std::io::IsTerminal as _;
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .without_time()
            .try_init();
    }
}

/// Why a whole run could not start or finish (as opposed to one record
/// failing, which is an error record). Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Flags(#[from] UsageError),
    #[error(transparent)]
    Registry(#[from] crate::oci::registry::RegistryError),
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

/// The process's async runtime: key loading (Azure Key Vault) and the
/// record stream share it, so the HTTP clients made while loading keys keep
/// their connection pools. A few workers are plenty for I/O-bound work on a
/// CI agent.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("the tokio runtime starts")
    })
}

/// clap value parser for `KEY=VALUE` flags (`-a`, `--annotation`,
/// `--identity-remap`).
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}
