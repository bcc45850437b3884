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
//! With `--control SOCKET` it also listens there: `bench-env restart
//! --control SOCKET NAME` (from any process, e.g. hyperfine's --prepare)
//! replaces registry NAME by a fresh one on empty storage and prints its
//! new `NAME_host`, `NAME_pid`, `NAME_dir`.
//!
//! The images: `push-tags` (one image under many tags), `push-variants`
//! (images one annotation apart), `push-set` (images of generated layers,
//! `REPO DIGEST` lines) and `mount-set` (a pushed set copied to repositories
//! of their own in the same registry, by mounting its blobs).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

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
        /// A Unix socket to listen on for `restart` (removed at the end).
        #[arg(long)]
        control: Option<PathBuf>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Asks the `registries --control SOCKET` process to replace registry
    /// NAME by a fresh, empty one; prints its NAME_host, NAME_pid, NAME_dir.
    Restart {
        #[arg(long)]
        control: PathBuf,
        name: String,
    },
    /// Pushes COUNT single-platform images to HOST/PREFIX/svc1..COUNT:TAG,
    /// each of the LAYERs given (SEED:BYTES; `@` in a seed becomes the
    /// image's number: `x-@:8` is each image's own, `base:8` shared by all).
    /// Layers are generated and streamed (AES-128-CTR keystream of the
    /// seed), a layer pushed before is mounted. Prints `REPO DIGEST` lines.
    PushSet {
        #[arg(long)]
        host: String,
        /// Repositories are PREFIX/svc1..PREFIX/svcCOUNT.
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value = "1.0.0")]
        tag: String,
        #[arg(long = "layer", required = true)]
        layers: Vec<String>,
    },
    /// Copies the images of a pushed set, HOST/FROM/svc1..COUNT:TAG, to
    /// HOST/TO/svc1..COUNT:TAG inside the registry: their blobs mounted from
    /// FROM/svcN, the same manifest bytes pushed (the same digests). Prints
    /// `REPO DIGEST` lines, as push-set does.
    MountSet {
        #[arg(long)]
        host: String,
        /// The pushed set's prefix (push-set's --prefix).
        #[arg(long)]
        from: String,
        /// The new repositories are TO/svc1..TO/svcCOUNT.
        #[arg(long)]
        to: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value = "1.0.0")]
        tag: String,
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
    /// `HOST/REPO:TAG DIGEST` per image.
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
        Command::Registries {
            storage_dir,
            control,
            names,
        } => {
            // Out of the terminal's process group (the registries inherit
            // ours): a Ctrl-C must not kill us before we clean up.
            // SAFETY: setpgid on ourselves has no memory-safety conditions.
            unsafe { libc::setpgid(0, 0) };
            let options = Options {
                parent: storage_dir,
                quiet: true,
            };
            let registries = Arc::new(Mutex::new(Vec::new()));
            for name in &names {
                let registry = TestRegistry::start_with_options(&options);
                write_registry(&mut out, name, &registry)?;
                registries.lock().unwrap().push((name.clone(), registry));
            }
            let listener = match &control {
                Some(path) => Some(UnixListener::bind(path)?),
                None => None,
            };
            if let Some(listener) = listener {
                let registries = Arc::clone(&registries);
                std::thread::spawn(move || {
                    for connection in listener.incoming().flatten() {
                        if let Err(e) = serve_restart(connection, &registries, &options) {
                            eprintln!("bench-env: restart: {e}");
                        }
                    }
                });
            }
            writeln!(out, "ready")?;
            out.flush()?;
            drop(out);
            // Until end of file; whatever arrives is ignored.
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            registries.lock().unwrap().clear();
            if let Some(path) = &control {
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Command::Restart { control, name } => {
            let mut stream = UnixStream::connect(&control)?;
            writeln!(stream, "restart {name}")?;
            stream.shutdown(std::net::Shutdown::Write)?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            if !answer.ends_with("ready\n") {
                return Err(io::Error::other(format!("restarting {name}: {}", answer.trim())));
            }
            out.write_all(answer.trim_end_matches("ready\n").as_bytes())
        }
        Command::PushSet {
            host,
            prefix,
            count,
            tag,
            layers,
        } => {
            let mut specs = Vec::new();
            for layer in &layers {
                let (seed, size) = layer
                    .rsplit_once(':')
                    .and_then(|(seed, size)| Some((seed, size.parse::<u64>().ok()?)))
                    .ok_or_else(|| io::Error::other(format!("--layer {layer}: not SEED:BYTES")))?;
                specs.push((seed.to_string(), size));
            }
            let mut pushed = HashMap::new();
            for i in 1..=count {
                let repo = format!("{prefix}/svc{i}");
                let image: Vec<push::Layer> = specs
                    .iter()
                    .map(|(seed, size)| push::Layer {
                        seed: seed.replace('@', &i.to_string()),
                        size: *size,
                    })
                    .collect();
                let digest = push::push_generated(&host, &repo, &tag, &image, &mut pushed)?;
                writeln!(out, "{repo} {digest}")?;
            }
            Ok(())
        }
        Command::MountSet {
            host,
            from,
            to,
            count,
            tag,
        } => {
            for i in 1..=count {
                let repo = format!("{to}/svc{i}");
                let digest = push::mount_image(&host, &format!("{from}/svc{i}"), &repo, &tag)?;
                writeln!(out, "{repo} {digest}")?;
            }
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

/// `NAME_host`, `NAME_pid`, `NAME_dir` of a registry.
fn write_registry(out: &mut dyn Write, name: &str, registry: &TestRegistry) -> io::Result<()> {
    writeln!(out, "{name}_host={}", registry.host())?;
    writeln!(out, "{name}_pid={}", registry.pid())?;
    writeln!(out, "{name}_dir={}", registry.work_dir().display())
}

/// One `restart NAME` on the control socket: the old registry stopped and
/// its storage removed, a new one started; its lines, then `ready`.
fn serve_restart(
    mut connection: UnixStream,
    registries: &Mutex<Vec<(String, TestRegistry)>>,
    options: &Options,
) -> io::Result<()> {
    let mut line = String::new();
    BufReader::new(&connection).read_line(&mut line)?;
    let name = line
        .trim()
        .strip_prefix("restart ")
        .ok_or_else(|| io::Error::other(format!("not a restart: {line:?}")))?;
    let mut registries = registries.lock().unwrap();
    let Some(slot) = registries.iter_mut().find(|(n, _)| n == name) else {
        return writeln!(connection, "no registry called {name}");
    };
    // The new one started, then the old one's process killed and waited
    // for and its directory removed.
    let fresh = {
        let old = std::mem::replace(&mut slot.1, TestRegistry::start_with_options(options));
        drop(old);
        &slot.1
    };
    let mut answer = Vec::new();
    write_registry(&mut answer, name, fresh)?;
    writeln!(answer, "ready")?;
    connection.write_all(&answer)
}

/// The image of `target.seed`, in a temporary layout (removed with the guard).
fn build(target: &Target) -> io::Result<(tempfile::TempDir, images::TestImage)> {
    let dir = tempfile::Builder::new()
        .prefix("onestream-bench-image-")
        .tempdir()?;
    let image = images::single_arch(dir.path(), "1.0.0", &target.seed);
    Ok((dir, image))
}
