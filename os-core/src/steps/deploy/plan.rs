//! Matching records to container images, and the manifests rewritten with
//! every matched image pinned by digest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Batch, Failure, Options, Target};
use crate::kube::kubectl::{Kubectl, KubectlError};
use crate::kube::manifest::{self, Input, Manifest, ManifestError, ObjectName};
use crate::oci::reference::RegistryRef;
use crate::record::ErrorCode;

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

/// Why the manifests could not be read (exit 2: `bad-manifest`).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Kustomize(#[from] KubectlError),
}

/// Reads the manifests of `paths` (kustomize directories through
/// `kubectl kustomize`).
pub fn load_manifests(
    paths: &[PathBuf],
    kubectl: &Kubectl,
) -> Result<(Vec<Input>, Vec<Manifest>), LoadError> {
    let inputs = manifest::expand_inputs(paths)?;
    let mut manifests = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let manifest = match input {
            Input::File(path) => Manifest::parse(path.display().to_string(), manifest::read_text(path)?)?,
            Input::Kustomize(dir) => {
                let text = kubectl.kustomize(dir)?;
                Manifest::parse(format!("{} (kubectl kustomize)", dir.display()), text)?
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

/// Why no plan came of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// Records failed (conflicting or unmatched); each entry says why.
    RecordsFailed,
    /// Images left in the manifests are not pinned by digest
    /// (`--require-digest`); each names its file, line, object and container.
    Unpinned(Vec<String>),
}

impl PlanError {
    /// What stops the whole batch, beyond the entries' own failures.
    pub fn batch_failure(self) -> Option<Failure> {
        match self {
            PlanError::RecordsFailed => None,
            PlanError::Unpinned(images) => Some(Failure::new(
                ErrorCode::UnpinnedImage,
                format!(
                    "not deployed: {} (--no-require-digest allows tags)",
                    images.join("; ")
                ),
            )),
        }
    }
}

/// Matches every gated record of `batch` to the container images of
/// `manifests` and rewrites them. Record-level failures are set on the
/// entries.
pub fn plan(
    batch: &mut Batch,
    inputs: Vec<Input>,
    manifests: Vec<Manifest>,
    options: &Options,
) -> Result<Plan, PlanError> {
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
    let mut matching = Matching::default();
    let rendered = manifests
        .iter()
        .enumerate()
        .map(|(index, manifest)| {
            matching.rewrite(batch, &candidates, index, manifest, options.require_digest)
        })
        .collect();
    let conflicted = fail_conflicting(batch, std::mem::take(&mut matching.conflicts));
    let unmatched = fail_unmatched(batch, &matching.placements, &manifests);
    if !matching.unpinned.is_empty() {
        return Err(PlanError::Unpinned(matching.unpinned));
    }
    if conflicted || unmatched {
        return Err(PlanError::RecordsFailed);
    }
    Ok(Plan {
        inputs,
        manifests,
        rendered,
        placements: matching.placements,
    })
}

/// What matching found across the manifests.
#[derive(Default)]
struct Matching {
    placements: Vec<Placement>,
    /// Images left that are not pinned and that no record matches.
    unpinned: Vec<String>,
    /// By entry: each container image it claims along with other records.
    conflicts: BTreeMap<usize, Vec<String>>,
}

impl Matching {
    /// Manifest `index` with every image one record matches pinned.
    fn rewrite(
        &mut self,
        batch: &Batch,
        candidates: &Candidates<'_>,
        index: usize,
        manifest: &Manifest,
        require_digest: bool,
    ) -> String {
        let pinned = |entry: usize| batch.entries[entry].target.as_ref().expect("gated").pinned();
        let mut replacements = Vec::new();
        for (image_index, found) in manifest.images.iter().enumerate() {
            match candidates.find(&found.container, &found.image) {
                Matched::One(entry) => {
                    replacements.push((image_index, pinned(entry)));
                    self.placements.push(Placement {
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
                        .map(|i| format!("{} ({})", batch.entries[*i].origin, pinned(*i)))
                        .collect();
                    for entry in &entries {
                        self.conflicts.entry(*entry).or_default().push(format!(
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
                    if require_digest && !is_pinned(&found.image) {
                        self.unpinned.push(format!(
                            "{}:{}: {} container {:?}: {} is not pinned by digest and no record matches it",
                            manifest.name, found.line, found.object, found.container, found.image
                        ));
                    }
                }
            }
        }
        manifest.rewritten(&replacements)
    }
}

/// Fails every entry that claims an image with other records; whether any did.
fn fail_conflicting(batch: &mut Batch, conflicts: BTreeMap<usize, Vec<String>>) -> bool {
    let any = !conflicts.is_empty();
    for (entry, messages) in conflicts {
        batch.entries[entry].failure = Some(Failure::new(ErrorCode::ConflictingRecords, messages.join("; ")));
    }
    any
}

/// Fails every gated entry that matched no container image; whether any did.
fn fail_unmatched(batch: &mut Batch, placements: &[Placement], manifests: &[Manifest]) -> bool {
    let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
    let mut any = false;
    for (index, entry) in batch.entries.iter_mut().enumerate() {
        if entry.failure.is_some() {
            continue;
        }
        let Some(target) = &entry.target else { continue };
        if !placements.iter().any(|p| p.entry == index) {
            entry.failure = Some(Failure::new(
                ErrorCode::NoMatch,
                format!(
                    "{}: {} matches no container image in {} (images match by repository path; --map CONTAINER=SERVICE names one)",
                    entry.origin,
                    target.image.name(),
                    names.join(", ")
                ),
            ));
            any = true;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Digest;

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
}
