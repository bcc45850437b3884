//! `os-deploy`'s step: the gate (a record is deployed only when a `verify`
//! event vouches for its current image and digest, and only when no record
//! of the batch failed upstream), matching records to container images,
//! and the all-or-nothing outcome of a batch: either every record is
//! deployed and carries a `deploy` event, or nothing is deployed and every
//! record leaves as an error record saying why.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::exit;
use crate::kube::kubectl::{self, Kubectl, Rollout};
use crate::kube::manifest::{self, Input, Manifest, ManifestError, ObjectName};
use crate::oci::digest::Digest;
use crate::oci::reference::RegistryRef;
use crate::record::Origin;
use crate::record::{self, ErrorCode, Event, Record, field};

pub const STEP: &str = "deploy";

pub mod gitops;

/// One line of input and what became of it.
#[derive(Debug)]
pub struct Entry {
    pub origin: Origin,
    pub record: Record,
    /// Set when the record passed the gate.
    pub target: Option<Target>,
    /// Set when this tool failed the record (code, message).
    pub failure: Option<(ErrorCode, String)>,
}

/// Every record of the run: os-deploy needs the whole batch before it
/// deploys anything.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
    /// Lines that were not records (exit 2).
    pub unreadable: usize,
    /// Records that arrived as error records.
    pub upstream_failures: usize,
}

/// What a record deploys: its image pinned by digest.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: Option<String>,
    pub image: RegistryRef,
    pub digest: Digest,
    /// False only when `--allow-unverified` let it through.
    pub verified: bool,
    /// The `keyId` of the verification (or the signature) that vouches.
    pub key_id: Option<String>,
}

impl Target {
    /// `registry/repository@sha256:…`: what the manifests will say.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.image.name(), self.digest)
    }
}

/// The options every mode shares.
#[derive(Debug, Clone)]
pub struct Options {
    pub paths: Vec<PathBuf>,
    /// `--map container=service`.
    pub maps: Vec<(String, String)>,
    pub require_digest: bool,
    pub allow_unverified: bool,
    pub kubectl: Kubectl,
    /// `os-deploy 0.1.0`.
    pub tool: String,
}

impl Batch {
    /// Reads every line of `reader` (records only: references cannot carry
    /// a verification).
    pub fn read(reader: impl BufRead) -> std::io::Result<Batch> {
        let mut batch = Batch::default();
        for line in record::read_lines(reader, false) {
            let line = line?;
            let origin = Origin::Stdin(line.number);
            match line.input {
                record::Input::Record(record) => {
                    if record.is_error() {
                        batch.upstream_failures += 1;
                    }
                    batch.entries.push(Entry {
                        origin,
                        record,
                        target: None,
                        failure: None,
                    });
                }
                // read_lines without references never gives one; kept total.
                record::Input::Reference(text) => {
                    batch.push_unreadable(origin, format!("expected a JSON record, not {text:?}"))
                }
                record::Input::Malformed(message) => batch.push_unreadable(origin, message),
            }
        }
        Ok(batch)
    }

    /// A line that is not a record: an error record naming it (exit 2).
    fn push_unreadable(&mut self, origin: Origin, message: String) {
        let message = format!("{origin}: {message}");
        let mut record = Record::new();
        record.fail(STEP, ErrorCode::MalformedInput, message.clone());
        self.unreadable += 1;
        self.entries.push(Entry {
            origin,
            record,
            target: None,
            failure: Some((ErrorCode::MalformedInput, message)),
        });
    }

