//! OCI 1.1 referrers: the Referrers API where a registry has it (asked once
//! per host), else the `sha256-<hex>` tag-fallback index.

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};

use super::manifests::media_type_only;
use super::{Registry, RegistryError, Slot, header_str};
use crate::digest::Digest;
use crate::manifest;
use crate::reference::RegistryRef;

/// How a registry answered for referrers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Referrers {
    /// The OCI 1.1 Referrers API.
    Api,
    /// The `sha256-<hex>` tag-fallback index (registries without the API).
    TagFallback,
    /// Neither holds anything.
    #[default]
    None,
}

impl Registry {
    /// The manifests that name `digest` as their `subject` (OCI 1.1
    /// referrers): from the Referrers API where the registry has it, else
    /// from the `sha256-<hex>` tag-fallback index. Returns the index's
    /// descriptors and which mechanism answered.
    pub async fn referrers(
        &self,
        repository: &RegistryRef,
        digest: &Digest,
    ) -> Result<(Vec<serde_json::Value>, Referrers), RegistryError> {
        let (entries, mechanism, _) = self.referrers_and_fallback(repository, digest).await?;
        Ok((entries, mechanism))
    }

    /// [`Registry::referrers`], plus the tag-fallback index's bytes when
    /// that is what answered (for a copier that carries the index).
    pub async fn referrers_and_fallback(
        &self,
        repository: &RegistryRef,
        digest: &Digest,
    ) -> Result<(Vec<serde_json::Value>, Referrers, Option<Bytes>), RegistryError> {
        if let Some(body) = self.referrers_api(repository, digest).await? {
            return Ok((index_entries(repository, &body)?, Referrers::Api, None));
        }
        let fallback = repository.with_tag(digest.tag_form());
        match self.fetch_manifest_if_any(&fallback).await? {
            Some((body, _)) => Ok((
                index_entries(repository, &body)?,
                Referrers::TagFallback,
                Some(body),
            )),
            None => Ok((Vec::new(), Referrers::None, None)),
        }
    }

    /// Pushes an OCI 1.1 referrer (a manifest with a `subject`) by digest
    /// and makes it findable: a registry with the Referrers API indexes it
    /// itself; otherwise a descriptor for it is added to the subject's
    /// `sha256-<hex>` tag-fallback index (read, appended, written back: two
    /// writers at the same instant can lose an entry, as with every client of
    /// the fallback scheme). Returns the manifest's digest and the mechanism.
    pub async fn push_referrer(
        &self,
        repository: &RegistryRef,
        subject: &Digest,
        manifest: Bytes,
        artifact_type: &str,
        annotations: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Digest, Referrers), RegistryError> {
        let size = manifest.len();
        let digest = self
            .push_manifest(repository, None, manifest::OCI_MANIFEST, manifest)
            .await?;
        if self.has_referrers_api(repository, subject).await? {
            return Ok((digest, Referrers::Api));
        }
        let tag = subject.tag_form();
        let fallback = repository.with_tag(&tag);
        let mut entries = match self.fetch_manifest_if_any(&fallback).await? {
            Some((body, _)) => index_entries(repository, &body)?,
            None => Vec::new(),
        };
        let listed = entries.iter().any(|entry| {
            entry.get("digest").and_then(serde_json::Value::as_str) == Some(&digest.to_string())
        });
        if !listed {
            entries.push(serde_json::json!({
                "mediaType": manifest::OCI_MANIFEST,
                "digest": digest.to_string(),
                "size": size,
                "artifactType": artifact_type,
                "annotations": annotations,
            }));
            let body = manifest::referrers_index(&entries);
            self.push_manifest(&fallback, Some(&tag), manifest::OCI_INDEX, Bytes::from(body))
                .await?;
        }
        Ok((digest, Referrers::TagFallback))
    }

    /// Whether this host is already known to lack the Referrers API.
    pub fn lacks_referrers_api(&self, registry: &str) -> bool {
        // Locked only while the first question to the host is in flight:
        // not known yet.
        self.referrers_slot(registry)
            .try_lock()
            .is_ok_and(|known| *known == Some(false))
    }

    pub(super) fn referrers_slot(&self, registry: &str) -> Slot<bool> {
        self.referrers_api_of
            .lock()
            .expect("referrers cache poisoned")
            .entry(registry.to_string())
            .or_default()
            .clone()
    }

    /// Whether the registry answers the OCI 1.1 Referrers API (with an
    /// index) for `digest`.
    pub async fn has_referrers_api(
        &self,
        repository: &RegistryRef,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        Ok(self.referrers_api(repository, digest).await?.is_some())
    }

    /// The Referrers API's index for `digest`, or `None` when the registry
    /// does not answer it with one (no API: 404, or some other page).
    pub(super) async fn referrers_api(
        &self,
        repository: &RegistryRef,
        digest: &Digest,
    ) -> Result<Option<Bytes>, RegistryError> {
        // The first question to a host is asked alone; concurrent ones
        // wait for its answer rather than each probing a registry that may
        // not have the API.
        let slot = self.referrers_slot(&repository.registry);
        let mut known = slot.lock().await;
        match *known {
            Some(false) => Ok(None),
            Some(true) => {
                drop(known);
                Ok(self.ask_referrers(repository, digest).await?.0)
            }
            None => {
                let (index, has_api) = self.ask_referrers(repository, digest).await?;
                *known = has_api;
                Ok(index)
            }
        }
    }

    /// One Referrers API request: the index, if one was answered, and what
    /// the answer says about the API (`None`: nothing settled, say a 401).
    pub(super) async fn ask_referrers(
        &self,
        repository: &RegistryRef,
        digest: &Digest,
    ) -> Result<(Option<Bytes>, Option<bool>), RegistryError> {
        let path = format!("/v2/{}/referrers/{digest}", repository.repository);
        let response = self
            .send(repository, "pull", Method::GET, &path, Some(manifest::OCI_INDEX))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok((None, Some(false)));
        }
        let is_index = header_str(response.headers(), CONTENT_TYPE.as_str())
            .is_some_and(|t| media_type_only(t) == manifest::OCI_INDEX);
        if !(response.status().is_success() && is_index) {
            return Ok((None, None));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| self.unreachable(repository, &e))?;
        Ok((Some(body), Some(true)))
    }
}

impl Referrers {
    /// How events name the mechanism.
    pub fn label(self) -> &'static str {
        match self {
            Referrers::Api => "referrers-api",
            Referrers::TagFallback => "tag-fallback",
            Referrers::None => "none",
        }
    }
}

pub(super) fn index_entries(
    repository: &RegistryRef,
    body: &[u8],
) -> Result<Vec<serde_json::Value>, RegistryError> {
    manifest::index_entries(body).map_err(|e| RegistryError::Protocol {
        registry: repository.registry.clone(),
        detail: format!("referrers index is not JSON: {e}"),
    })
}
