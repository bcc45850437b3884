//! Registry access over the OCI distribution API: one HTTP client and
//! connection pool for the whole run, the registry's auth challenge
//! discovered once per host, bearer tokens cached per scope, bounded
//! retries, and every manifest fetched hashed before it is trusted.
//!
//! Why not `oci-client` (0.18): its requests go through its own private
//! `reqwest::Client`, and several things this tool chain needs are out of
//! reach there: a HEAD that reports media type and size (it returns the
//! digest only), response headers on errors (so `Retry-After` cannot be
//! honoured), auth on anonymous registries without a `/v2/` probe before
//! every request, and tokens scoped to two repositories for cross-repository
//! mounts. The protocol surface we use is small, so it is spoken here
//! directly; `reqwest` does the HTTP, `docker_credential` the credentials.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use crate::http::{self, RetryPolicy, USER_AGENT, describe, is_loopback, retry_after};
use crate::oci::credentials::{self, Credential, CredentialError};
use crate::oci::digest::Digest;
use crate::oci::manifest;
use crate::oci::reference::RegistryRef;

const DIGEST_HEADER: &str = "docker-content-digest";
/// Tokens without `expires_in` live 60 s by the token spec; we renew a
/// little early so a token never expires in flight.
const TOKEN_LIFETIME_DEFAULT: u64 = 60;
const TOKEN_RENEW_MARGIN: u64 = 10;

/// How a run talks to registries.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`) allowed over plain HTTP besides loopback.
    pub insecure_registries: Vec<String>,
    /// PEM files with extra CA certificates to trust.
    pub ca_files: Vec<PathBuf>,
    /// Credentials from flags or the environment; they take precedence over
    /// the auth file for every registry the run contacts.
    pub credential: Option<Credential>,
    pub retry: RetryPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry}: {detail}")]
    Unreachable { registry: String, detail: String },
    #[error("{registry} refused access to {repository} ({status}): {detail}")]
    Unauthorized {
        registry: String,
        repository: String,
        status: u16,
        detail: String,
    },
    #[error("{reference}: not found in the registry (404)")]
    NotFound { reference: String },
    #[error("{registry} answered {status} for {what}: {detail}")]
    Status {
        registry: String,
        what: String,
        status: u16,
        detail: String,
        /// What the registry's `Retry-After` asked for (429, 503), so a
        /// caller that restarts a whole transfer waits as long as asked.
        retry_after: Option<Duration>,
    },
    #[error("{reference}: the registry served content whose digest is {actual}, not {expected}")]
    DigestMismatch {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("{registry}: {detail}")]
    Protocol { registry: String, detail: String },
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("cannot use CA file {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },
}

/// A manifest's identity as a registry reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// `os/arch[/variant]` for an index; empty for a single manifest.
    pub platforms: Vec<String>,
}

#[derive(Debug)]
enum Challenge {
    None,
    Basic,
    Bearer { realm: String, service: Option<String> },
}

#[derive(Debug)]
struct Host {
    /// `https://host` or `http://host`.
    base: String,
    challenge: Challenge,
}

struct Token {
    value: String,
    expires: Instant,
}

type Slot<T> = Arc<tokio::sync::Mutex<Option<T>>>;

/// The run's registry client. Cheap to share behind an `Arc`.
pub struct Registry {
    http: reqwest::Client,
    options: RegistryOptions,
    hosts: Mutex<HashMap<String, Slot<Arc<Host>>>>,
    tokens: Mutex<HashMap<(String, String), Slot<Token>>>,
    credentials: Mutex<HashMap<String, Slot<Option<Credential>>>>,
    /// Shared blobs known to be in a repository (host, repository, digest).
    present_blobs: Mutex<HashMap<(String, String, Digest), Slot<()>>>,
    /// Per host, whether it has the Referrers API, once known: a registry
    /// that has it never answers 404 (OCI distribution spec), so one 404
    /// settles it, and so does one index answered.
    referrers_api_of: Mutex<HashMap<String, Slot<bool>>>,
}

