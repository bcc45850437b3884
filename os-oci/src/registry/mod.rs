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
//!
//! One [`Registry`] (here: its options, errors and state), its methods by
//! concern: [`transport`] sends (auth, retries, errors), [`auth`] finds
//! credentials and tokens, and [`manifests`], [`blobs`], [`referrers`] and
//! [`tags`] speak the API's four parts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

use crate::credentials::{Credential, CredentialError};
use crate::digest::Digest;
use crate::http::{RetryPolicy, USER_AGENT, describe};

mod acr;
mod auth;
mod blobs;
mod manifests;
mod referrers;
mod tags;
mod transport;

pub use acr::{EntraSignIn, EntraToken, EntraTokens};
pub use auth::ACR_TOKEN_USER;
pub use referrers::Referrers;

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
    /// Signs in to Azure Container Registries that no credential covers
    /// with an Entra ID token ([`acr`]).
    pub entra: Option<EntraSignIn>,
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
    /// ACR refresh tokens from the Entra exchange, per registry.
    acr_refresh_tokens: Mutex<HashMap<String, Slot<String>>>,
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
            acr_refresh_tokens: Mutex::default(),
            present_blobs: Mutex::default(),
            referrers_api_of: Mutex::default(),
        })
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The registry's error envelope (`{"errors":[{"code","message"}]}`) as one
/// line, or the start of the body.
async fn error_detail(response: reqwest::Response) -> String {
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