    /// Applies the gate to every record; `warn` hears about each record
    /// let through by `--allow-unverified`. True when every record passed.
    pub fn gate(&mut self, allow_unverified: bool, warn: &mut dyn FnMut(String)) -> bool {
        let mut passed = true;
        for entry in &mut self.entries {
            if entry.record.is_error() {
                passed = false;
                continue;
            }
            let origin = entry.origin;
            let (image, digest) = match located(&entry.record) {
                Ok(found) => found,
                Err(message) => {
                    entry.failure = Some((ErrorCode::BadReference, format!("{origin}: {message}")));
                    passed = false;
                    continue;
                }
            };
            let (verified, key_id) = match verification(&entry.record, &image, &digest) {
                Ok(key_id) => (true, key_id),
                Err(why) if allow_unverified => {
                    warn(format!(
                        "{origin}: {}@{digest} is NOT verified ({why}); deploying it anyway because of --allow-unverified",
                        image.name()
                    ));
                    (false, None)
                }
                Err(why) => {
                    entry.failure = Some((
                        ErrorCode::Unverified,
                        format!(
                            "{origin}: {}@{digest}: {why}: refusing to deploy an unverified image (run os-verify before os-deploy)",
                            image.name()
                        ),
                    ));
                    passed = false;
                    continue;
                }
            };
            entry.target = Some(Target {
                service: entry.record.get_str(field::SERVICE).map(str::to_string),
                image,
                digest,
                verified,
                key_id,
            });
        }
        passed && self.unreadable == 0
    }

    /// Ends the run without deploying anything: every record that did not
    /// fail upstream leaves as an error record (its own reason, or
    /// `batch-refused` naming what stopped the batch). Returns the records
    /// and the exit code.
    pub fn refuse(mut self, batch_reason: Option<(ErrorCode, String)>) -> Outcome {
        let mut reasons: Vec<String> = Vec::new();
        if self.upstream_failures > 0 {
            let failed: Vec<String> = self
                .entries
                .iter()
                .filter(|e| e.record.is_error() && e.failure.is_none())
                .map(|e| e.origin.to_string())
                .collect();
            reasons.push(format!(
                "the batch holds {} error record(s) from an earlier step ({})",
                self.upstream_failures,
                failed.join(", ")
            ));
        }
        let own: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| e.failure.as_ref().map(|_| e.origin.to_string()))
            .collect();
        if !own.is_empty() {
            reasons.push(format!("{} failed here", own.join(", ")));
        }
        let exit_code = if self.unreadable > 0
            || batch_reason
                .as_ref()
                .is_some_and(|r| r.0 == ErrorCode::BadManifest)
        {
            exit::USAGE
        } else {
            exit::FAILED
        };
        // Each reason is told once on stderr, not once per record.
        let mut messages = Vec::new();
        let mut refused = 0;
        for entry in &mut self.entries {
            if entry.record.is_error() && entry.failure.is_none() {
                continue; // failed upstream: passed through untouched
            }
            let (code, message) = match (&entry.failure, &batch_reason) {
                (Some((code, message)), _) => {
                    messages.push(message.clone());
                    (*code, message.clone())
                }
                (None, Some((code, message))) => (*code, format!("{}: {message}", entry.origin)),
                (None, None) => {
                    refused += 1;
                    (
                        ErrorCode::BatchRefused,
                        format!("{}: not deployed: {}", entry.origin, reasons.join("; ")),
                    )
                }
            };
            if code != ErrorCode::MalformedInput {
                entry.record.fail(STEP, code, message);
            }
        }
        if let Some((_, message)) = &batch_reason {
            messages.push(format!("nothing was deployed: {message}"));
        } else if refused > 0 || self.upstream_failures > 0 {
            messages.push(format!("nothing was deployed: {}", reasons.join("; ")));
        }
        Outcome {
            records: self.entries.into_iter().map(|e| e.record).collect(),
            exit_code,
            messages,
        }
    }
}

/// What a run ends with: the records to write, the exit code, and the
/// messages for stderr.
#[derive(Debug)]
pub struct Outcome {
    pub records: Vec<Record>,
    pub exit_code: u8,
    pub messages: Vec<String>,
}

impl Outcome {
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        for record in &self.records {
            record.write_line(out)?;
        }
        out.flush()
    }
}

