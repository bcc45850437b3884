//! `bench-env`: the fixtures of `scripts/bench`, from the same code the
//! end-to-end suite uses (os-testkit): throwaway registries and the
//! deterministic images pushed into them.
//!
//! It prints what the script needs as `key=value` lines on stdout (read them
//! with `while IFS='=' read -r key value`), and diagnostics on stderr.
//!
//! `bench-env registries NAME...` is the one long-lived command: it starts a
//! registry per NAME, prints their `NAME_host`, `NAME_pid`, `NAME_dir`, then
//! `ready`, and serves until its stdin reaches end of file (the script closes
//! it, or the script died: either way nothing is left behind), then stops
//! the registries and removes their storage. It leaves the terminal's
//! process group, so a Ctrl-C stops the script, and the script stops it.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use os_testkit::images;
use os_testkit::push;
use os_testkit::registry::{Options, TestRegistry};

#[derive(Parser)]
#[command(about = "Registries and images for scripts/bench (from os-testkit)")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts one plain-HTTP registry per NAME on 127.0.0.1 (warnings-only
    /// log, no access log), prints NAME_host, NAME_pid, NAME_dir and `ready`,
    /// and keeps them until stdin is closed.
    Registries {
        /// Parent directory of the registries' config, storage and log
        /// (the system's temp dir when not given).
        #[arg(long)]
        storage_dir: Option<PathBuf>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Builds the deterministic single-platform image of SEED and pushes it
    /// to HOST/REPO under PREFIX1..PREFIXCOUNT (blobs once, the same
    /// manifest under every tag). Prints `digest` and `manifest_size`.
    PushTags {
        #[command(flatten)]
        target: Target,
    },
    /// Pushes COUNT different manifests of SEED's image (the same blobs, one
    /// annotation apart) to HOST/REPO:PREFIX1..PREFIXCOUNT. Prints
    /// `HOST/REPO:TAG DIGEST` per image, then `manifest_size` of the first.
    PushVariants {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
struct Target {
    /// The registry, 127.0.0.1:PORT.
    #[arg(long)]
    host: String,
    #[arg(long)]
    repo: String,
    /// Tags are PREFIX1..PREFIXCOUNT.
    #[arg(long)]
    prefix: String,
    #[arg(long)]
    count: usize,
    /// What the image's content derives from (same seed, same bytes).
    #[arg(long, default_value = "app")]
    seed: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-env: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match command {
        Command::Registries { storage_dir, names } => {
            // Out of the terminal's process group (the registries inherit
            // ours): a Ctrl-C must not kill us before we clean up.
            // SAFETY: setpgid on ourselves has no memory-safety conditions.
            unsafe { libc::setpgid(0, 0) };
            let options = Options {
                parent: storage_dir,
                quiet: true,
            };
            let mut registries = Vec::new();
            for name in &names {
                let registry = TestRegistry::start_with_options(&options);
                writeln!(out, "{name}_host={}", registry.host())?;
                writeln!(out, "{name}_pid={}", registry.pid())?;
                writeln!(out, "{name}_dir={}", registry.work_dir().display())?;
                registries.push(registry);
            }
            writeln!(out, "ready")?;
            out.flush()?;
            drop(out);
            // Until end of file; whatever arrives is ignored.
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            drop(registries);
            Ok(())
        }
        Command::PushTags { target } => {
            let (_dir, image) = build(&target)?;
            let tags: Vec<String> = (1..=target.count)
                .map(|i| format!("{}{i}", target.prefix))
                .collect();
            push::push_tags(&image, &target.host, &target.repo, &tags)?;
            writeln!(out, "digest={}", image.digest)?;
            writeln!(out, "manifest_size={}", image.size)
        }
        Command::PushVariants { target } => {
            let (_dir, image) = build(&target)?;
            let pushed =
                push::push_variants(&image, &target.host, &target.repo, &target.prefix, target.count)?;
            for (reference, digest) in &pushed {
                writeln!(out, "{reference} {digest}")?;
            }
            Ok(())
        }
    }
}

/// The image of `target.seed`, in a temporary layout (removed with the guard).
fn build(target: &Target) -> io::Result<(tempfile::TempDir, images::TestImage)> {
    let dir = tempfile::Builder::new()
        .prefix("onestream-bench-image-")
        .tempdir()?;
    let image = images::single_arch(dir.path(), "1.0.0", &target.seed);
    Ok((dir, image))
}
