//! Sending a request: the host's scheme and auth challenge found once with one
//! `GET /v2/`, auth attached, transient failures retried (crate::http's
//! policy), and a non-2xx answer read into a [`RegistryError`].

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode};

use super::auth::challenge;
use super::{Challenge, Host, Registry, RegistryError, error_detail, slot};
use crate::http::{self, describe, is_loopback, retry_after};
use crate::reference::RegistryRef;

impl Registry {
    pub(super) async fn expect_ok(
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
    pub(super) async fn send_scoped(
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

    pub(super) fn unreachable(&self, reference: &RegistryRef, error: &reqwest::Error) -> RegistryError {
        RegistryError::Unreachable {
            registry: reference.registry.clone(),
            detail: describe(error),
        }
    }

    /// The scheme and auth challenge of a registry host, found once per run
    /// with one `GET /v2/`.
    pub(super) async fn host(&self, reference: &RegistryRef) -> Result<Arc<Host>, RegistryError> {
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

    pub(super) async fn ping(&self, reference: &RegistryRef, api_host: &str) -> Result<Host, RegistryError> {
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

    pub(super) async fn ping_base(
        &self,
        reference: &RegistryRef,
        base: &str,
    ) -> Result<Response, RegistryError> {
        let mut attempts = self.options.retry.start();
        loop {
            let outcome = self.http.get(format!("{base}/v2/")).send().await;
            let asked = match &outcome {
                Ok(response) if !http::is_transient_status(response.status()) => None,
                Ok(response) => Some(retry_after(response.headers())),
                Err(error) if http::is_transient_error(error) => Some(None),
                Err(_) => None,
            };
            let status = match &outcome {
                Ok(response) => response.status().to_string(),
                Err(error) => describe(error),
            };
            let why = format!("GET {base}/v2/ ({status})");
            match asked {
                Some(asked) if attempts.retry(asked, why).await => {}
                _ => return outcome.map_err(|error| self.unreachable(reference, &error)),
            }
        }
    }

    pub(super) fn plain_http_allowed(&self, api_host: &str) -> bool {
        is_loopback(api_host) || self.options.insecure_registries.iter().any(|h| h == api_host)
    }
}
