//! `os-sign`: cosign-compatible signatures for artifact records.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use os_core::cli::{self, CommonArgs, key_value};
use os_core::pipeline::{exit, runtime};
use os_core::signing::key::{KeyRef, Password, Signer};
use os_core::steps::attest::{AttestOptions, Attesting};
use os_core::steps::sign::{self, SignOptions, Signing, Storage};

/// Sign each record's digest the way `cosign sign --key` does, and pass the
/// record on with a `sign` event.
///
/// By default the signature is stored next to the image as the tag
/// sha256-<hex>.sig (what cosign 2, skopeo, podman and policy-controller
/// read); --storage referrers attaches a Sigstore bundle as an OCI 1.1
/// referrer instead (cosign 3's default). Signing the same digest again
/// with the same key and annotations adds nothing.
#[derive(Debug, Parser)]
#[command(name = sign::TOOL, version, after_help = cli::after_help(EXAMPLES), args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Private key: a cosign key file (password from COSIGN_PASSWORD or a
    /// prompt), env://VAR holding the PEM, or azurekms://VAULT_HOST/KEY[/VERSION]
    /// (Azure Key Vault signs; the private key never leaves it).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,

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
    /// Attach a signed in-toto attestation about each record's digest, as
    /// `cosign attest --key` does: a DSSE envelope appended to the
    /// sha256-<hex>.att manifest. The key is decrypted once for the whole
    /// stream; attesting the same predicate again with the same key adds
    /// nothing.
    Attest {
        /// The predicate type: one of cosign's names (slsaprovenance,
        /// slsaprovenance1, spdxjson, cyclonedx, vuln, openvex, link,
        /// custom) or any URI.
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,

        /// The predicate, a JSON file (not `-`: stdin carries the records).
        /// Without it, --type slsaprovenance1 builds SLSA provenance v1 for
        /// each record from the CI host's variables and the record's source.
        #[arg(long, value_name = "FILE")]
        predicate: Option<PathBuf>,

        /// Private key, as for signing (file, env://VAR, azurekms://…).
        #[arg(long, value_name = "KEY")]
        key: String,

        /// Where the attestation goes: tag (cosign 2's sha256-<hex>.att) or
        /// referrers (a Sigstore bundle referrer, as cosign attest
        /// --new-bundle-format writes).
        #[arg(long, value_enum, default_value_t = Storage::Tag)]
        storage: Storage,

        /// Image references to attest ad hoc (resolved to digests first).
        #[arg(value_name = "REFERENCE")]
        references: Vec<String>,
    },
    /// Print the PEM public key of any key source.
    PublicKey {
        #[arg(long, value_name = "KEY")]
        key: String,
    },
}

const EXAMPLES: &str = "\
  COSIGN_PASSWORD=… os-sign generate-key-pair
  os-sign public-key --key cosign.key > cosign.pub
  os-digest dev.example.com/iam:1.4.2 | os-sign --key cosign.key -a pipeline=iam-ci | os-verify --key cosign.pub
  … | os-sign --key cosign.key | os-sign attest --type slsaprovenance1 --predicate provenance.json --key cosign.key
  os-sign --key env://COSIGN_PRIVATE_KEY dev.example.com/iam@sha256:…
  os-sign --key azurekms://onestream-kv.vault.azure.net/cosign --azure-credential workload-identity < records";

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::GenerateKeyPair { output_key_prefix }) => {
            args.common.init_logging();
            cli::exit_with(
                sign::TOOL,
                sign::write_key_pair(&output_key_prefix).map(|()| exit::SUCCESS),
            )
        }
        Some(Command::Attest {
            kind,
            predicate,
            key,
            storage,
            references,
        }) => cli::run_step_with(&args.common, references, |_| -> anyhow::Result<Attesting> {
            let options = AttestOptions::load(&kind, predicate.as_deref(), storage)?;
            let key: KeyRef = key.parse()?;
            let signer = runtime().block_on(Signer::load(
                &key,
                &Password::EnvOrPrompt,
                args.common.azure_credential,
            ))?;
            Ok(Attesting { signer, options })
        }),
        Some(Command::PublicKey { key }) => {
            args.common.init_logging();
            let exported = sign::public_key_pem(&key, args.common.azure_credential).map(|exported| {
                print!("{}", exported.pem);
                if let Some(note) = exported.note {
                    eprintln!("{}: note: {note}", sign::TOOL);
                }
                exit::SUCCESS
            });
            cli::exit_with(sign::TOOL, exported)
        }
        None => cli::run_step_with(&args.common, args.references, |_| -> anyhow::Result<Signing> {
            let key = args.key.context("--key is required to sign (see --help)")?;
            let key: KeyRef = key.parse()?;
            let signer = runtime().block_on(Signer::load(
                &key,
                &Password::EnvOrPrompt,
                args.common.azure_credential,
            ))?;
            let options = SignOptions {
                annotations: args.annotations.into_iter().collect::<BTreeMap<_, _>>(),
                storage: args.storage,
            };
            Ok(Signing { signer, options })
        }),
    }
}
