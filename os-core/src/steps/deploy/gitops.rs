//! `os-deploy gitops`: pin the records' images in a GitOps repository's
//! kustomization (`images:` entries with `newName` and `digest`) and commit
//! the change, for Flux or Argo CD to roll out.
//!
//! Guarantees: a dirty work tree (or one in the middle of a merge or
//! rebase) is refused before anything is touched; the kustomization is
//! edited as text (comments and order kept) and checked by rendering it
//! again; nothing is ever force-pushed, and a push the remote rejects
//! leaves the repository as it was before the run.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{Batch, Failure, Options, Outcome, Placement, Plan, Target};
use crate::kube::manifest::{self, Input, Manifest, Node};
use crate::kube::process;
use crate::oci::reference::RegistryRef;
use crate::record::{ErrorCode, Record, field};

pub struct GitopsOptions {
    /// The repository's work tree.
    pub repo: PathBuf,
    /// The kustomize directory inside it, e.g. `apps/iam`.
    pub path: PathBuf,
    pub push: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GitopsError {
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
    #[error("git {args} failed: {stderr}")]
    Git { args: String, stderr: String },
    #[error("{0}")]
    Kustomization(String),
}

/// One `images:` entry to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUpdate {
    /// The image name as the resources spell it (kustomize matches on it).
    pub name: String,
    pub new_name: String,
    pub digest: String,
}

