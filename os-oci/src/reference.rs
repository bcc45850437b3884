//! Image references: `registry/repo[:tag][@sha256:…]` with Docker Hub short
//! names normalised, and `oci:DIR[:tag][@sha256:…]` for OCI image layouts
//! on disk. Parsing rejects anything a registry would reject, so a bad
//! reference fails here with a message naming the bad part instead of as a
//! confusing 404 later.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The registry Docker Hub short names (`alpine`, `user/app`) belong to.
pub const DOCKER_HUB: &str = "docker.io";

/// Where an image lives: a registry repository or an OCI layout directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    Registry(RegistryRef),
    Layout(LayoutRef),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryRef {
    /// Host and optional port, e.g. `devacr.azurecr.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `onestream/iam`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutRef {
    /// The layout directory, as the user spelled it.
    pub dir: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid { reference: String, reason: String },
    #[error("invalid image reference {reference:?}: {source}")]
    BadDigest { reference: String, source: DigestError },
}

impl ImageRef {
    pub fn tag(&self) -> Option<&str> {
        match self {
            ImageRef::Registry(r) => r.tag.as_deref(),
            ImageRef::Layout(l) => l.tag.as_deref(),
        }
    }

    pub fn digest(&self) -> Option<&Digest> {
        match self {
            ImageRef::Registry(r) => r.digest.as_ref(),
            ImageRef::Layout(l) => l.digest.as_ref(),
        }
    }

    /// Where the image lives without tag or digest: the record's `image`.
    pub fn location(&self) -> String {
        match self {
            ImageRef::Registry(r) => r.name(),
            ImageRef::Layout(l) => format!("oci:{}", l.dir),
        }
    }

    /// The last path segment of the repository (or layout directory): the
    /// service name `--service-from-repo` derives.
    pub fn last_segment(&self) -> &str {
        let path = match self {
            ImageRef::Registry(r) => r.repository.as_str(),
            ImageRef::Layout(l) => l.dir.trim_end_matches('/'),
        };
        path.rsplit('/').next().unwrap_or(path)
    }

    /// The same location with another tag and digest.
    pub fn with(&self, tag: Option<String>, digest: Option<Digest>) -> ImageRef {
        match self {
            ImageRef::Registry(r) => ImageRef::Registry(RegistryRef {
                tag,
                digest,
                ..r.clone()
            }),
            ImageRef::Layout(l) => ImageRef::Layout(LayoutRef {
                tag,
                digest,
                ..l.clone()
            }),
        }
    }
}

impl RegistryRef {
    /// `registry/repository`, the record's `image` for a registry.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host to send HTTP requests to (Docker Hub's API is not at
    /// `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// The same repository with another digest (or none), never a tag.
    pub fn with(&self, digest: Option<Digest>) -> RegistryRef {
        RegistryRef {
            tag: None,
            digest,
            ..self.clone()
        }
    }

    /// The same repository, pinned to `digest` (no tag).
    pub fn with_digest(&self, digest: Digest) -> RegistryRef {
        RegistryRef {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository at `tag` (no digest).
    pub fn with_tag(&self, tag: impl Into<String>) -> RegistryRef {
        RegistryRef {
            tag: Some(tag.into()),
            digest: None,
            ..self.clone()
        }
    }

    /// What the registry API calls the manifest: the digest when pinned,
    /// else the tag, else `latest`.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ReferenceError::Empty);
        }
        match text.strip_prefix("oci:") {
            Some(rest) => parse_layout(text, rest).map(ImageRef::Layout),
            None => parse_registry(text).map(ImageRef::Registry),
        }
    }
}

impl FromStr for RegistryRef {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_registry(text.trim())
    }
}

fn invalid(reference: &str, reason: impl Into<String>) -> ReferenceError {
    ReferenceError::Invalid {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

/// Splits a trailing `@algorithm:hex`, validating it as a digest.
fn split_digest<'a>(whole: &str, text: &'a str) -> Result<(&'a str, Option<Digest>), ReferenceError> {
    match text.rsplit_once('@') {
        Some((name, digest)) => {
            let digest = digest.parse().map_err(|source| ReferenceError::BadDigest {
                reference: whole.to_string(),
                source,
            })?;
            Ok((name, Some(digest)))
        }
        None => Ok((text, None)),
    }
}

fn parse_registry(text: &str) -> Result<RegistryRef, ReferenceError> {
    if text.contains("://") {
        return Err(invalid(
            text,
            "a reference names registry/repository, not a URL: drop the scheme",
        ));
    }
    let (name, digest) = split_digest(text, text)?;
    let (name, tag) = match name.rsplit_once(':') {
        Some((before, after)) if !after.contains('/') => (before, Some(after)),
        _ => (name, None),
    };
    if let Some(tag) = tag {
        check_tag(text, tag)?;
    }
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest)) if looks_like_host(first) => (first.to_string(), rest.to_string()),
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => registry,
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    check_repository(text, &repository)?;
    check_host(text, &registry)?;
    Ok(RegistryRef {
        registry,
        repository,
        tag: tag.map(str::to_string),
        digest,
    })
}

