//! Blobs: streamed out, asked for, mounted across repositories, and uploaded
//! (streamed, or small ones in one request pair).

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::{Registry, RegistryError, header_str, slot};
use crate::digest::Digest;
use crate::reference::RegistryRef;

impl Registry {
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
    pub(super) async fn start_upload(
        &self,
        reference: &RegistryRef,
        digest: &Digest,
    ) -> Result<String, RegistryError> {
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
}