fn git(repo: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, GitopsError> {
    let mut command = Command::new("git");
    command.arg("-C").arg(repo).args(args);
    let output = process::run(command, stdin.map(str::as_bytes), None).map_err(|failure| match failure {
        process::Failure::Spawn(error) => GitopsError::Spawn(error),
        process::Failure::Deadline => unreachable!("git runs without a deadline"),
    })?;
    if output.success {
        Ok(output.stdout)
    } else {
        Err(GitopsError::Git {
            args: args.join(" "),
            stderr: output.stderr.trim().to_string(),
        })
    }
}

/// Why the work tree may not be touched, if it may not.
fn dirty(repo: &Path) -> Result<Option<String>, GitopsError> {
    let status = git(repo, &["status", "--porcelain", "--untracked-files=all"], None)?;
    if !status.trim().is_empty() {
        let files: Vec<&str> = status.lines().take(5).collect();
        return Ok(Some(format!(
            "the work tree has uncommitted changes ({}): commit or stash them first",
            files.join(", ").trim()
        )));
    }
    for (marker, what) in [
        ("MERGE_HEAD", "a merge"),
        ("REBASE_HEAD", "a rebase"),
        ("CHERRY_PICK_HEAD", "a cherry-pick"),
    ] {
        if git(repo, &["rev-parse", "-q", "--verify", marker], None).is_ok() {
            return Ok(Some(format!(
                "the repository is in the middle of {what}: finish it first"
            )));
        }
    }
    Ok(None)
}

/// The image name a manifest's image refers to, as written: without tag
/// or digest (`dev.example.com/iam:1.0` → `dev.example.com/iam`).
fn bare_name(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    match name.rsplit_once(':') {
        Some((before, after)) if !after.contains('/') => before,
        _ => name,
    }
}

/// Sets `updates` in the kustomization `text`: an existing entry whose
/// `newName` (or, without one, `name`) is the update's name is rewritten in
/// place (its `name` kept, `newTag` dropped: the digest pins it); anything
/// else is appended. The rest of the text is untouched.
pub fn set_images(file: &str, text: &str, updates: &[ImageUpdate]) -> Result<String, GitopsError> {
    let documents =
        manifest::parse_documents(file, text).map_err(|e| GitopsError::Kustomization(e.to_string()))?;
    let root = documents.first();
    let images = root.and_then(|r| r.get("images"));
    let bad = |why: &str| GitopsError::Kustomization(format!("{file}: {why}"));
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut appended = Vec::new();
    let items = match images {
        None => &[][..],
        Some(Node::Sequence { items, .. }) if items.is_empty() => {
            return Err(bad(
                "`images: []` is a flow list: write it as a block list (or drop it)",
            ));
        }
        Some(Node::Sequence { items, .. }) => items.as_slice(),
        Some(_) => return Err(bad("`images:` is not a list")),
    };
    for update in updates {
        let existing = items.iter().find(|item| {
            let name = item.get("name").and_then(Node::as_str);
            let new_name = item.get("newName").and_then(Node::as_str);
            new_name.or(name) == Some(update.name.as_str())
        });
        match existing {
            Some(item) => {
                let Node::Mapping { start, .. } = item else {
                    return Err(bad("an `images:` entry is not a mapping"));
                };
                if text[*start..].starts_with('{') {
                    return Err(bad("an `images:` entry is a flow mapping: write it as a block"));
                }
                let end = last_end(item).ok_or_else(|| bad("an empty `images:` entry"))?;
                let indent = " ".repeat(column(text, *start));
                let name = item.get("name").and_then(Node::as_str).unwrap_or(&update.name);
                edits.push((
                    *start..end,
                    format!(
                        "name: {name}\n{indent}newName: {}\n{indent}digest: {}",
                        update.new_name, update.digest
                    ),
                ));
            }
            None => appended.push(update),
        }
    }
    let mut out = apply_edits(text, edits);
    if appended.is_empty() {
        return Ok(out);
    }
    match items.last() {
        Some(_) => {
            // Same layout as the entries already there.
            let Node::Mapping { start, .. } = &items[0] else {
                return Err(bad("an `images:` entry is not a mapping"));
            };
            let key_column = column(text, *start);
            let dash = text[..*start]
                .rfind('-')
                .ok_or_else(|| bad("an `images:` entry without `-`"))?;
            let dash_column = column(text, dash);
            let gap = " ".repeat(key_column.saturating_sub(dash_column + 1).max(1));
            let (dash_indent, key_indent) = (" ".repeat(dash_column), " ".repeat(key_column));
            let mut block = String::new();
            for update in &appended {
                block.push_str(&format!(
                    "\n{dash_indent}-{gap}name: {}\n{key_indent}newName: {}\n{key_indent}digest: {}",
                    update.name, update.new_name, update.digest
                ));
            }
            // Re-parse to find where the (possibly rewritten) last entry ends.
            let reparsed = manifest::parse_documents(file, &out)
                .map_err(|e| GitopsError::Kustomization(e.to_string()))?;
            let end = reparsed
                .first()
                .and_then(|r| r.get("images"))
                .and_then(|i| i.items().last())
                .and_then(last_end)
                .ok_or_else(|| bad("the `images:` list moved while editing"))?;
            // After the rest of that line, so a trailing comment stays put.
            let end = out[end..].find('\n').map_or(out.len(), |i| end + i);
            out.insert_str(end, &block);
        }
        None => {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str("images:\n");
            for update in &appended {
                out.push_str(&format!(
                    "- name: {}\n  newName: {}\n  digest: {}\n",
                    update.name, update.new_name, update.digest
                ));
            }
        }
    }
    Ok(out)
}

fn apply_edits(text: &str, mut edits: Vec<(std::ops::Range<usize>, String)>) -> String {
    edits.sort_by_key(|(range, _)| range.start);
    let mut out = String::with_capacity(text.len() + 256);
    let mut at = 0;
    for (range, replacement) in edits {
        out.push_str(&text[at..range.start]);
        out.push_str(&replacement);
        at = range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Column (in characters) of byte offset `at`.
fn column(text: &str, at: usize) -> usize {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[line_start..at].chars().count()
}

/// Where the last scalar of a node ends.
fn last_end(node: &Node) -> Option<usize> {
    match node {
        Node::Scalar { span, .. } => Some(span.end),
        Node::Mapping { entries, .. } => entries
            .iter()
            .filter_map(|(k, v)| last_end(v).or(last_end(k)))
            .max(),
        Node::Sequence { items, .. } => items.iter().filter_map(last_end).max(),
        Node::Alias { .. } => None,
    }
}

/// The commit message: one paragraph per record with what an auditor
/// needs: service, digest, signature key, and the commit it was built from.
fn commit_message(path: &Path, plan: &Plan, batch: &Batch) -> String {
    let services: Vec<String> = batch
        .entries
        .iter()
        .filter_map(|e| e.target.as_ref().map(|t| service_name(&e.record, t)))
        .collect();
    let mut message = format!("os-deploy: pin {} in {}\n", services.join(", "), path.display());
    for (index, entry) in batch.entries.iter().enumerate() {
        let Some(target) = &entry.target else { continue };
        let record = &entry.record;
        message.push_str(&format!(
            "\nservice: {}\nimage: {}\ndigest: {}\n",
            service_name(record, target),
            target.image.name(),
            target.digest
        ));
        let signer = record
            .history()
            .iter()
            .rev()
            .find(|e| e["step"] == "sign")
            .and_then(|e| e["signer"].as_str());
        let key = match (&target.key_id, signer) {
            (Some(key), Some(signer)) => format!("{key} ({signer})"),
            (Some(key), None) => key.clone(),
            (None, Some(signer)) => signer.to_string(),
            (None, None) => "none".into(),
        };
        message.push_str(&format!("signature key: {key}\n"));
        if !target.verified {
            message.push_str("verified: NO (--allow-unverified)\n");
        }
        let source = &record.fields().get(field::SOURCE);
        let commit = source.and_then(|s| s["commit"].as_str()).unwrap_or("unknown");
        let mut origin = format!("origin commit: {commit}");
        if let Some(repository) = source.and_then(|s| s["repository"].as_str()) {
            origin.push_str(&format!(" of {repository}"));
        }
        if let Some(run) = source.and_then(|s| s["run"].as_str()) {
            origin.push_str(&format!(" (run {run})"));
        }
        message.push_str(&origin);
        message.push('\n');
        for placement in plan.placements_of(index) {
            message.push_str(&format!(
                "workload: {} container {} (was {})\n",
                placement.object, placement.container, placement.previous
            ));
        }
    }
    message
}

fn service_name(record: &Record, target: &Target) -> String {
    record
        .get_str(field::SERVICE)
        .map(str::to_string)
        .unwrap_or_else(|| target.image.repository.clone())
}

/// `gitops`: gate, match against the kustomization's rendered images, set
/// `images:`, check, commit (and push). Refuses without touching anything.
pub fn run(
    options: &Options,
    gitops: &GitopsOptions,
    reader: impl std::io::BufRead,
    warn: &mut dyn FnMut(String),
) -> Outcome {
    let dir = gitops.repo.join(&gitops.path);
    let mut options = options.clone();
    options.paths = vec![dir.clone()];
    let (batch, plan) = match super::prepare(&options, reader, warn) {
        Ok(prepared) => prepared,
        Err(outcome) => return outcome,
    };
    if !matches!(plan.inputs.as_slice(), [Input::Kustomize(_)]) {
        return batch.refuse(Some(Failure::new(
            ErrorCode::GitopsFailed,
            format!(
                "{}: not a kustomize directory (no kustomization.yaml)",
                dir.display()
            ),
        )));
    }
    match commit(&options, gitops, &dir, &plan, &batch) {
        Ok((commit, pushed)) => {
            let previous = |p: &Placement| Value::from(p.previous.clone());
            let repository = gitops.repo.display().to_string();
            let path = gitops.path.display().to_string();
            super::finish(&options, "gitops", &plan, batch, &previous, |event, _| {
                event
                    .with("repository", repository.clone())
                    .with("path", path.clone())
                    .with("commit", commit.clone())
                    .with("pushed", pushed)
            })
        }
        Err(failure) => batch.refuse(Some(failure)),
    }
}

/// Edits, checks and commits; on any failure the repository is left as it
/// was. Returns the new commit and whether it was pushed.
fn commit(
    options: &Options,
    gitops: &GitopsOptions,
    dir: &Path,
    plan: &Plan,
    batch: &Batch,
) -> Result<(String, bool), Failure> {
    let repo = &gitops.repo;
    let failed = |error: GitopsError| Failure::new(ErrorCode::GitopsFailed, error.to_string());
    if let Some(why) = dirty(repo).map_err(failed)? {
        return Err(Failure::new(
            ErrorCode::DirtyWorktree,
            format!("{}: {why}", repo.display()),
        ));
    }
    let file = manifest::kustomization_file(dir).ok_or_else(|| {
        Failure::new(
            ErrorCode::GitopsFailed,
            format!("{}: no kustomization file", dir.display()),
        )
    })?;
    let original =
        manifest::read_text(&file).map_err(|e| Failure::new(ErrorCode::GitopsFailed, e.to_string()))?;
    let mut updates: Vec<ImageUpdate> = Vec::new();
    for placement in &plan.placements {
        let target = batch.entries[placement.entry].target.as_ref().expect("gated");
        let update = ImageUpdate {
            name: bare_name(&placement.previous).to_string(),
            new_name: target.image.name(),
            digest: target.digest.to_string(),
        };
        match updates.iter().find(|u| u.name == update.name) {
            Some(existing) if *existing != update => {
                return Err(Failure::new(
                    ErrorCode::ConflictingRecords,
                    format!(
                        "{} is pinned to both {}@{} and {}@{}",
                        update.name, existing.new_name, existing.digest, update.new_name, update.digest
                    ),
                ));
            }
            Some(_) => {}
            None => updates.push(update),
        }
    }
    let file_name = file.display().to_string();
    let edited = set_images(&file_name, &original, &updates).map_err(failed)?;
    std::fs::write(&file, &edited)
        .map_err(|e| Failure::new(ErrorCode::GitopsFailed, format!("{file_name}: {e}")))?;
    let restore = || {
        let _ = std::fs::write(&file, &original);
    };
    // The proof the edit does what it should: render it, and every matched
    // container must now run its record's pinned image.
    if let Err(why) = check_rendered(options, dir, plan, batch) {
        restore();
        return Err(Failure::new(ErrorCode::GitopsFailed, why));
    }
    let before = git(repo, &["rev-parse", "HEAD"], None).map_err(|e| {
        restore();
        failed(e)
    })?;
    let before = before.trim().to_string();
    let relative = file.strip_prefix(repo).unwrap_or(&file).display().to_string();
    let identity = identity_args(repo);
    let mut commit_args: Vec<&str> = identity.iter().map(String::as_str).collect();
    commit_args.extend(["commit", "--quiet", "--no-verify", "--file", "-", "--", &relative]);
    if let Err(error) = git(
        repo,
        &commit_args,
        Some(&commit_message(&gitops.path, plan, batch)),
    ) {
        restore();
        return Err(failed(error));
    }
    let commit = git(repo, &["rev-parse", "HEAD"], None)
        .map_err(failed)?
        .trim()
        .to_string();
    if gitops.push {
        // Never --force: a remote that moved on wins, and this run undoes
        // its own commit so the work tree is as it was.
        if let Err(error) = git(repo, &["push", "--quiet"], None) {
            let _ = git(repo, &["reset", "--quiet", "--hard", &before], None);
            return Err(Failure::new(
                ErrorCode::PushRejected,
                format!(
                    "{error}; the local commit was undone (nothing changed): pull the remote's changes and run again"
                ),
            ));
        }
    }
    Ok((commit, gitops.push))
}

/// Commits need an author; a CI agent often has none configured.
fn identity_args(repo: &Path) -> Vec<String> {
    if git(repo, &["config", "user.email"], None).is_ok_and(|email| !email.trim().is_empty()) {
        return Vec::new();
    }
    vec![
        "-c".into(),
        "user.name=os-deploy".into(),
        "-c".into(),
        "user.email=os-deploy@localhost".into(),
    ]
}

fn check_rendered(options: &Options, dir: &Path, plan: &Plan, batch: &Batch) -> Result<(), String> {
    let text = options.kubectl.kustomize(dir).map_err(|e| e.to_string())?;
    let rendered =
        Manifest::parse(format!("{} (kubectl kustomize)", dir.display()), text).map_err(|e| e.to_string())?;
    for placement in &plan.placements {
        let want = batch.entries[placement.entry]
            .target
            .as_ref()
            .expect("gated")
            .pinned();
        let found = rendered
            .images
            .iter()
            .find(|i| i.object == placement.object && i.container == placement.container)
            .map(|i| i.image.as_str());
        let same = found.is_some_and(|image| {
            image == want
                || image.parse::<RegistryRef>().ok().map(|r| r.to_string())
                    == want.parse::<RegistryRef>().ok().map(|r| r.to_string())
        });
        if !same {
            return Err(format!(
                "after setting images:, {} container {} renders as {}, not {want}: the kustomization was left unchanged",
                placement.object,
                placement.container,
                found.unwrap_or("nothing")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(name: &str, new_name: &str, digest: &str) -> ImageUpdate {
        ImageUpdate {
            name: name.into(),
            new_name: new_name.into(),
            digest: digest.into(),
        }
    }

    #[test]
    fn images_are_added_where_there_were_none() {
        let text = "# cluster config\nresources:\n  - deploy.yaml # the app\n";
        let out = set_images("k.yaml", text, &[update("iam", "prod/iam", "sha256:1")]).unwrap();
        assert_eq!(
            out,
            format!("{text}images:\n- name: iam\n  newName: prod/iam\n  digest: sha256:1\n")
        );
    }

    #[test]
    fn existing_entries_are_rewritten_in_place_and_others_appended_in_their_layout() {
        let text = "\
resources: [deploy.yaml]
images:
  # pinned by the pipeline
  - name: dev.example.com/iam
    newName: prod.example.com/iam
    newTag: \"1.0\"
  - name: redis   # not ours
    newTag: '7'
namePrefix: x-
";
        let out = set_images(
            "k.yaml",
            text,
            &[
                update("prod.example.com/iam", "prod.example.com/iam", "sha256:2"),
                update("auth", "prod.example.com/auth", "sha256:3"),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            "\
resources: [deploy.yaml]
images:
  # pinned by the pipeline
  - name: dev.example.com/iam
    newName: prod.example.com/iam
    digest: sha256:2
  - name: redis   # not ours
    newTag: '7'
  - name: auth
    newName: prod.example.com/auth
    digest: sha256:3
namePrefix: x-
"
        );
    }

    #[test]
    fn bare_names_drop_tag_and_digest_but_keep_ports() {
        assert_eq!(bare_name("localhost:5000/iam:1.0"), "localhost:5000/iam");
        assert_eq!(bare_name("localhost:5000/iam"), "localhost:5000/iam");
        assert_eq!(bare_name("iam@sha256:abc"), "iam");
        assert_eq!(bare_name("r.io/iam:1@sha256:abc"), "r.io/iam");
    }
}