fn located(record: &Record) -> Result<(RegistryRef, Digest), String> {
    let Some(text) = record.image() else {
        return Err("the record has no image".into());
    };
    if text.starts_with("oci:") {
        return Err(format!(
            "{text} is an OCI layout, which a cluster cannot pull: os-import it to a registry first"
        ));
    }
    let image: RegistryRef = text.parse().map_err(|e| format!("{e}"))?;
    let digest = match record.digest() {
        Ok(Some(digest)) => digest,
        Ok(None) => return Err(format!("{text}: the record has no digest")),
        Err(error) => return Err(error.to_string()),
    };
    Ok((image.with(None), digest))
}

/// Whether a successful `verify` event vouches for `image` at `digest`:
/// the key id that verified it, or why not.
pub fn verification(record: &Record, image: &RegistryRef, digest: &Digest) -> Result<Option<String>, String> {
    let events: Vec<&Value> = record
        .history()
        .iter()
        .filter(|event| event["step"] == "verify")
        .collect();
    if events.is_empty() {
        return Err("no verify event in its history".into());
    }
    let mut elsewhere = Vec::new();
    for event in events.iter().rev() {
        let at = event["image"]
            .as_str()
            .and_then(|text| text.parse::<RegistryRef>().ok())
            .map(|r| r.name());
        if at.as_deref() != Some(image.name().as_str()) {
            elsewhere.push(at.unwrap_or_else(|| "an unnamed image".into()));
            continue;
        }
        if event["verified"] != Value::Bool(true) {
            return Err("its verify event says it is not verified".into());
        }
        if verified_digest(event).as_ref() != Some(digest) {
            return Err("its verify event is for another digest".into());
        }
        return Ok(event["keyId"].as_str().map(str::to_string));
    }
    Err(format!(
        "verified at {}, but the image is now at {}: verify it where it is",
        elsewhere.join(", "),
        image.name()
    ))
}

/// The digest a verify event vouches for: its `digest`, else the one its
/// `signature` (`…:sha256-<hex>.sig@…`, cosign's tag scheme) is for.
fn verified_digest(event: &Value) -> Option<Digest> {
    if let Some(text) = event["digest"].as_str() {
        return text.parse().ok();
    }
    let signature = event["signature"].as_str()?;
    let start = signature.find(":sha256-")? + 1;
    let tag = &signature[start..];
    let hex = tag.strip_prefix("sha256-")?.split(".sig").next()?;
    format!("sha256:{hex}").parse().ok()
}

// --- matching records to container images -----------------------------------

/// One container image rewritten to a record's pinned image.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Index into the batch's entries.
    pub entry: usize,
    pub manifest: usize,
    pub object: ObjectName,
    pub container: String,
    /// The image the manifest named before.
    pub previous: String,
}

/// The manifests with the records' images pinned.
#[derive(Debug)]
pub struct Plan {
    pub inputs: Vec<Input>,
    pub manifests: Vec<Manifest>,
    /// The rewritten text of each manifest.
    pub rendered: Vec<String>,
    pub placements: Vec<Placement>,
}