fn slot<K: std::hash::Hash + Eq, T>(map: &Mutex<HashMap<K, Slot<T>>>, key: K) -> Slot<T> {
    map.lock()
        .expect("slot map poisoned")
        .entry(key)
        .or_default()
        .clone()
}

impl Registry {
    pub fn new(options: RegistryOptions) -> Result<Registry, RegistryError> {
        // reqwest is built without a default rustls provider (ring builds in
        // seconds, aws-lc in minutes); install ring once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut certificates = Vec::new();
        for path in &options.ca_files {
            let pem = std::fs::read(path).map_err(|e| RegistryError::CaFile {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            let bundle = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| RegistryError::CaFile {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            if bundle.is_empty() {
                return Err(RegistryError::CaFile {
                    path: path.clone(),
                    detail: "no PEM certificate in it".into(),
                });
            }
            certificates.extend(bundle);
        }
        let builder = || {
            reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(Duration::from_secs(15))
                .read_timeout(Duration::from_secs(120))
                .pool_idle_timeout(Duration::from_secs(60))
        };
        let http = match builder().tls_certs_merge(certificates.clone()).build() {
            Ok(http) => http,
            // No system CA store (a slim CI image without ca-certificates):
            // plain-HTTP loopback registries, layouts and --ca-file registries
            // still work; public TLS registries fail with "unknown issuer".
            Err(error) => {
                tracing::warn!(
                    "no system CA certificates ({}); trusting only --ca-file",
                    describe(&error)
                );
                builder()
                    .tls_certs_only(certificates)
                    .build()
                    .map_err(|e| RegistryError::Unreachable {
                        registry: "(client setup)".into(),
                        detail: describe(&e),
                    })?
            }
        };
        Ok(Registry {
            http,
            options,
            hosts: Mutex::default(),
            tokens: Mutex::default(),
            credentials: Mutex::default(),
            present_blobs: Mutex::default(),
            referrers_api_of: Mutex::default(),
        })
    }

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

    /// Every tag of a repository (`/tags/list`, following `Link` pages);
    /// `None` when the registry will not list them (then ask tag by tag).
    pub async fn tags(&self, repository: &RegistryRef) -> Result<Option<Vec<String>>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let mut path = format!("/v2/{}/tags/list?n=1000", repository.repository);
        loop {
            let response = self.send(repository, "pull", Method::GET, &path, None).await?;
            if !response.status().is_success() {
                return Ok(None);
            }
            let next = header_str(response.headers(), "link").and_then(next_page);
            let body = response
                .bytes()
                .await
                .map_err(|e| self.unreachable(repository, &e))?;
            let Ok(page) = serde_json::from_slice::<Page>(&body) else {
                return Ok(None);
            };
            tags.extend(page.tags.unwrap_or_default());
            match next {
                // Registries answer with a path (`</v2/…?last=…>; rel="next"`).
                Some(next) if next.starts_with("/v2/") => path = next,
                Some(_) => return Ok(None),
                None => return Ok(Some(tags)),
            }
        }
    }

    /// The digest a tag points to, if the tag exists (one HEAD; a GET where
    /// the registry sends no digest header).
    pub async fn tag_digest(
        &self,
        reference: &RegistryRef,
        tag: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let tagged = reference.with_tag(tag);
        let path = format!("/v2/{}/manifests/{tag}", reference.repository);
        let response = self
            .send(&tagged, "pull", Method::HEAD, &path, Some(manifest::ACCEPT_ALL))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = self.expect_ok(&tagged, response, "manifest").await?;
        match header_digest(&tagged, response.headers())? {
            Some(digest) => Ok(Some(digest)),
            None => Ok(self
                .fetch_manifest_if_any(&tagged)
                .await?
                .map(|(bytes, _)| Digest::of(&bytes))),
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

    /// A blob's bytes as a stream (layers are never held whole). The caller
    /// hashes what passes through.
    pub async fn blob_stream(
        &self,
        reference: &RegistryRef,
        digest: &Digest,
    ) -> Result<impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, RegistryError>
    {
        use futures::TryStreamExt as _;
        let path = format!("/v2/{}/blobs/{digest}", reference.repository);
        let response = self.send(reference, "pull", Method::GET, &path, None).await?;
        let response = self
            .expect_ok(&reference.with_digest(digest.clone()), response, "blob")
            .await?;
        Ok(response.bytes_stream().map_err(std::io::Error::other))
    }

    /// Mounts `digest` from `from` (same registry) into `target` without
    /// sending bytes. Returns false when the registry would not mount (it
    /// then expects an upload; that session is left to expire).
    pub async fn mount_blob(
        &self,
        target: &RegistryRef,
        from: &RegistryRef,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let scope = format!(
            "repository:{}:pull,push repository:{}:pull",
            target.repository, from.repository
        );
        let path = format!(
            "/v2/{}/blobs/uploads/?mount={digest}&from={}",
            target.repository, from.repository
        );
        let response = self
            .send_scoped(target, &scope, Method::POST, &path, None, None)
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            status if status.is_success() => Ok(false),
            _ => Err(self.expect_ok(target, response, "blob mount").await.unwrap_err()),
        }
    }

    /// Uploads a blob from a stream (POST, then one monolithic PUT with the
    /// known length). Not retried here: a stream cannot be replayed, so the
    /// caller restarts the whole transfer. The registry checks the digest
    /// and refuses a mismatch, so nothing wrong is ever committed.
    pub async fn upload_blob_stream(
        &self,
        reference: &RegistryRef,
        digest: &Digest,
        size: u64,
        body: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<(), RegistryError> {
        let url = self.start_upload(reference, digest).await?;
        let host = self.host(reference).await?;
        let scope = format!("repository:{}:pull,push", reference.repository);
        let mut request = self
            .http
            .put(&url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body));
        if let Some(authorization) = self.authorization(reference, &host, &scope).await? {
            request = request.header(AUTHORIZATION, authorization);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.unreachable(reference, &e))?;
        self.expect_ok(&reference.with_digest(digest.clone()), response, "blob upload")
            .await?;
        Ok(())
    }

    /// Whether this host is already known to lack the Referrers API.
    pub fn lacks_referrers_api(&self, registry: &str) -> bool {
        // Locked only while the first question to the host is in flight:
        // not known yet.
        self.referrers_slot(registry)
            .try_lock()
            .is_ok_and(|known| *known == Some(false))
    }

    fn referrers_slot(&self, registry: &str) -> Slot<bool> {
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
    async fn referrers_api(
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
    async fn ask_referrers(
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

    /// A small blob (config, signature payload), read whole and checked
    /// against its digest.
    pub async fn fetch_blob(&self, reference: &RegistryRef, digest: &Digest) -> Result<Bytes, RegistryError> {
        let path = format!("/v2/{}/blobs/{digest}", reference.repository);
        let response = self.send(reference, "pull", Method::GET, &path, None).await?;
        let blob = reference.with_digest(digest.clone());
        let response = self.expect_ok(&blob, response, "blob").await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.unreachable(reference, &e))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                reference: blob.to_string(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    pub async fn blob_exists(&self, reference: &RegistryRef, digest: &Digest) -> Result<bool, RegistryError> {
        let path = format!("/v2/{}/blobs/{digest}", reference.repository);
        let response = self
            .send(reference, "pull,push", Method::HEAD, &path, None)
            .await?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.expect_ok(reference, response, "blob").await.unwrap_err()),
        }
    }

    /// Makes sure a small blob that many manifests share (an empty config)
    /// is in the repository: checked once per repository per run.
    pub async fn push_small_blob_once(
        &self,
        reference: &RegistryRef,
        bytes: Bytes,
    ) -> Result<(), RegistryError> {
        let digest = Digest::of(&bytes);
        let key = (
            reference.api_host().to_string(),
            reference.repository.clone(),
            digest.clone(),
        );
        let slot = slot(&self.present_blobs, key);
        let mut present = slot.lock().await;
        if present.is_none() {
            if !self.blob_exists(reference, &digest).await? {
                self.upload_small_blob(reference, bytes).await?;
            }
            *present = Some(());
        }
        Ok(())
    }

    /// Starts a blob upload session; returns the absolute URL that finishes
    /// it with one monolithic PUT of the blob `digest`.
    async fn start_upload(&self, reference: &RegistryRef, digest: &Digest) -> Result<String, RegistryError> {
        let path = format!("/v2/{}/blobs/uploads/", reference.repository);
        let response = self
            .send(reference, "pull,push", Method::POST, &path, None)
            .await?;
        let response = self.expect_ok(reference, response, "blob upload").await?;
        let location = header_str(response.headers(), "location").ok_or_else(|| RegistryError::Protocol {
            registry: reference.registry.clone(),
            detail: "blob upload started without a Location".into(),
        })?;
        let location = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.host(reference).await?.base)
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        Ok(format!("{location}{separator}digest={digest}"))
    }

    /// Uploads a small blob in one request pair (POST, then a monolithic
    /// PUT) without asking first: for content that is new almost every time
    /// (a signature payload names the image digest) a HEAD would be a wasted
    /// round trip, and a duplicate upload is harmless.
    pub async fn upload_small_blob(
        &self,
        reference: &RegistryRef,
        bytes: Bytes,
    ) -> Result<(), RegistryError> {
        let url = self.start_upload(reference, &Digest::of(&bytes)).await?;
        let response = self
            .send_body(
                reference,
                "pull,push",
                Method::PUT,
                &url,
                None,
                Some((bytes, "application/octet-stream")),
            )
            .await?;
        self.expect_ok(reference, response, "blob upload").await?;
        Ok(())
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

    async fn expect_ok(
        &self,
        reference: &RegistryRef,
        response: Response,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let detail = error_detail(response).await;
        Err(match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                reference: reference.to_string(),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
                registry: reference.registry.clone(),
                repository: reference.repository.clone(),
                status: status.as_u16(),
                detail: if detail.is_empty() {
                    "check the credentials for this registry".into()
                } else {
                    detail
                },
            },
            _ => RegistryError::Status {
                registry: reference.registry.clone(),
                what: format!("{what} of {reference}"),
                status: status.as_u16(),
                detail,
                retry_after,
            },
        })
    }

    /// Sends a body-less request with auth and retries. Any status comes
    /// back as a response (after retries for 429/5xx ran out); only
    /// transport failures are errors.
    pub async fn send(
        &self,
        reference: &RegistryRef,
        actions: &str,
        method: Method,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response, RegistryError> {
        self.send_body(reference, actions, method, path, accept, None)
            .await
    }

    /// Like [`Registry::send`], with a body (replayable on retry, so only
    /// for small bodies: manifests, signature payloads). `path` may also be
    /// an absolute URL (upload `Location`s are).
    pub async fn send_body(
        &self,
        reference: &RegistryRef,
        actions: &str,
        method: Method,
        path: &str,
        accept: Option<&str>,
        body: Option<(Bytes, &str)>,
    ) -> Result<Response, RegistryError> {
        let scope = format!("repository:{}:{actions}", reference.repository);
        self.send_scoped(reference, &scope, method, path, accept, body)
            .await
    }

    /// [`Registry::send_body`] with an explicit token scope (a mount asks
    /// for the source repository too).
    async fn send_scoped(
        &self,
        reference: &RegistryRef,
        scope: &str,
        method: Method,
        path: &str,
        accept: Option<&str>,
        body: Option<(Bytes, &str)>,
    ) -> Result<Response, RegistryError> {
        let host = self.host(reference).await?;
        let scope = scope.to_string();
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", host.base)
        };
        let mut attempts = self.options.retry.start();
        let mut refreshed_token = false;
        loop {
            let mut request = self.http.request(method.clone(), &url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some((bytes, content_type)) = &body {
                request = request.header(CONTENT_TYPE, *content_type).body(bytes.clone());
            }
            if let Some(authorization) = self.authorization(reference, &host, &scope).await? {
                request = request.header(AUTHORIZATION, authorization);
            }
            let sent = Instant::now();
            let outcome = request.send().await;
            let status = match &outcome {
                Ok(response) => response.status().to_string(),
                Err(error) => describe(error),
            };
            tracing::debug!("{method} {url} -> {status} in {:.1?}", sent.elapsed());
            let transient = match &outcome {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    // A cached token can be revoked or expire early: fetch a
                    // fresh one once before reporting the refusal.
                    if !refreshed_token && matches!(host.challenge, Challenge::Bearer { .. }) {
                        refreshed_token = true;
                        self.forget_token(&host, &scope).await;
                        continue;
                    }
                    None
                }
                Ok(response) if http::is_transient_status(response.status()) => {
                    Some(retry_after(response.headers()))
                }
                Ok(_) => None,
                Err(error) if http::is_transient_error(error) => Some(None),
                Err(_) => None,
            };
            let why = format!("{method} {} ({status})", reference.name());
            match transient {
                Some(asked) if attempts.retry(asked, why).await => {}
                _ => return outcome.map_err(|e| self.unreachable(reference, &e)),
            }
        }
    }

    fn unreachable(&self, reference: &RegistryRef, error: &reqwest::Error) -> RegistryError {
        RegistryError::Unreachable {
            registry: reference.registry.clone(),
            detail: describe(error),
        }
    }

    /// The scheme and auth challenge of a registry host, found once per run
    /// with one `GET /v2/`.
    async fn host(&self, reference: &RegistryRef) -> Result<Arc<Host>, RegistryError> {
        let api_host = reference.api_host().to_string();
        let slot = slot(&self.hosts, api_host.clone());
        let mut guard = slot.lock().await;
        if let Some(host) = guard.as_ref() {
            return Ok(host.clone());
        }
        let host = Arc::new(self.ping(reference, &api_host).await?);
        tracing::debug!(?host, "registry host discovered");
        *guard = Some(host.clone());
        Ok(host)
    }

    async fn ping(&self, reference: &RegistryRef, api_host: &str) -> Result<Host, RegistryError> {
        let https = format!("https://{api_host}");
        if !self.plain_http_allowed(api_host) {
            let response = self.ping_base(reference, &https).await?;
            return Ok(Host {
                base: https,
                challenge: challenge(&response),
            });
        }
        // Loopback and --insecure-registry hosts may speak either. Plain
        // HTTP is asked first (the ping carries no credentials): a TLS
        // server answers it with 400 at once, and then TLS is used and
        // verified. Asking TLS first would hang on plain servers that wait
        // for a request line the TLS handshake never sends.
        let http = format!("http://{api_host}");
        let response = self.ping_base(reference, &http).await?;
        if response.status() != StatusCode::BAD_REQUEST {
            return Ok(Host {
                base: http,
                challenge: challenge(&response),
            });
        }
        let response = self.ping_base(reference, &https).await?;
        Ok(Host {
            base: https,
            challenge: challenge(&response),
        })
    }

    async fn ping_base(&self, reference: &RegistryRef, base: &str) -> Result<Response, RegistryError> {
        let mut attempts = self.options.retry.start();
        loop {
            let outcome = self.http.get(format!("{base}/v2/")).send().await;
            let asked = match &outcome {
                Ok(response) if !http::is_transient_status(response.status()) => None,
                Ok(response) => Some(retry_after(response.headers())),
                Err(error) if http::is_transient_error(error) => Some(None),
                Err(_) => None,
            };
            let why = format!("GET {base}/v2/");
            match asked {
                Some(asked) if attempts.retry(asked, why).await => {}
                _ => return outcome.map_err(|error| self.unreachable(reference, &error)),
            }
        }
    }

    fn plain_http_allowed(&self, api_host: &str) -> bool {
        is_loopback(api_host) || self.options.insecure_registries.iter().any(|h| h == api_host)
    }

    async fn credential(&self, registry: &str) -> Result<Option<Credential>, RegistryError> {
        if let Some(credential) = &self.options.credential {
            return Ok(Some(credential.clone()));
        }
        let slot = slot(&self.credentials, registry.to_string());
        let mut guard = slot.lock().await;
        if let Some(found) = guard.as_ref() {
            return Ok(found.clone());
        }
        let name = registry.to_string();
        // Helpers are processes; keep them off the async workers.
        let found = tokio::task::spawn_blocking(move || credentials::lookup(&name))
            .await
            .expect("credential lookup panicked")?;
        *guard = Some(found.clone());
        Ok(found)
    }

    async fn authorization(
        &self,
        reference: &RegistryRef,
        host: &Host,
        scope: &str,
    ) -> Result<Option<String>, RegistryError> {
        match &host.challenge {
            Challenge::None => Ok(None),
            Challenge::Basic => Ok(match self.credential(&reference.registry).await? {
                Some(Credential::Basic { username, password }) => Some(basic(&username, &password)),
                Some(Credential::IdentityToken(token)) => Some(basic(ACR_TOKEN_USER, &token)),
                None => None,
            }),
            Challenge::Bearer { realm, service } => {
                let slot = slot(&self.tokens, (host.base.clone(), scope.to_string()));
                let mut guard = slot.lock().await;
                if let Some(token) = guard.as_ref()
                    && token.expires > Instant::now()
                {
                    return Ok(Some(format!("Bearer {}", token.value)));
                }
                let token = self
                    .fetch_token(reference, realm, service.as_deref(), scope)
                    .await?;
                let header = format!("Bearer {}", token.value);
                *guard = Some(token);
                Ok(Some(header))
            }
        }
    }

    async fn forget_token(&self, host: &Host, scope: &str) {
        let slot = slot(&self.tokens, (host.base.clone(), scope.to_string()));
        *slot.lock().await = None;
    }

    /// The token endpoint of the Docker token protocol: GET with basic auth
    /// for a password, the OAuth2 refresh-token POST for an identity token.
    async fn fetch_token(
        &self,
        reference: &RegistryRef,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token, RegistryError> {
        let credential = self.credential(&reference.registry).await?;
        // A mount needs two repositories' scopes: one `scope` parameter each.
        let mut query: Vec<(&str, &str)> = scope.split(' ').map(|part| ("scope", part)).collect();
        if let Some(service) = service {
            query.push(("service", service));
        }
        let request = match &credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = query.clone();
                form.extend([
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "onestream"),
                ]);
                self.http.post(realm).form(&form)
            }
            Some(Credential::Basic { username, password }) => self
                .http
                .get(realm)
                .query(&query)
                .header(AUTHORIZATION, basic(username, password)),
            None => self.http.get(realm).query(&query),
        };
        let response = request.send().await.map_err(|e| RegistryError::Unreachable {
            registry: reference.registry.clone(),
            detail: format!("token endpoint: {}", describe(&e)),
        })?;
        let status = response.status();
        if !status.is_success() {
            let detail = error_detail(response).await;
            return Err(RegistryError::Unauthorized {
                registry: reference.registry.clone(),
                repository: reference.repository.clone(),
                status: status.as_u16(),
                detail: format!(
                    "the token endpoint refused {} ({detail})",
                    if credential.is_some() {
                        "the credentials"
                    } else {
                        "anonymous access; log in or pass credentials"
                    }
                ),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body: TokenResponse = response.json().await.map_err(|e| RegistryError::Protocol {
            registry: reference.registry.clone(),
            detail: format!(
                "token endpoint answered something that is not a token: {}",
                describe(&e)
            ),
        })?;
        let value = body
            .token
            .or(body.access_token)
            .ok_or_else(|| RegistryError::Protocol {
                registry: reference.registry.clone(),
                detail: "token endpoint answered without a token".into(),
            })?;
        let lifetime = body
            .expires_in
            .unwrap_or(TOKEN_LIFETIME_DEFAULT)
            .saturating_sub(TOKEN_RENEW_MARGIN)
            .max(1);
        Ok(Token {
            value,
            expires: Instant::now() + Duration::from_secs(lifetime),
        })
    }
}

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

fn index_entries(repository: &RegistryRef, body: &[u8]) -> Result<Vec<serde_json::Value>, RegistryError> {
    manifest::index_entries(body).map_err(|e| RegistryError::Protocol {
        registry: repository.registry.clone(),
        detail: format!("referrers index is not JSON: {e}"),
    })
}

/// Azure Container Registry's (and docker's) user name for a refresh token
/// presented as a password.
const ACR_TOKEN_USER: &str = "00000000-0000-0000-0000-000000000000";

fn basic(username: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

fn challenge(response: &Response) -> Challenge {
    if response.status() != StatusCode::UNAUTHORIZED {
        return Challenge::None;
    }
    let Some(header) = header_str(response.headers(), WWW_AUTHENTICATE.as_str()) else {
        return Challenge::Basic;
    };
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Challenge::Basic;
    }
    let params = auth_params(params);
    match params.get("realm") {
        Some(realm) => Challenge::Bearer {
            realm: realm.clone(),
            service: params.get("service").cloned(),
        },
        None => Challenge::Basic,
    }
}

/// `key="value", key=value` pairs of a WWW-Authenticate challenge; commas
/// inside quotes (scopes list several actions) do not split.
fn auth_params(text: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    params
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn media_type_only(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or(content_type)
        .trim()
        .to_string()
}

/// The target of a `Link: <…>; rel="next"` header.
fn next_page(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

fn header_digest(reference: &RegistryRef, headers: &HeaderMap) -> Result<Option<Digest>, RegistryError> {
    match header_str(headers, DIGEST_HEADER) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|e| RegistryError::Protocol {
            registry: reference.registry.clone(),
            detail: format!("Docker-Content-Digest header: {e}"),
        }),
    }
}

/// The registry's error envelope (`{"errors":[{"code","message"}]}`) as one
/// line, or the start of the body.
async fn error_detail(response: Response) -> String {
    let body = response.bytes().await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<EnvelopeError>,
    }
    #[derive(serde::Deserialize)]
    struct EnvelopeError {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(&body) {
        let parts: Vec<String> = envelope
            .errors
            .iter()
            .map(|e| {
                format!(
                    "{}{}",
                    e.code.as_deref().unwrap_or("ERROR"),
                    e.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                )
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(&body);
    text.trim().chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_params_keep_commas_inside_quotes() {
        let params = auth_params(
            r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(params["realm"], "https://auth.example.com/token");
        assert_eq!(params["service"], "registry.example.com");
        assert_eq!(params["scope"], "repository:a/b:pull,push");
        let params = auth_params(r#"realm=basic-realm, charset="UTF-8""#);
        assert_eq!(params["realm"], "basic-realm");
        assert_eq!(params["charset"], "UTF-8");
    }

    #[test]
    fn link_headers_give_the_next_page() {
        assert_eq!(
            next_page(r#"</v2/app/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/app/tags/list?last=b&n=2")
        );
        assert_eq!(next_page(r#"</other>; rel="prev""#), None);
    }
}