fn parse_layout(whole: &str, rest: &str) -> Result<LayoutRef, ReferenceError> {
    let (path, digest) = split_digest(whole, rest)?;
    let (dir, tag) = match path.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => {
            check_tag(whole, tag)?;
            (dir, Some(tag.to_string()))
        }
        _ => (path, None),
    };
    if dir.is_empty() {
        return Err(invalid(
            whole,
            "oci: needs a layout directory, e.g. oci:./build/app:1.0",
        ));
    }
    Ok(LayoutRef {
        dir: dir.to_string(),
        tag,
        digest,
    })
}

/// Docker's rule: the first component is a registry host when it has a dot
/// or a port, or is `localhost`.
fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn check_host(whole: &str, host: &str) -> Result<(), ReferenceError> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => (name, Some(port)),
        _ => (host, None),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err())
    {
        return Err(invalid(whole, format!("registry port {port:?} is not a number")));
    }
    let ok = !name.is_empty()
        && (name.starts_with('[') && name.ends_with(']')
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            whole,
            format!("registry host {name:?} is not a host name"),
        ))
    }
}

fn check_tag(whole: &str, tag: &str) -> Result<(), ReferenceError> {
    let mut bytes = tag.bytes();
    let first_ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(invalid(
            whole,
            format!("tag {tag:?} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"),
        ))
    }
}

/// Each path component: lowercase alphanumerics joined by `.`, `_`, `__`
/// or runs of `-` (the distribution spec's grammar).
fn check_repository(whole: &str, repository: &str) -> Result<(), ReferenceError> {
    let component_ok = |component: &str| {
        let bytes = component.as_bytes();
        if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            if is_alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !is_alnum(bytes[i]) {
                i += 1;
            }
            let separator = &component[start..i];
            let allowed = separator == "."
                || separator == "_"
                || separator == "__"
                || separator.bytes().all(|b| b == b'-');
            if !allowed {
                return false;
            }
        }
        true
    };
    if repository.split('/').all(component_ok) && repository.len() <= 255 {
        Ok(())
    } else {
        Err(invalid(
            whole,
            format!(
                "repository {repository:?} must be lowercase letters and digits, separated by '/', '.', '_', '__' or '-'"
            ),
        ))
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => r.fmt(f),
            ImageRef::Layout(l) => {
                write!(f, "oci:{}", l.dir)?;
                if let Some(tag) = &l.tag {
                    write!(f, ":{tag}")?;
                }
                if let Some(digest) = &l.digest {
                    write!(f, "@{digest}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(text: &str) -> RegistryRef {
        match text.parse::<ImageRef>().unwrap() {
            ImageRef::Registry(r) => r,
            other => panic!("expected a registry reference, got {other:?}"),
        }
    }

    #[test]
    fn docker_hub_short_names_are_normalised() {
        let r = registry("alpine");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/alpine")
        );
        assert_eq!(r.tag, None);
        assert_eq!(registry("user/app:1").name(), "docker.io/user/app");
        assert_eq!(
            registry("index.docker.io/library/alpine:3").name(),
            "docker.io/library/alpine"
        );
        assert_eq!(registry("alpine").api_host(), "registry-1.docker.io");
    }

    #[test]
    fn hosts_ports_tags_and_digests() {
        let digest = format!("sha256:{}", "0f".repeat(32));
        let r = registry(&format!("127.0.0.1:5000/onestream/iam:1.4.2@{digest}"));
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "onestream/iam");
        assert_eq!(r.tag.as_deref(), Some("1.4.2"));
        assert_eq!(r.digest.as_ref().unwrap().to_string(), digest);
        assert_eq!(r.manifest_reference(), digest);
        assert_eq!(registry("localhost/app").registry, "localhost");
        assert_eq!(registry("devacr.azurecr.io/app").manifest_reference(), "latest");
        assert_eq!(
            registry(&format!("reg.example.com/a/b:t@{digest}")).to_string(),
            format!("reg.example.com/a/b:t@{digest}")
        );
    }

    #[test]
    fn layouts_with_and_without_tags() {
        let r: ImageRef = "oci:./build/iam:1.4.2".parse().unwrap();
        assert_eq!(
            r,
            ImageRef::Layout(LayoutRef {
                dir: "./build/iam".into(),
                tag: Some("1.4.2".into()),
                digest: None
            })
        );
        assert_eq!(r.location(), "oci:./build/iam");
        assert_eq!(r.last_segment(), "iam");
        let r: ImageRef = "oci:/tmp/x".parse().unwrap();
        assert_eq!(r.tag(), None);
        assert!("oci:".parse::<ImageRef>().is_err());
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        for (text, needle) in [
            ("Reg.example.com/UPPER:1", "repository"),
            ("reg.example.com/app:-bad", "tag"),
            ("reg.example.com/app@sha256:1234", "malformed digest"),
            ("reg.example.com/app@md5:abcd", "unsupported digest algorithm"),
            ("https://reg.example.com/app", "URL"),
            ("reg.example.com:99999/app", "port"),
            ("reg.example.com//app", "repository"),
        ] {
            let message = text.parse::<ImageRef>().unwrap_err().to_string();
            assert!(message.contains(needle), "{text}: {message}");
        }
        assert_eq!("  ".parse::<ImageRef>(), Err(ReferenceError::Empty));
    }
}
