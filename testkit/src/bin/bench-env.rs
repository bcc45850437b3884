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
//! With `--acr NAME=ACR` (and `--control`), registry NAME is also an Azure
//! Container Registry called ACR of one Resource Manager stand-in
//! (`os_testkit::arm`), and clients reach it through a counting proxy
//! (`os_testkit::fault_proxy`, no faults): the stand-in's `loginServer` is
//! the proxy, its own server-side copy goes to the registry directly, so the
//! proxies count exactly what the clients sent and fetched. It prints
//! `NAME_proxy`, `NAME_id` (the ACR's resource id), `arm_endpoint` and the
//! stand-in's Azure environment as `arm_AZURE_*` lines (`--arm-retry-after
//! SECS`: the `Retry-After` its imports answer); restarting NAME
//! also starts a new proxy and a new stand-in (new addresses: all of these
//! printed again). `bench-env counters` prints what each proxy forwarded
//! since the last `bench-env reset` (`NAME_requests`, `NAME_bytes_up`,
//! `NAME_bytes_down`) and the stand-in's `arm_requests` (Entra's token
//! endpoint included); `bench-env log` prints the requests themselves
//! (`NAME METHOD TARGET`, `arm METHOD URL -> STATUS`).
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
use os_testkit::arm::{AcrEntry, ArmConfig, ArmStandIn};
use os_testkit::fault_proxy::FaultProxy;
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
        /// A Unix socket to listen on for `restart`, `counters`, `reset`
        /// and `log` (removed at the end).
        #[arg(long)]
        control: Option<PathBuf>,
        /// Registry NAME is also the ACR called ACR of a Resource Manager
        /// stand-in, reached by clients through a counting proxy (prints
        /// NAME_proxy, NAME_id, arm_endpoint, arm_AZURE_*). Repeatable.
        #[arg(long = "acr", value_name = "NAME=ACR")]
        acrs: Vec<String>,
        /// The stand-in's `Retry-After` on an accepted import and its
        /// polls, in seconds (0, its default, invites back-to-back polls).
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        arm_retry_after: u64,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Asks the `registries --control SOCKET` process to replace registry
    /// NAME by a fresh, empty one; prints its NAME_host, NAME_pid, NAME_dir
    /// (and, for an --acr registry, the new proxy's and stand-in's lines).
    Restart {
        #[arg(long)]
        control: PathBuf,
        name: String,
    },
    /// What the --acr proxies forwarded and the stand-in answered since the
    /// last `reset`: NAME_requests, NAME_bytes_up (client to registry),
    /// NAME_bytes_down, arm_requests.
    Counters {
        #[arg(long)]
        control: PathBuf,
    },
    /// Zeroes the counters (and forgets the logs) of `counters` and `log`.
    Reset {
        #[arg(long)]
        control: PathBuf,
    },
    /// The requests since the last `reset`: `NAME METHOD TARGET` per proxied
    /// request, then `arm METHOD URL -> STATUS` per request to the stand-in.
    Log {
        #[arg(long)]
        control: PathBuf,
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
            acrs,
            arm_retry_after,
            names,
        } => {
            let mut acr_names = Vec::new();
            for acr in &acrs {
                let (name, acr_name) = acr
                    .split_once('=')
                    .filter(|(name, acr_name)| names.contains(&name.to_string()) && !acr_name.is_empty())
                    .ok_or_else(|| {
                        io::Error::other(format!("--acr {acr}: not NAME=ACR of a registry NAME given"))
                    })?;
                acr_names.push((name.to_string(), acr_name.to_string()));
            }
            if !acr_names.is_empty() && control.is_none() {
                return Err(io::Error::other(
                    "--acr needs --control (counters and reset are asked there)",
                ));
            }
            // Out of the terminal's process group (the registries inherit
            // ours): a Ctrl-C must not kill us before we clean up.
            // SAFETY: setpgid on ourselves has no memory-safety conditions.
            unsafe { libc::setpgid(0, 0) };
            let mut fixture = Fixture {
                options: Options {
                    parent: storage_dir,
                    quiet: true,
                },
                registries: Vec::new(),
                acrs: acr_names,
                arm_retry_after,
                proxies: Vec::new(),
                arm: None,
                arm_seen: 0,
            };
            for name in &names {
                let registry = TestRegistry::start_with_options(&fixture.options);
                write_registry(&mut out, name, &registry)?;
                fixture.registries.push((name.clone(), registry));
            }
            if !fixture.acrs.is_empty() {
                for (name, _) in fixture.acrs.clone() {
                    fixture.start_proxy(&name);
                }
                fixture.start_arm();
                fixture.write_acrs(&mut out)?;
            }
            let fixture = Arc::new(Mutex::new(fixture));
            let listener = match &control {
                Some(path) => Some(UnixListener::bind(path)?),
                None => None,
            };
            if let Some(listener) = listener {
                let fixture = Arc::clone(&fixture);
                std::thread::spawn(move || {
                    for connection in listener.incoming().flatten() {
                        if let Err(e) = serve_control(connection, &fixture) {
                            eprintln!("bench-env: control: {e}");
                        }
                    }
                });
            }
            writeln!(out, "ready")?;
            out.flush()?;
            drop(out);
            // Until end of file; whatever arrives is ignored.
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            {
                let mut fixture = fixture.lock().unwrap();
                fixture.arm = None;
                fixture.proxies.clear();
                fixture.registries.clear();
            }
            if let Some(path) = &control {
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Command::Restart { control, name } => {
            let answer = ask(&control, &format!("restart {name}"))?;
            out.write_all(answer.as_bytes())
        }
        Command::Counters { control } => out.write_all(ask(&control, "counters")?.as_bytes()),
        Command::Reset { control } => out.write_all(ask(&control, "reset")?.as_bytes()),
        Command::Log { control } => out.write_all(ask(&control, "log")?.as_bytes()),
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

/// Sends one command line to the control socket; its answer, without the
/// closing `ready` (an answer without it is the error).
fn ask(control: &PathBuf, command: &str) -> io::Result<String> {
    let mut stream = UnixStream::connect(control)?;
    writeln!(stream, "{command}")?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    match answer.strip_suffix("ready\n") {
        Some(lines) => Ok(lines.to_string()),
        None => Err(io::Error::other(format!("{command}: {}", answer.trim()))),
    }
}

/// What `bench-env registries` keeps: the registries, and for `--acr` ones
/// their proxies and the one Resource Manager stand-in.
struct Fixture {
    options: Options,
    registries: Vec<(String, TestRegistry)>,
    /// Registry name → ACR name, as --acr gave them.
    acrs: Vec<(String, String)>,
    /// The stand-in's `Retry-After`, seconds.
    arm_retry_after: u64,
    /// Registry name → the proxy clients reach it through.
    proxies: Vec<(String, FaultProxy)>,
    arm: Option<ArmStandIn>,
    /// The stand-in's requests before the last `reset`.
    arm_seen: usize,
}

impl Fixture {
    fn registry(&self, name: &str) -> Option<&TestRegistry> {
        self.registries.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }

    fn proxy(&self, name: &str) -> &FaultProxy {
        let found = self.proxies.iter().find(|(n, _)| n == name);
        &found.expect("every --acr registry has a proxy").1
    }

    /// A new proxy in front of registry `name` (the old one, if any, stopped).
    fn start_proxy(&mut self, name: &str) {
        let upstream = self
            .registry(name)
            .expect("a registry of --acr")
            .host()
            .to_string();
        let proxy = FaultProxy::to(&upstream);
        self.proxies.retain(|(n, _)| n != name);
        self.proxies.push((name.to_string(), proxy));
    }

    /// A new stand-in over the --acr registries as they are now: login
    /// server the proxy, the copy to the registry itself.
    fn start_arm(&mut self) {
        let entries = self
            .acrs
            .iter()
            .map(|(name, acr)| {
                let backend = self.registry(name).expect("a registry of --acr").host();
                AcrEntry::new(acr, self.proxy(name).host()).with_backend(backend)
            })
            .collect();
        // The new one started before the old one is stopped (its imports
        // waited for).
        let config = ArmConfig {
            retry_after_secs: self.arm_retry_after,
            ..ArmConfig::new(entries)
        };
        let old = self.arm.replace(ArmStandIn::start(config));
        drop(old);
        self.arm_seen = 0;
    }

    fn arm(&self) -> &ArmStandIn {
        self.arm.as_ref().expect("the stand-in runs when --acr was given")
    }

    /// `NAME_proxy`, `NAME_id` per --acr registry, then `arm_endpoint` and
    /// `arm_AZURE_*`.
    fn write_acrs(&self, out: &mut dyn Write) -> io::Result<()> {
        let arm = self.arm();
        for (name, acr) in &self.acrs {
            writeln!(out, "{name}_proxy={}", self.proxy(name).host())?;
            writeln!(out, "{name}_id={}", arm.registry_id(acr))?;
        }
        writeln!(out, "arm_endpoint={}", arm.endpoint())?;
        for (variable, value) in arm.env() {
            writeln!(out, "arm_{variable}={value}")?;
        }
        Ok(())
    }
}

/// One command on the control socket, its answer's lines, then `ready`:
/// `restart NAME` (the old registry stopped and its storage removed, a new
/// one started; for an --acr registry a new proxy and stand-in too),
/// `counters`, `reset`, `log`.
fn serve_control(mut connection: UnixStream, fixture: &Mutex<Fixture>) -> io::Result<()> {
    let mut line = String::new();
    BufReader::new(&connection).read_line(&mut line)?;
    let mut fixture = fixture.lock().unwrap();
    let mut answer = Vec::new();
    match line.trim().split_once(' ').unwrap_or((line.trim(), "")) {
        ("restart", name) => {
            let options = fixture.options.clone();
            let Some(slot) = fixture.registries.iter_mut().find(|(n, _)| n == name) else {
                return writeln!(connection, "no registry called {name}");
            };
            // The new one started, then the old one's process killed and
            // waited for and its directory removed.
            let old = std::mem::replace(&mut slot.1, TestRegistry::start_with_options(&options));
            drop(old);
            let fresh = fixture.registry(name).expect("just started");
            write_registry(&mut answer, name, fresh)?;
            if fixture.acrs.iter().any(|(n, _)| n == name) {
                fixture.start_proxy(name);
                fixture.start_arm();
                fixture.write_acrs(&mut answer)?;
            }
        }
        ("counters", "") => {
            for (name, proxy) in &fixture.proxies {
                let (up, down) = proxy.bytes();
                writeln!(answer, "{name}_requests={}", proxy.seen().len())?;
                writeln!(answer, "{name}_bytes_up={up}")?;
                writeln!(answer, "{name}_bytes_down={down}")?;
            }
            if let Some(arm) = &fixture.arm {
                writeln!(answer, "arm_requests={}", arm.requests().len() - fixture.arm_seen)?;
            }
        }
        ("reset", "") => {
            for (_, proxy) in &fixture.proxies {
                proxy.clear_seen();
            }
            fixture.arm_seen = fixture.arm.as_ref().map_or(0, |arm| arm.requests().len());
        }
        ("log", "") => {
            for (name, proxy) in &fixture.proxies {
                for seen in proxy.seen() {
                    writeln!(answer, "{name} {} {}", seen.method, seen.target)?;
                }
            }
            if let Some(arm) = &fixture.arm {
                for request in &arm.requests()[fixture.arm_seen..] {
                    writeln!(answer, "arm {request}")?;
                }
            }
        }
        _ => return writeln!(connection, "not a command: {line:?}"),
    }
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