impl Plan {
    /// All manifests as one multi-document YAML stream.
    pub fn joined(&self) -> String {
        let mut out = String::new();
        for text in &self.rendered {
            if !out.is_empty() && !text.starts_with("---") {
                out.push_str("---\n");
            }
            out.push_str(text);
            if !text.is_empty() && !text.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    pub fn placements_of(&self, entry: usize) -> impl Iterator<Item = &Placement> {
        self.placements.iter().filter(move |p| p.entry == entry)
    }
}

/// Reads the manifests of `paths` (kustomize directories through
/// `kubectl kustomize`).
pub fn load_manifests(paths: &[PathBuf], kubectl: &Kubectl) -> Result<(Vec<Input>, Vec<Manifest>), String> {
    let inputs = manifest::expand_inputs(paths).map_err(|e| e.to_string())?;
    let mut manifests = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let manifest = match input {
            Input::File(path) => manifest::read_text(path)
                .and_then(|text| Manifest::parse(path.display().to_string(), text))
                .map_err(|e| e.to_string())?,
            Input::Kustomize(dir) => {
                let text = kubectl.kustomize(dir).map_err(|e| e.to_string())?;
                Manifest::parse(format!("{} (kubectl kustomize)", dir.display()), text)
                    .map_err(|e: ManifestError| e.to_string())?
            }
        };
        manifests.push(manifest);
    }
    Ok((inputs, manifests))
}

/// What a container image is matched against: the entry index and its target.
struct Candidates<'a> {
    targets: Vec<(usize, &'a Target)>,
    /// container name → service.
    maps: BTreeMap<&'a str, &'a str>,
}

enum Matched {
    One(usize),
    Nothing,
    Conflict(Vec<usize>),
}

impl Candidates<'_> {
    fn find(&self, container: &str, image: &str) -> Matched {
        if let Some(service) = self.maps.get(container) {
            let found: Vec<usize> = self
                .targets
                .iter()
                .filter(|(_, t)| t.service.as_deref() == Some(*service))
                .map(|(i, _)| *i)
                .collect();
            return self.one_of(found);
        }
        let Ok(wanted) = image.parse::<RegistryRef>() else {
            return Matched::Nothing;
        };
        let same_path: Vec<(usize, &Target)> = self
            .targets
            .iter()
            .filter(|(_, t)| t.image.repository == wanted.repository)
            .map(|(i, t)| (*i, *t))
            .collect();
        // A record at the very registry the manifest names wins over one
        // that only shares the repository path.
        let exact: Vec<usize> = same_path
            .iter()
            .filter(|(_, t)| t.image.registry == wanted.registry)
            .map(|(i, _)| *i)
            .collect();
        if !exact.is_empty() {
            return self.one_of(exact);
        }
        self.one_of(same_path.into_iter().map(|(i, _)| i).collect())
    }

    /// Several records are fine when they pin the same thing.
    fn one_of(&self, found: Vec<usize>) -> Matched {
        let pinned = |index: usize| {
            self.targets
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, t)| t.pinned())
        };
        match found.as_slice() {
            [] => Matched::Nothing,
            [first, rest @ ..] if rest.iter().all(|i| pinned(*i) == pinned(*first)) => Matched::One(*first),
            _ => Matched::Conflict(found),
        }
    }
}

/// Whether an image is pinned by digest.
pub fn is_pinned(image: &str) -> bool {
    image
        .parse::<RegistryRef>()
        .map(|r| r.digest.is_some())
        .unwrap_or(false)
}

