//! `Registries_ImportImage`: its parameters, checked at once.
//!
//! `POST …/registries/{name}/importImage` with `ImportImageParameters`.
//! Checked at once: a `Content-Type` other than `application/json` → 415
//! `UnsupportedMediaType`; a body that is not JSON → 400 `InvalidRequestContent`;
//! `source.sourceImage` missing or not `repo`, `repo:tag` or
//! `repo@sha256:…`, neither `source.resourceId` nor `source.registryUri`,
//! `credentials` without `password`, a bad `targetTags` /
//! `untaggedTargetRepositories` entry, both of them empty, or a `mode`
//! other than `NoForce`/`Force` → 400 `InvalidParameters` (ACR's code for
//! import parameters); a `resourceId` that names no registry of the
//! subscription → 404 `ResourceNotFound`; a source registry of the
//! stand-in whose export policy is disabled → 400 `ExportPolicyDisabled`
//! (a name chosen here: ACR documents the refusal, not its code).
//! `resourceId` wins when both it and `registryUri` are given. A target tag
//! without `:tag` takes the source's tag (`latest` when the source is by
//! digest). What is accepted becomes an operation (`operation.rs`) whose
//! [`Job`] copies the image (`copy.rs`).

use std::sync::Arc;

use serde_json::Value;

use super::copy::Job;
use super::http::{Reply, arm_error, throttled};
use super::operation::accept;
use super::registries::parse_resource_id;
use super::registry_client::RegistryClient;
use super::{AcrEntry, Fault, PROVIDER, State};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Reference {
    Tag(String),
    Digest(String),
}

impl Reference {
    pub(super) fn as_str(&self) -> &str {
        match self {
            Reference::Tag(tag) | Reference::Digest(tag) => tag,
        }
    }
}

/// `repo`, `repo:tag` or `repo@sha256:…`.
fn parse_image(image: &str) -> Result<(String, Reference), String> {
    let (repo, reference) = if let Some((repo, digest)) = image.split_once('@') {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!("'{digest}' is not a sha256 digest"));
        }
        (repo, Reference::Digest(digest.to_string()))
    } else {
        match image.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Reference::Tag(valid_tag(tag)?.to_string())),
            _ => (image, Reference::Tag("latest".into())),
        }
    };
    Ok((valid_repository(repo)?.to_string(), reference))
}

/// Distribution's repository grammar: `/`-separated lower-case components.
fn valid_repository(repo: &str) -> Result<&str, String> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || b"._-".contains(&x))
    };
    if repo.len() <= 256 && repo.split('/').all(component_ok) {
        Ok(repo)
    } else {
        Err(format!("'{repo}' is not a valid repository name"))
    }
}

fn valid_tag(tag: &str) -> Result<&str, String> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || b"_.-".contains(&x));
    if ok {
        Ok(tag)
    } else {
        Err(format!("'{tag}' is not a valid tag"))
    }
}

fn invalid(message: impl Into<String>) -> Reply {
    arm_error(400, "InvalidParameters", message)
}

fn string_list(body: &Value, field: &str) -> Result<Vec<String>, Reply> {
    match &body[field] {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("Every entry of '{field}' must be a string.")))
            })
            .collect(),
        _ => Err(invalid(format!("'{field}' must be an array of strings."))),
    }
}

