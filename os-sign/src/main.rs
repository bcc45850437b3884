//! `os-sign`: cosign-compatible signatures for artifact records.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use os_core::cli::{self, CommonArgs, exit, key_value, runtime};
use os_core::signing::azure::CredentialKind;
use os_core::signing::key::{self, KeyRef, Password, PublicKey, Signer};
use os_core::steps::sign::{self, SignOptions, Storage};
use zeroize::Zeroizing;

/// Sign each record's digest the way `cosign sign --key` does, and pass the
/// record on with a `sign` event.
///
/// By default the signature is stored next to the image as the tag
/// sha256-<hex>.sig (what cosign 2, skopeo, podman and policy-controller
/// read); --storage referrers attaches a Sigstore bundle as an OCI 1.1
/// referrer instead (cosign 3's default). Signing the same digest again
/// with the same key and annotations adds nothing.
#[derive(Debug, Parser)]
#[command(name = "os-sign", version, after_help = AFTER_HELP, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Private key: a cosign key file (password from COSIGN_PASSWORD or a
    /// prompt), env://VAR holding the PEM, or azurekms://VAULT_HOST/KEY[/VERSION]
    /// (Azure Key Vault signs; the private key never leaves it).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,

    /// Which Azure credential reaches an azurekms:// key (auto tries
    /// environment, workload-identity, managed-identity, azure-cli in turn).
    #[arg(long, value_enum, default_value_t = CredentialKind::Auto)]
    azure_credential: CredentialKind,

    /// Annotation to sign along (repeatable); the record's source adds
    /// org.opencontainers.image.revision/source and dev.onestream.run.
    #[arg(short = 'a', long = "annotation", value_name = "KEY=VALUE", value_parser = key_value)]
    annotations: Vec<(String, String)>,

    /// Where the signature goes: tag (cosign 2's sha256-<hex>.sig) or
    /// referrers (cosign 3's Sigstore bundle as an OCI 1.1 referrer).
    #[arg(long, value_enum, default_value_t = Storage::Tag)]
    storage: Storage,

    /// Image references to sign ad hoc (resolved to digests first).
    #[arg(value_name = "REFERENCE")]
    references: Vec<String>,

    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new key pair in cosign's format (cosign.key encrypted with
    /// COSIGN_PASSWORD, mode 0600; cosign.pub). Never overwrites.
    GenerateKeyPair {
        /// File name prefix: writes PREFIX.key and PREFIX.pub.
        #[arg(long, default_value = "cosign", value_name = "PREFIX")]
        output_key_prefix: PathBuf,
    },
    /// Print the PEM public key of any key source.
    PublicKey {
        #[arg(long, value_name = "KEY")]
        key: String,

        /// Which Azure credential reaches an azurekms:// key.
        #[arg(long, value_enum, default_value_t = CredentialKind::Auto)]
        azure_credential: CredentialKind,
    },
}

const AFTER_HELP: &str = "\
Examples:
  COSIGN_PASSWORD=… os-sign generate-key-pair
  os-sign public-key --key cosign.key > cosign.pub
  os-digest dev.example.com/iam:1.4.2 | os-sign --key cosign.key -a pipeline=iam-ci | os-verify --key cosign.pub
  os-sign --key env://COSIGN_PRIVATE_KEY dev.example.com/iam@sha256:…
  os-sign --key azurekms://onestream-kv.vault.azure.net/cosign --azure-credential workload-identity < records

Exit status:
  0  every record succeeded
  1  at least one record failed (it was written out as an error record)
  2  usage error or unreadable input (the message names the line)";

fn main() -> ExitCode {
    let args = Args::parse();
    args.common.init_logging();
    cli::exit_with("os-sign", run(args))
}

fn run(args: Args) -> anyhow::Result<u8> {
    match args.command {
        Some(Command::GenerateKeyPair { output_key_prefix }) => {
            let private = output_key_prefix.with_extension("key");
            let public = output_key_prefix.with_extension("pub");
            let password = match std::env::var("COSIGN_PASSWORD") {
                Ok(password) => Zeroizing::new(password),
                Err(_) => {
                    let first = Zeroizing::new(rpassword::prompt_password("Enter password for private key: ").context(
                        "no COSIGN_PASSWORD and no terminal to ask on: set COSIGN_PASSWORD (it may be empty)",
                    )?);
                    let again = Zeroizing::new(rpassword::prompt_password(
                        "Enter password for private key again: ",
                    )?);
                    anyhow::ensure!(first == again, "the passwords differ");
                    first
                }
            };
            let key_id = key::generate_key_pair(&private, &public, password.as_bytes())?;
            eprintln!("Private key written to {}", private.display());
            eprintln!("Public key written to {} (key id {key_id})", public.display());
            Ok(exit::SUCCESS)
        }
        Some(Command::PublicKey {
            key,
            azure_credential,
        }) => {
            let key: KeyRef = key.parse()?;
            let public =
                runtime().block_on(PublicKey::load(&key, &Password::EnvOrPrompt, azure_credential))?;
            print!("{}", public.to_pem());
            Ok(exit::SUCCESS)
        }
        None => {
            let key = args.key.context("--key is required to sign (see --help)")?;
            let key: KeyRef = key.parse()?;
            let signer =
                runtime().block_on(Signer::load(&key, &Password::EnvOrPrompt, args.azure_credential))?;
            let options = SignOptions {
                annotations: args.annotations.into_iter().collect::<BTreeMap<_, _>>(),
                storage: args.storage,
                tool: concat!("os-sign ", env!("CARGO_PKG_VERSION")).to_string(),
            };
            let stdin = std::io::BufReader::new(std::io::stdin());
            let mut stdout = std::io::stdout().lock();
            Ok(sign::run(
                signer,
                options,
                &args.common,
                args.references,
                stdin,
                &mut stdout,
            )?)
        }
    }
}