/// Matches every gated record of `batch` to the container images of
/// `manifests` and rewrites them. Record-level failures are set on the
/// entries; a batch-level one (unpinned images left) is returned.
pub fn plan(
    batch: &mut Batch,
    inputs: Vec<Input>,
    manifests: Vec<Manifest>,
    options: &Options,
) -> Result<Plan, Option<(ErrorCode, String)>> {
    let candidates = Candidates {
        targets: batch
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.target.as_ref().map(|t| (i, t)))
            .collect(),
        maps: options
            .maps
            .iter()
            .map(|(c, s)| (c.as_str(), s.as_str()))
            .collect(),
    };
    let mut placements = Vec::new();
    let mut rendered = Vec::with_capacity(manifests.len());
    let mut unpinned = Vec::new();
    let mut conflicts: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (index, manifest) in manifests.iter().enumerate() {
        let mut replacements = Vec::new();
        for (image_index, found) in manifest.images.iter().enumerate() {
            match candidates.find(&found.container, &found.image) {
                Matched::One(entry) => {
                    let target = batch.entries[entry].target.as_ref().expect("gated");
                    replacements.push((image_index, target.pinned()));
                    placements.push(Placement {
                        entry,
                        manifest: index,
                        object: found.object.clone(),
                        container: found.container.clone(),
                        previous: found.image.clone(),
                    });
                }
                Matched::Conflict(entries) => {
                    let names: Vec<String> = entries
                        .iter()
                        .map(|i| {
                            let e = &batch.entries[*i];
                            format!("{} ({})", e.origin, e.target.as_ref().expect("gated").pinned())
                        })
                        .collect();
                    for entry in &entries {
                        conflicts.entry(*entry).or_default().push(format!(
                            "{}:{}: {} container {:?} ({}) matches several records that pin different images: {}",
                            manifest.name,
                            found.line,
                            found.object,
                            found.container,
                            found.image,
                            names.join(", ")
                        ));
                    }
                }
                Matched::Nothing => {
                    if options.require_digest && !is_pinned(&found.image) {
                        unpinned.push(format!(
                            "{}:{}: {} container {:?}: {} is not pinned by digest and no record matches it",
                            manifest.name, found.line, found.object, found.container, found.image
                        ));
                    }
                }
            }
        }
        rendered.push(manifest.rewritten(&replacements));
    }
    let mut record_failures = false;
    for (entry, messages) in conflicts {
        batch.entries[entry].failure = Some((ErrorCode::ConflictingRecords, messages.join("; ")));
        record_failures = true;
    }
    let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
    for (index, entry) in batch.entries.iter_mut().enumerate() {
        if entry.failure.is_some() {
            continue;
        }
        let Some(target) = &entry.target else { continue };
        if !placements.iter().any(|p| p.entry == index) {
            entry.failure = Some((
                ErrorCode::NoMatch,
                format!(
                    "{}: {} matches no container image in {} (images match by repository path; --map CONTAINER=SERVICE names one)",
                    entry.origin,
                    target.image.name(),
                    names.join(", ")
                ),
            ));
            record_failures = true;
        }
    }
    if !unpinned.is_empty() {
        return Err(Some((
            ErrorCode::UnpinnedImage,
            format!(
                "not deployed: {} (--no-require-digest allows tags)",
                unpinned.join("; ")
            ),
        )));
    }
    if record_failures {
        return Err(None);
    }
    Ok(Plan {
        inputs,
        manifests,
        rendered,
        placements,
    })
}

/// The `deploy` event for entry `index` of a deployed batch.
pub fn deploy_event(
    options: &Options,
    mode: &str,
    plan: &Plan,
    index: usize,
    target: &Target,
    previous: &dyn Fn(&Placement) -> Value,
) -> Event {
    let workloads: Vec<Value> = plan
        .placements_of(index)
        .map(|p| {
            let mut workload = json!({
                "kind": p.object.kind,
                "name": p.object.name,
                "container": p.container,
                "previous": previous(p),
            });
            if let Some(namespace) = &p.object.namespace {
                workload["namespace"] = namespace.clone().into();
            }
            workload
        })
        .collect();
    let mut event = Event::new(STEP, &options.tool)
        .with("mode", mode)
        .with("image", target.pinned())
        .with("workloads", workloads)
        .with("verified", target.verified);
    if options.allow_unverified {
        event = event.with("allowUnverified", true);
    }
    event
}

/// Reads the batch, gates it, loads and pins the manifests: the plan, or
/// the outcome of a refused batch.
pub fn prepare(
    options: &Options,
    reader: impl BufRead,
    warn: &mut dyn FnMut(String),
) -> Result<(Batch, Plan), Outcome> {
    let mut batch = match Batch::read(reader) {
        Ok(batch) => batch,
        Err(error) => {
            return Err(Outcome {
                records: Vec::new(),
                exit_code: exit::USAGE,
                messages: vec![format!("reading stdin failed: {error}")],
            });
        }
    };
    if batch.entries.is_empty() {
        return Err(Outcome {
            records: Vec::new(),
            exit_code: exit::USAGE,
            messages: vec!["no records on stdin: os-deploy deploys the records os-verify writes".into()],
        });
    }
    if !batch.gate(options.allow_unverified, warn) {
        return Err(batch.refuse(None));
    }
    let (inputs, manifests) = match load_manifests(&options.paths, &options.kubectl) {
        Ok(loaded) => loaded,
        Err(message) => return Err(batch.refuse(Some((ErrorCode::BadManifest, message)))),
    };
    match plan(&mut batch, inputs, manifests, options) {
        Ok(plan) => Ok((batch, plan)),
        Err(reason) => Err(batch.refuse(reason)),
    }
}