pub(super) fn import(
    state: &Arc<State>,
    target: &AcrEntry,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Reply, Reply> {
    let config = &state.config;
    if let Some(Fault::Throttle { retry_after_secs }) =
        state.take_fault(|f| matches!(f, Fault::Throttle { .. }))
    {
        return Err(throttled("write", &config.subscription, retry_after_secs));
    }
    let media_type = content_type
        .and_then(|t| t.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(arm_error(
            415,
            "UnsupportedMediaType",
            format!(
                "The content media type '{media_type}' is not supported. Only 'application/json' is supported."
            ),
        ));
    }
    let parameters: Value = serde_json::from_slice(body).map_err(|e| {
        arm_error(
            400,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{e}'."),
        )
    })?;
    let source = &parameters["source"];
    if !source.is_object() {
        return Err(invalid("The parameter 'source' is required."));
    }
    let source_image = source["sourceImage"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("The parameter 'source.sourceImage' is required."))?;
    let (source_repo, reference) =
        parse_image(source_image).map_err(|e| invalid(format!("Invalid 'source.sourceImage': {e}.")))?;
    let mode = match parameters["mode"].as_str() {
        None => "NoForce",
        Some(mode) if mode.eq_ignore_ascii_case("NoForce") => "NoForce",
        Some(mode) if mode.eq_ignore_ascii_case("Force") => "Force",
        Some(mode) => {
            return Err(invalid(format!(
                "Invalid 'mode' '{mode}': expected 'NoForce' or 'Force'."
            )));
        }
    };
    let credentials = match &source["credentials"] {
        Value::Null => None,
        given => {
            let password = given["password"]
                .as_str()
                .ok_or_else(|| invalid("The parameter 'source.credentials.password' is required."))?;
            let username = given["username"].as_str().unwrap_or_default();
            Some((username.to_string(), password.to_string()))
        }
    };
    let default_tag = match &reference {
        Reference::Tag(tag) => tag.clone(),
        Reference::Digest(_) => "latest".to_string(),
    };
    let mut tags = Vec::new();
    for entry in string_list(&parameters, "targetTags")? {
        let (repo, tag) = match entry.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag.to_string()),
            _ => (entry.as_str(), default_tag.clone()),
        };
        let bad = |e: String| invalid(format!("Invalid 'targetTags' entry '{entry}': {e}."));
        valid_repository(repo).map_err(bad)?;
        valid_tag(&tag).map_err(bad)?;
        tags.push((repo.to_string(), tag));
    }
    let untagged = string_list(&parameters, "untaggedTargetRepositories")?;
    for repo in &untagged {
        valid_repository(repo)
            .map_err(|e| invalid(format!("Invalid 'untaggedTargetRepositories' entry: {e}.")))?;
    }
    if tags.is_empty() && untagged.is_empty() {
        return Err(invalid(
            "At least one of 'targetTags' or 'untaggedTargetRepositories' must be given.",
        ));
    }

    // Where from.
    let (source_host, source_entry) = match (source["resourceId"].as_str(), source["registryUri"].as_str()) {
        (Some(id), _) => {
            let (subscription, group, name) = parse_resource_id(id).ok_or_else(|| {
                invalid(format!(
                    "Invalid 'source.resourceId' '{id}': not a {PROVIDER}/registries resource id."
                ))
            })?;
            let entry = config
                .registries
                .iter()
                .find(|r| {
                    subscription.eq_ignore_ascii_case(&config.subscription)
                        && r.resource_group.eq_ignore_ascii_case(group)
                        && r.name.eq_ignore_ascii_case(name)
                })
                .ok_or_else(|| {
                    arm_error(
                        404,
                        "ResourceNotFound",
                        format!("The source registry resource '{id}' was not found."),
                    )
                })?;
            (entry.copy_host().to_string(), Some(entry))
        }
        (None, Some(uri)) if !uri.trim().is_empty() => {
            let host = uri
                .trim()
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let entry = config
                .registries
                .iter()
                .find(|r| r.host.eq_ignore_ascii_case(host));
            // A login server of the stand-in is copied from at its backend.
            let copy_host = entry.map_or(host, AcrEntry::copy_host);
            (copy_host.to_string(), entry)
        }
        _ => {
            return Err(invalid(
                "One of 'source.resourceId' or 'source.registryUri' is required.",
            ));
        }
    };
    if let Some(entry) = source_entry.filter(|e| e.export_disabled) {
        return Err(arm_error(
            400,
            "ExportPolicyDisabled",
            format!(
                "Import of artifacts from registry '{}' is not allowed: its export policy is disabled (properties.policies.exportPolicy.status).",
                entry.name
            ),
        ));
    }

    // Accepted.
    let job = Job {
        source: RegistryClient::new(
            &source_host,
            credentials.or_else(|| source_entry.and_then(|e| e.credentials.clone())),
        ),
        source_repo,
        reference,
        target: RegistryClient::new(target.copy_host(), target.credentials.clone()),
        tags,
        untagged,
        force: mode == "Force",
        fail_midway: state.take_fault(|f| *f == Fault::FailMidway).is_some(),
    };
    Ok(accept(state, target, parameters, job))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_parse_as_the_spec_describes_them() {
        assert_eq!(
            parse_image("hello-world").unwrap(),
            ("hello-world".into(), Reference::Tag("latest".into()))
        );
        assert_eq!(
            parse_image("team/app:1.2").unwrap(),
            ("team/app".into(), Reference::Tag("1.2".into()))
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse_image(&format!("team/app@{digest}")).unwrap(),
            ("team/app".into(), Reference::Digest(digest))
        );
        assert!(parse_image("team/app@sha256:abc").is_err());
        assert!(parse_image("Team/App:1").is_err());
        assert!(parse_image("app:-bad").is_err());
    }
}
