//! Manifests by tag or digest: resolved (HEAD), fetched and hashed against
//! their digest before they are trusted, and pushed.

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};

use super::{Registry, RegistryError, Resolved, header_str};
use crate::digest::Digest;
use crate::manifest;
use crate::reference::RegistryRef;

pub(super) const DIGEST_HEADER: &str = "docker-content-digest";

impl Registry {
    /// Resolves a reference to its manifest digest, media type, size and
    /// platforms: one HEAD where the registry tells all of that in headers,
    /// a GET by digest (hashed and compared) for an index's platforms or
    /// when headers are missing.
    pub async fn resolve(&self, reference: &RegistryRef) -> Result<Resolved, RegistryError> {
        let path = format!(
            "/v2/{}/manifests/{}",
            reference.repository,
            reference.manifest_reference()
        );
        let response = self
            .send(reference, "pull", Method::HEAD, &path, Some(manifest::ACCEPT_ALL))
            .await?;
        let response = self.expect_ok(reference, response, "manifest").await?;
        let headers = response.headers();
        let header_digest = header_digest(reference, headers)?;
        let content_type = header_str(headers, CONTENT_TYPE.as_str()).map(media_type_only);
        let size = header_str(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
        if let (Some(wanted), Some(got)) = (&reference.digest, &header_digest)
            && wanted != got
        {
            return Err(RegistryError::DigestMismatch {
                reference: reference.to_string(),
                expected: wanted.to_string(),
                actual: got.to_string(),
            });
        }
        match (header_digest, content_type, size) {
            (Some(digest), Some(media_type), Some(size)) if !manifest::is_index(&media_type) && size > 0 => {
                Ok(Resolved {
                    digest,
                    media_type,
                    size,
                    platforms: Vec::new(),
                })
            }
            (digest, _, _) => {
                let digest = digest.or_else(|| reference.digest.clone());
                let (bytes, served_type) = self.fetch_manifest(reference, digest.as_ref()).await?;
                let summary = manifest::summarize(&bytes, served_type.as_deref()).map_err(|e| {
                    RegistryError::Protocol {
                        registry: reference.registry.clone(),
                        detail: format!("{reference}: {e}"),
                    }
                })?;
                Ok(Resolved {
                    digest: Digest::of(&bytes),
                    media_type: summary.media_type,
                    size: bytes.len() as u64,
                    platforms: summary.platforms,
                })
            }
        }
    }

    /// Fetches manifest bytes, by `digest` when given (else by the
    /// reference's tag), and checks they hash to the digest asked for and to
    /// the digest the registry claims. Returns the bytes and Content-Type.
    pub async fn fetch_manifest(
        &self,
        reference: &RegistryRef,
        digest: Option<&Digest>,
    ) -> Result<(Bytes, Option<String>), RegistryError> {
        let wanted = digest.or(reference.digest.as_ref());
        let by = wanted
            .map(Digest::to_string)
            .unwrap_or_else(|| reference.manifest_reference());
        let path = format!("/v2/{}/manifests/{by}", reference.repository);
        let response = self
            .send(reference, "pull", Method::GET, &path, Some(manifest::ACCEPT_ALL))
            .await?;
        let response = self.expect_ok(reference, response, "manifest").await?;
        let claimed = header_digest(reference, response.headers())?;
        let served_type = header_str(response.headers(), CONTENT_TYPE.as_str()).map(media_type_only);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.unreachable(reference, &e))?;
        let actual = Digest::of(&bytes);
        for expected in [wanted, claimed.as_ref()].into_iter().flatten() {
            if *expected != actual {
                return Err(RegistryError::DigestMismatch {
                    reference: reference.to_string(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        Ok((bytes, served_type))
    }

    /// Like [`Registry::fetch_manifest`] by tag, but a missing tag is
    /// `None` rather than an error.
    pub async fn fetch_manifest_if_any(
        &self,
        reference: &RegistryRef,
    ) -> Result<Option<(Bytes, Option<String>)>, RegistryError> {
        match self.fetch_manifest(reference, None).await {
            Ok(found) => Ok(Some(found)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Puts manifest bytes under `tag` (or under their digest when `None`)
    /// and checks the registry stored exactly them. Returns their digest.
    pub async fn push_manifest(
        &self,
        reference: &RegistryRef,
        tag: Option<&str>,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of(&bytes);
        let name = tag.map(str::to_string).unwrap_or_else(|| digest.to_string());
        let path = format!("/v2/{}/manifests/{name}", reference.repository);
        let response = self
            .send_body(
                reference,
                "pull,push",
                Method::PUT,
                &path,
                None,
                Some((bytes, media_type)),
            )
            .await?;
        let response = self.expect_ok(reference, response, "manifest upload").await?;
        if let Some(stored) = header_digest(reference, response.headers())?
            && stored != digest
        {
            return Err(RegistryError::DigestMismatch {
                reference: reference.to_string(),
                expected: digest.to_string(),
                actual: stored.to_string(),
            });
        }
        Ok(digest)
    }
}

pub(super) fn media_type_only(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or(content_type)
        .trim()
        .to_string()
}

pub(super) fn header_digest(
    reference: &RegistryRef,
    headers: &HeaderMap,
) -> Result<Option<Digest>, RegistryError> {
    match header_str(headers, DIGEST_HEADER) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|e| RegistryError::Protocol {
            registry: reference.registry.clone(),
            detail: format!("Docker-Content-Digest header: {e}"),
        }),
    }
}