// --- render ------------------------------------------------------------------

/// Where `render` writes the pinned manifests.
pub enum RenderTo<'a> {
    Stdout(&'a mut dyn Write),
    Directory(&'a Path),
}

/// The file name a manifest gets under `--out DIR`.
fn out_name(input: &Input) -> PathBuf {
    match input {
        Input::File(path) => PathBuf::from(path.file_name().unwrap_or(path.as_os_str())),
        Input::Kustomize(dir) => {
            let name = std::path::absolute(dir)
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "kustomization".into());
            PathBuf::from(format!("{name}.yaml"))
        }
    }
}

/// `render`: the pinned manifests to stdout or a directory; each record
/// gains a `deploy` event (mode `render`).
pub fn render(options: &Options, plan: &Plan, batch: Batch, to: RenderTo<'_>) -> std::io::Result<Outcome> {
    let output = match to {
        RenderTo::Stdout(out) => {
            out.write_all(plan.joined().as_bytes())?;
            out.flush()?;
            "stdout".to_string()
        }
        RenderTo::Directory(dir) => {
            let names: Vec<PathBuf> = plan.inputs.iter().map(out_name).collect();
            let mut seen = std::collections::BTreeSet::new();
            for name in &names {
                if !seen.insert(name) {
                    return Err(std::io::Error::other(format!(
                        "--out {}: two inputs would both be written to {} (rename one)",
                        dir.display(),
                        name.display()
                    )));
                }
            }
            std::fs::create_dir_all(dir)?;
            for (name, text) in names.iter().zip(&plan.rendered) {
                std::fs::write(dir.join(name), text)?;
            }
            dir.display().to_string()
        }
    };
    // In a render, what came before is what the manifest said.
    let previous = |p: &Placement| Value::from(p.previous.clone());
    Ok(finish(options, "render", plan, batch, &previous, |event, _| {
        event.with("output", output.clone())
    }))
}

/// Appends a deploy event to every record of a deployed batch.
fn finish(
    options: &Options,
    mode: &str,
    plan: &Plan,
    batch: Batch,
    previous: &dyn Fn(&Placement) -> Value,
    mut extra: impl FnMut(Event, usize) -> Event,
) -> Outcome {
    let records = batch
        .entries
        .into_iter()
        .enumerate()
        .map(|(index, mut entry)| {
            if let Some(target) = &entry.target {
                let event = deploy_event(options, mode, plan, index, target, previous);
                entry.record.push_event(extra(event, index));
            }
            entry.record
        })
        .collect();
    Outcome {
        records,
        exit_code: exit::SUCCESS,
        messages: Vec::new(),
    }
}

// --- apply -------------------------------------------------------------------

pub struct ApplyOptions {
    pub namespace: String,
    pub timeout: Duration,
}

