//! The command line, and the only module that names clap: the flags every
//! tool shares (one `#[command(flatten)]` struct), the library's choices as
//! clap values, `--help`'s exit-code table, logging to stderr, and how a
//! failure is shown to a person. Everything here turns flags into the
//! library's own options; nothing below it sees a flag.

use std::fmt::Display;
use std::io::{BufRead, IsTerminal as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::builder::PossibleValue;

use crate::azure::{CredentialKind, RegistrySignIn};
use crate::http::RetryPolicy;
use crate::oci::credentials::Credential;
use crate::oci::registry::{EntraSignIn, RegistryOptions};
use crate::pipeline::{RunOptions, Step, driver, exit};
use crate::steps::import::Via;
use crate::steps::sign::Storage;
use crate::steps::verify::Identity;

/// A step tool's whole `main` once its flags are parsed: logging, the run's
/// options from the common flags (the password read from stdin first, with
/// `--password-stdin`), then `step` over the records. `references` are the
/// arguments; without them the inputs come from stdin.
pub fn run_step<S: Step>(common: &CommonArgs, references: Vec<String>, step: S) -> ExitCode {
    run_step_with(common, references, |_| Ok::<S, std::convert::Infallible>(step))
}

/// [`run_step`] for a step made from the run's options, or whose making
/// may fail (loading keys): a failure is exit 2 with its message.
pub fn run_step_with<S: Step, E: Display>(
    common: &CommonArgs,
    references: Vec<String>,
    make: impl FnOnce(&RunOptions) -> Result<S, E>,
) -> ExitCode {
    common.init_logging();
    if references.is_empty() && !common.password_stdin && std::io::stdin().is_terminal() {
        eprintln!(
            "{}: reading references or records from stdin (Ctrl-D to end; --help for usage)",
            S::TOOL
        );
    }
    let mut stdin = std::io::BufReader::new(std::io::stdin());
    let result = (|| -> Result<u8, String> {
        let options = common
            .run_options(&mut stdin, !references.is_empty())
            .map_err(|e| e.to_string())?;
        let step = make(&options).map_err(|e| format!("{e:#}"))?;
        let mut stdout = std::io::stdout().lock();
        driver::run_step(step, options, references, stdin, &mut stdout).map_err(|e| e.to_string())
    })();
    exit_with(S::TOOL, result)
}

/// Ends a tool's `main`: the exit code of a run, or `TOOL: error: …` (with
/// its causes, for anyhow errors) on stderr and exit 2.
pub fn exit_with(tool: &str, result: Result<u8, impl Display>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("{tool}: error: {error:#}");
            ExitCode::from(exit::USAGE)
        }
    }
}

/// `after_help`: the examples (one command a line), then the exit-code
/// table every record tool shares.
pub fn after_help(examples: &str) -> String {
    after_help_with(examples, &exit::TABLE)
}

/// `after_help` with a tool's own reading of the exit codes (os-deploy's 1
/// means nothing was deployed).
pub fn after_help_with(examples: &str, table: &[(u8, &str)]) -> String {
    let mut text = String::from("Examples:");
    for line in examples.lines().filter(|line| !line.trim().is_empty()) {
        text.push_str(&format!("\n  {}", line.trim()));
    }
    text.push_str("\n\nExit status:");
    for (code, meaning) in table {
        let meaning = meaning.replace('\n', "\n     ");
        text.push_str(&format!("\n  {code}  {meaning}"));
    }
    text
}

/// The library's choices as clap values: each type lists its variants
/// (`ALL`) with their flag names and help (`name`, `help`).
macro_rules! value_enums {
    ($($choice:ty),*) => {$(
        impl clap::ValueEnum for $choice {
            fn value_variants<'a>() -> &'a [Self] {
                &<$choice>::ALL
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(PossibleValue::new(self.name()).help(self.help()))
            }
        }
    )*};
}
value_enums!(CredentialKind, Storage, Identity, Via);

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

    /// Which Azure credential the tool uses: for azurekms:// keys, for
    /// Resource Manager, and to sign in to Azure Container Registries that
    /// no docker credential covers (auto tries environment,
    /// workload-identity, managed-identity, azure-cli in turn).
    #[arg(long, value_enum, value_name = "KIND", default_value_t = CredentialKind::Auto, global = true)]
    pub azure_credential: CredentialKind,

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
    #[error("with --password-stdin, stdin holds the password: give the references as arguments")]
    PasswordStdinWithoutArguments,
}

impl CommonArgs {
    /// The run's options from the flags; reads the password from `stdin`
    /// when `--password-stdin` is given (so call it before reading records,
    /// which must then come from the arguments).
    pub fn run_options(
        &self,
        stdin: &mut impl BufRead,
        has_arguments: bool,
    ) -> Result<RunOptions, UsageError> {
        if self.password_stdin && !has_arguments {
            return Err(UsageError::PasswordStdinWithoutArguments);
        }
        Ok(RunOptions {
            registry: self.registry_options(stdin)?,
            jobs: self.jobs.into(),
            quiet: self.quiet,
        })
    }

    fn registry_options(&self, stdin: &mut impl BufRead) -> Result<RegistryOptions, UsageError> {
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
            entra: Some(EntraSignIn(Arc::new(RegistrySignIn::new(self.azure_credential)))),
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
            .unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!("os_core={level},os_oci={level},warn"))
            });
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

/// clap value parser for `KEY=VALUE` flags (`-a`, `--annotation`,
/// `--identity-remap`).
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// A duration flag, as kubectl writes them: `300s`, `5m`, `1h30m`, `90`
/// (seconds); and `7d` (days).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let bad = || format!("expected a duration like 300s, 5m or 1h30m, got {text:?}");
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let value: u64 = number.parse().map_err(|_| bad())?;
        total = total.saturating_add(value.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn durations_parse_like_kubectl() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        for bad in ["", "5x", "m", "0s", "5m3"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn help_lists_the_exit_codes_after_the_examples() {
        let help = after_help("os-x a\n  os-x b");
        assert!(
            help.starts_with("Examples:\n  os-x a\n  os-x b\n\nExit status:\n  0  every record succeeded\n")
        );
        assert!(help.ends_with("  2  usage error or unreadable input (the message names the line)"));
        let deploy = after_help_with("  os-x", &[(1, "nothing was deployed:\nsee why")]);
        assert!(
            deploy.ends_with("  1  nothing was deployed:\n     see why"),
            "{deploy}"
        );
    }
}