/// What each workload container ran before the apply, from the cluster.
fn live_images(live: &Value) -> BTreeMap<(String, String, String), String> {
    let mut images = BTreeMap::new();
    for item in live["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let kind = item["kind"].as_str().unwrap_or_default().to_string();
        let name = item["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let spec = match kind.as_str() {
            "CronJob" => &item["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            "Pod" => &item["spec"],
            _ => &item["spec"]["template"]["spec"],
        };
        for field in manifest::CONTAINER_FIELDS {
            for container in spec[field].as_array().map(Vec::as_slice).unwrap_or_default() {
                if let (Some(container), Some(image)) =
                    (container["name"].as_str(), container["image"].as_str())
                {
                    images.insert(
                        (kind.clone(), name.clone(), container.to_string()),
                        image.to_string(),
                    );
                }
            }
        }
    }
    images
}

/// `apply`: server-side apply of the pinned manifests, then a rollout wait
/// for every workload; a failed or timed-out rollout is undone (with every
/// other workload this run changed) and the batch fails.
pub fn apply(
    options: &Options,
    apply: &ApplyOptions,
    plan: &Plan,
    batch: Batch,
    say: &mut dyn FnMut(String),
) -> Outcome {
    let kubectl = &options.kubectl;
    let context = kubectl.context_name();
    let objects: Vec<ObjectName> = unique(plan.placements.iter().map(|p| p.object.clone()));
    // Before the change: what runs now, for the record and to know what a
    // rollback can return to.
    let mut before = BTreeMap::new();
    let namespaces = unique(
        objects
            .iter()
            .map(|o| kubectl::namespace_of(o, &apply.namespace).to_string()),
    );
    for namespace in namespaces {
        let here: Vec<ObjectName> = objects
            .iter()
            .filter(|o| kubectl::namespace_of(o, &apply.namespace) == namespace)
            .cloned()
            .collect();
        match kubectl.get(&namespace, &here) {
            Ok(live) => before.extend(live_images(&live)),
            Err(error) => {
                return batch.refuse(Some((
                    ErrorCode::ApplyFailed,
                    format!("reading the workloads: {error}"),
                )));
            }
        }
    }
    let previous = |p: &Placement| {
        before
            .get(&(p.object.kind.clone(), p.object.name.clone(), p.container.clone()))
            .cloned()
    };
    if let Err(error) = kubectl.apply(&apply.namespace, &plan.joined()) {
        return batch.refuse(Some((
            ErrorCode::ApplyFailed,
            format!("{error} (objects applied before the failure stay applied: kubectl get them)"),
        )));
    }
    let changed: Vec<ObjectName> = unique(
        plan.placements
            .iter()
            .filter(|p| kubectl::has_rollout(&p.object.kind))
            .filter(|p| previous(p).is_some_and(|before| before != pinned_of(&batch, p)))
            .map(|p| p.object.clone()),
    );
    // Every workload the manifests hold rolls out, not only those whose
    // image this run pinned: their templates may have changed too.
    let workloads: Vec<ObjectName> = unique(
        plan.manifests
            .iter()
            .flat_map(|m| m.objects.iter())
            .filter(|o| kubectl::has_rollout(&o.kind))
            .cloned(),
    );
    let mut failed: Option<(ErrorCode, String)> = None;
    for object in &workloads {
        say(format!("waiting for the rollout of {object}"));
        let outcome = kubectl.rollout_status(&apply.namespace, object, apply.timeout);
        let (code, why) = match outcome {
            Ok(Rollout::Complete) => continue,
            Ok(Rollout::Failed(why)) => (ErrorCode::RolloutFailed, why),
            Ok(Rollout::TimedOut(why)) => (ErrorCode::RolloutTimeout, why),
            Err(error) => (ErrorCode::RolloutFailed, error.to_string()),
        };
        failed = Some((code, format!("rollout of {object} did not complete: {why}")));
        break;
    }
    let result = match &failed {
        None => "rolled-out".to_string(),
        Some(_) => "rolled-back".to_string(),
    };
    let mut undo_notes = Vec::new();
    if failed.is_some() {
        for object in &changed {
            say(format!("rolling back {object}"));
            match kubectl.rollout_undo(&apply.namespace, object) {
                Ok(()) => undo_notes.push(format!("{object} rolled back")),
                Err(error) => undo_notes.push(format!("ROLLBACK OF {object} FAILED: {error}")),
            }
        }
        let kept: Vec<String> = workloads
            .iter()
            .filter(|o| !changed.contains(o))
            .map(|o| o.to_string())
            .collect();
        if !kept.is_empty() {
            undo_notes.push(format!(
                "{} left as applied: no earlier image of ours to return to (a new workload, or its image did not change)",
                kept.join(", ")
            ));
        }
    }
    // In an apply, what came before is what the cluster ran (null: a new workload).
    let live_previous = |p: &Placement| previous(p).map_or(Value::Null, Value::from);
    let mut outcome = finish(options, "apply", plan, batch, &live_previous, |mut event, _| {
        event = event
            .with("context", context.clone().map_or(Value::Null, Value::from))
            .with("namespace", apply.namespace.clone())
            .with("result", result.clone());
        event
    });
    if let Some((code, message)) = failed {
        let message = if undo_notes.is_empty() {
            message
        } else {
            format!("{message}; {}", undo_notes.join("; "))
        };
        for record in &mut outcome.records {
            if !record.is_error() {
                record.fail(STEP, code, message.clone());
            }
        }
        outcome.messages.push(message);
        outcome.exit_code = exit::FAILED;
    }
    outcome
}

fn pinned_of(batch: &Batch, placement: &Placement) -> String {
    batch.entries[placement.entry]
        .target
        .as_ref()
        .map(Target::pinned)
        .unwrap_or_default()
}

fn unique<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(service: &str, image: &str, digest_seed: &str) -> Target {
        Target {
            service: Some(service.into()),
            image: image.parse().unwrap(),
            digest: Digest::of(digest_seed.as_bytes()),
            verified: true,
            key_id: None,
        }
    }

    fn matched(candidates: &Candidates<'_>, container: &str, image: &str) -> Option<usize> {
        match candidates.find(container, image) {
            Matched::One(index) => Some(index),
            Matched::Nothing => None,
            Matched::Conflict(_) => Some(usize::MAX),
        }
    }

    #[test]
    fn images_match_by_repository_path_with_or_without_host() {
        let targets = [
            target("iam", "prod.example.com/onestream/iam", "1"),
            target("nginx", "docker.io/library/nginx", "2"),
            target("reports", "localhost:5000/onestream/reports", "3"),
            target("auth", "prod.example.com/onestream/auth", "4"),
            target("auth-dev", "dev.example.com/onestream/auth", "5"),
        ];
        let candidates = Candidates {
            targets: targets.iter().enumerate().collect(),
            maps: [("api", "auth")].into_iter().collect(),
        };
        assert_eq!(
            matched(&candidates, "c", "dev.example.com/onestream/iam:1.4.2"),
            Some(0)
        );
        assert_eq!(
            matched(&candidates, "c", "onestream/iam"),
            Some(0),
            "no host: Docker Hub path"
        );
        assert_eq!(matched(&candidates, "c", "nginx:1.27"), Some(1));
        assert_eq!(matched(&candidates, "c", "docker.io/library/nginx"), Some(1));
        assert_eq!(
            matched(&candidates, "c", "localhost:5000/onestream/reports:2"),
            Some(2)
        );
        assert_eq!(matched(&candidates, "c", "other.io/onestream/reports"), Some(2));
        // Two records share a path: the one at the manifest's registry wins,
        // and with neither there the match is ambiguous.
        assert_eq!(
            matched(&candidates, "c", "dev.example.com/onestream/auth:1"),
            Some(4)
        );
        assert_eq!(
            matched(&candidates, "c", "staging.example.com/onestream/auth:1"),
            Some(usize::MAX)
        );
        // --map names the service, whatever the image.
        assert_eq!(matched(&candidates, "api", "legacy/identity:7"), Some(3));
        assert_eq!(matched(&candidates, "c", "onestream/iam-migrate"), None);
        assert_eq!(matched(&candidates, "c", "$(IMAGE)"), None);
    }

    #[test]
    fn a_verify_event_names_its_digest_through_the_signature_tag() {
        let hex = "ab".repeat(32);
        let event = serde_json::json!({
            "signature": format!("localhost:5000/a/b:sha256-{hex}.sig@sha256:{}", "cd".repeat(32))
        });
        assert_eq!(
            verified_digest(&event).unwrap().to_string(),
            format!("sha256:{hex}")
        );
        let explicit = serde_json::json!({"digest": format!("sha256:{}", "ef".repeat(32)), "signature": "x"});
        assert_eq!(verified_digest(&explicit).unwrap().hex(), "ef".repeat(32));
        assert!(verified_digest(&serde_json::json!({"signature": "r/a:latest"})).is_none());
    }
}
