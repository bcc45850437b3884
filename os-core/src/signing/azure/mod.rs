//! Signing with a key in Azure Key Vault or Managed HSM: the private key
//! never leaves the vault. Two REST calls of the Key Vault API (7.4) and the
//! standard Azure credentials are spoken here directly over `reqwest`:
//!
//! - `GET {vault}/keys/{name}[/{version}]`: the public key (a JWK) becomes
//!   SubjectPublicKeyInfo DER, and the key type picks the algorithm (EC
//!   P-256 → ES256, P-384 → ES384, RSA → RS256, what cosign uses);
//! - `POST {kid}/sign`: the vault signs a digest the client computed; EC
//!   signatures come back as raw `r‖s` and are turned into ASN.1 DER, the
//!   form cosign and the verifiers here expect.
//!
//! Credentials, for [`CredentialKind::Auto`] in this order (the first one
//! configured is used), or exactly the one named: environment (client
//! secret), workload identity (federated token file), managed identity
//! (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, else the instance metadata
//! service), and the Azure CLI. Tokens are cached per resource until shortly
//! before they expire. Secrets, tokens and client assertions are never put
//! into an error or a log line; token endpoint messages are scrubbed of them.
//!
//! Why not the Azure SDK crates (`azure_identity` 1.0 /
//! `azure_security_keyvault_keys` 1.0 over `azure_core` 1.1, checked also at
//! their 1.1/1.2 betas):
//! - `azure_core`'s bearer token policy refuses every request that is not
//!   HTTPS ("authorized requests are not permitted for non-TLS protected
//!   endpoints"), and `azure_identity` refuses an authority host that is not
//!   HTTPS, so neither can talk to the plain-HTTP loopback stand-in the tests
//!   run against, and there is no switch for it;
//! - `azure_identity` 1.x has no environment credential and no default
//!   credential chain any more, so the `Auto` chain (and the environment
//!   variable handling) would be written here anyway;
//! - they declare Rust 1.88 (the workspace says 1.85), and with their default
//!   features add 42 crates to this workspace's lock file, among them
//!   `aws-lc-rs`/`aws-lc-sys` (a C build of minutes, the reason this
//!   workspace installs ring), quinn, flate2, uuid, async-lock and their own
//!   proc-macro crates, for two REST calls and four token requests.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest as _;
use zeroize::Zeroizing;

use crate::http::{self, RetryPolicy, USER_AGENT, describe, is_loopback, retry_after};

const API_VERSION: &str = "7.4";
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const DEFAULT_RESOURCE: &str = "https://vault.azure.net";
const IMDS_AUTHORITY: &str = "http://169.254.169.254";
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
const IMDS_API_VERSION: &str = "2018-02-01";
const APP_SERVICE_API_VERSION: &str = "2019-08-01";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// In `Auto` mode the metadata service is only probed: a machine outside
/// Azure has nothing at 169.254.169.254, and nobody should wait for a TCP
/// timeout to learn that.
const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const AZ_TIMEOUT: Duration = Duration::from_secs(30);
/// Tokens are renewed this long before they expire (at most half their life).
const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(300);
/// For a token answer that says nothing about its lifetime.
const TOKEN_LIFETIME_FALLBACK: Duration = Duration::from_secs(600);
/// Vault requests, retried on connection errors, 429 and 5xx: a signature
/// is one small request, so a few quick tries, and a vault that throttles
/// for longer than the budget fails the record rather than the pipeline.
const VAULT_RETRY: RetryPolicy = RetryPolicy {
    attempts: 3,
    budget: Duration::from_secs(30),
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(10),
};

const ENVIRONMENT_VARS: [&str; 3] = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"];
const WORKLOAD_VARS: [&str; 3] = ["AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"];
const APP_SERVICE_VARS: [&str; 2] = ["IDENTITY_ENDPOINT", "IDENTITY_HEADER"];

/// Which Azure credential signs requests to the vault ([`CredentialKind::help`]
/// says where each looks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CredentialKind {
    #[default]
    Auto,
    Environment,
    WorkloadIdentity,
    ManagedIdentity,
    AzureCli,
}

impl CredentialKind {
    /// In the order `Auto` tries them (after itself).
    pub const ALL: [CredentialKind; 5] = [
        CredentialKind::Auto,
        CredentialKind::Environment,
        CredentialKind::WorkloadIdentity,
        CredentialKind::ManagedIdentity,
        CredentialKind::AzureCli,
    ];

    /// The name `--azure-credential` takes.
    pub fn name(self) -> &'static str {
        match self {
            CredentialKind::Auto => "auto",
            CredentialKind::Environment => "environment",
            CredentialKind::WorkloadIdentity => "workload-identity",
            CredentialKind::ManagedIdentity => "managed-identity",
            CredentialKind::AzureCli => "azure-cli",
        }
    }

    /// Where it looks, for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            CredentialKind::Auto => "The first configured of the others, in their order here",
            CredentialKind::Environment => "`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`",
            CredentialKind::WorkloadIdentity => {
                "`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` (AKS, Azure DevOps \
                 workload identity federation)"
            }
            CredentialKind::ManagedIdentity => {
                "`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`, else the instance metadata service \
                 (`AZURE_CLIENT_ID` picks a user-assigned identity)"
            }
            CredentialKind::AzureCli => "`az account get-access-token`",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    #[error("invalid Azure Key Vault host {0:?}: expected a host name with an optional port")]
    BadVault(String),
    #[error("invalid {what} {value:?}: {detail}")]
    BadName {
        what: &'static str,
        value: String,
        detail: &'static str,
    },
    #[error("--azure-credential {kind} needs {}, which {} not set", .missing.join(", "), if .missing.len() == 1 { "is" } else { "are" })]
    MissingVariables {
        kind: CredentialKind,
        missing: Vec<&'static str>,
    },
    #[error("--azure-credential azure-cli: `az` was not found on PATH")]
    AzureCliNotFound,
    #[error("{name}: {detail}")]
    BadSetting { name: &'static str, detail: String },
    #[error(
        "no Azure credential found: looked for {looked_for}{tried}; configure one, or name one with --azure-credential"
    )]
    NoCredential { looked_for: String, tried: String },
    #[error("cannot get an Azure access token with the {credential} credential: {detail}")]
    Token { credential: String, detail: String },
    #[error("cannot reach Azure Key Vault {vault}: {detail}")]
    Unreachable { vault: String, detail: String },
    #[error(
        "{vault} refused {what} ({status}) to the {credential} credential: {detail}; the identity needs a role such as \"Key Vault Crypto User\" on the key, or choose another credential with --azure-credential"
    )]
    Unauthorized {
        vault: String,
        what: String,
        status: u16,
        credential: String,
        detail: String,
    },
    #[error("{what}: not found in {vault} (404): {detail}")]
    NotFound {
        vault: String,
        what: String,
        detail: String,
    },
    #[error("{vault} answered {status} for {what}: {detail}")]
    Status {
        vault: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{vault}: {detail}")]
    Protocol { vault: String, detail: String },
    #[error("{kid}: {detail}")]
    Unsupported { kid: String, detail: String },
    #[error("the vault returned a malformed signature: {0}")]
    BadSignature(String),
}

/// A vault key, ready to sign with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultKey {
    /// The full key id (`https://VAULT/keys/NAME/VERSION`), as the vault
    /// reported it: signing always uses exactly this version.
    pub kid: String,
    /// The public key as SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
    /// `ES256`, `ES384` or `RS256`.
    pub algorithm: String,
}

/// One way of getting a token, with what it needs read from the
/// environment up front.
enum Source {
    ClientSecret {
        authority: String,
        tenant: String,
        client_id: String,
        secret: Zeroizing<String>,
    },
    Workload {
        authority: String,
        tenant: String,
        client_id: String,
        token_file: PathBuf,
    },
    AppService {
        endpoint: String,
        header: Zeroizing<String>,
        client_id: Option<String>,
    },
    Imds {
        url: String,
        client_id: Option<String>,
        /// `Auto` mode: probe first, and count "nothing there" as this
        /// source being unavailable rather than as an error.
        probe: bool,
    },
    AzureCli {
        az: PathBuf,
    },
}

impl Source {
    /// How errors and logs name this source (never with a value in it).
    fn label(&self) -> &'static str {
        match self {
            Source::ClientSecret { .. } => "environment (AZURE_CLIENT_SECRET)",
            Source::Workload { .. } => "workload identity (AZURE_FEDERATED_TOKEN_FILE)",
            Source::AppService { .. } => "managed identity (IDENTITY_ENDPOINT)",
            Source::Imds { .. } => "managed identity (instance metadata service)",
            Source::AzureCli { .. } => "Azure CLI (az)",
        }
    }
}

struct Token {
    value: Zeroizing<String>,
    renew_at: Instant,
}

#[derive(Default)]
struct TokenState {
    /// The source that gave the first token; later tokens come from it too.
    chosen: Option<usize>,
    /// By resource (`https://vault.azure.net`, `https://managedhsm.azure.net`).
    tokens: HashMap<String, Token>,
}

/// A bearer token and the name of the credential that got it.
struct Authorization {
    token: Zeroizing<String>,
    credential: &'static str,
}

/// Why a source gave no token.
enum Miss {
    /// Not there (`Auto` mode's metadata service probe): try the next one.
    Unavailable(String),
    Failed(AzureError),
}

/// The run's Key Vault client: one HTTP client, one credential, cached tokens.
pub struct KeyVault {
    http: reqwest::Client,
    kind: CredentialKind,
    sources: Vec<Source>,
    /// For the `Auto` error when nothing works: what was looked for.
    looked_for: String,
    state: tokio::sync::Mutex<TokenState>,
}

impl fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<&str> = self.sources.iter().map(Source::label).collect();
        f.debug_struct("KeyVault")
            .field("credential", &self.kind)
            .field("sources", &sources)
            .finish_non_exhaustive()
    }
}

impl KeyVault {
    /// A client whose credential comes from the process environment.
    pub fn new(credential: CredentialKind) -> Result<KeyVault, AzureError> {
        KeyVault::with_env(credential, |name| std::env::var(name).ok())
    }

    /// A client whose credential comes from `env` (a variable's value by
    /// name), read once, here. `PATH` is looked up through `env` too, to find
    /// `az`. Empty values count as unset.
    pub fn with_env(
        credential: CredentialKind,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<KeyVault, AzureError> {
        let var = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let (sources, looked_for) = resolve(credential, &var)?;
        // reqwest is built without a default rustls provider; install ring
        // once per process (as the registry client does).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| AzureError::Unreachable {
                vault: "(client setup)".into(),
                detail: describe(&e),
            })?;
        Ok(KeyVault {
            http,
            kind: credential,
            sources,
            looked_for,
            state: tokio::sync::Mutex::default(),
        })
    }

    /// The credential kind this client was built for.
    pub fn credential(&self) -> CredentialKind {
        self.kind
    }

    /// Fetches a key's public half: `GET {vault}/keys/{key}[/{version}]`.
    /// Without a version, the vault answers with its current version, and
    /// the returned `kid` names it.
    pub async fn public_key(
        &self,
        vault: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<VaultKey, AzureError> {
        let endpoint = Endpoint::from_host(vault)?;
        check_name("key name", key)?;
        if let Some(version) = version {
            check_name("key version", version)?;
        }
        let mut url = format!("{}/keys/{key}", endpoint.base);
        if let Some(version) = version {
            url = format!("{url}/{version}");
        }
        let what = match version {
            Some(version) => format!("key {key} (version {version})"),
            None => format!("key {key}"),
        };
        let body = self
            .vault_request(Method::GET, &url, &endpoint, None, &what)
            .await?;
        let bundle: KeyBundle = serde_json::from_value(body).map_err(|e| AzureError::Protocol {
            vault: endpoint.host.clone(),
            detail: format!("unexpected answer for {what}: {e}"),
        })?;
        // The kid is where signing requests (and the token) will go: it must
        // name this key in this vault.
        let expected = format!("{}/keys/{key}/", endpoint.base).to_ascii_lowercase();
        let kid = bundle.key.kid.clone();
        let kid_ok = kid.to_ascii_lowercase().starts_with(&expected)
            && kid.len() > expected.len()
            && !kid[expected.len()..].contains(['/', '?', '#'])
            && version.is_none_or(|v| kid[expected.len()..].eq_ignore_ascii_case(v));
        if !kid_ok {
            return Err(AzureError::Protocol {
                vault: endpoint.host,
                detail: format!("asked for {what}, the vault answered with key id {kid:?}"),
            });
        }
        if bundle.attributes.and_then(|a| a.enabled) == Some(false) {
            return Err(AzureError::Unsupported {
                kid,
                detail: "the key is disabled".into(),
            });
        }
        if let Some(ops) = &bundle.key.key_ops
            && !ops.iter().any(|op| op == "sign")
        {
            return Err(AzureError::Unsupported {
                kid,
                detail: format!("the key's operations ({}) do not include sign", ops.join(", ")),
            });
        }
        let (spki_der, algorithm) = bundle.key.spki().map_err(|detail| AzureError::Unsupported {
            kid: kid.clone(),
            detail,
        })?;
        Ok(VaultKey {
            kid,
            spki_der,
            algorithm: algorithm.to_string(),
        })
    }

    /// Signs `payload` with the vault key: the digest (SHA-256 for ES256 and
    /// RS256, SHA-384 for ES384) is computed here and sent to
    /// `POST {kid}/sign`. EC signatures are returned as ASN.1 DER, RSA
    /// signatures as the vault gives them.
    pub async fn sign(&self, key: &VaultKey, payload: &[u8]) -> Result<Vec<u8>, AzureError> {
        let (digest, ec_width) = match key.algorithm.as_str() {
            "ES256" => (sha2::Sha256::digest(payload).to_vec(), Some(32)),
            "ES384" => (sha2::Sha384::digest(payload).to_vec(), Some(48)),
            "RS256" => (sha2::Sha256::digest(payload).to_vec(), None),
            other => {
                return Err(AzureError::Unsupported {
                    kid: key.kid.clone(),
                    detail: format!("signing algorithm {other:?} (supported: ES256, ES384, RS256)"),
                });
            }
        };
        let endpoint = Endpoint::from_kid(&key.kid)?;
        let body = json!({ "alg": key.algorithm, "value": b64url(&digest) });
        let what = format!("signing with {}", key.kid);
        let url = format!("{}/sign", key.kid);
        let answer = self
            .vault_request(Method::POST, &url, &endpoint, Some(&body), &what)
            .await?;
        let raw = answer
            .get("value")
            .and_then(Value::as_str)
            .and_then(|v| b64url_decode(v).ok())
            .ok_or_else(|| AzureError::Protocol {
                vault: endpoint.host.clone(),
                detail: format!("{what}: the answer has no base64url \"value\""),
            })?;
        match ec_width {
            Some(width) if raw.len() != 2 * width => Err(AzureError::BadSignature(format!(
                "{} bytes for {}, expected r‖s of {}",
                raw.len(),
                key.algorithm,
                2 * width
            ))),
            Some(_) => raw_ecdsa_to_der(&raw),
            None if raw.is_empty() => Err(AzureError::BadSignature("empty".into())),
            None => Ok(raw),
        }
    }

    /// A Key Vault request with a bearer token, retried on connection
    /// errors, 429 and 5xx; the JSON answer on success.
    async fn vault_request(
        &self,
        method: Method,
        url: &str,
        endpoint: &Endpoint,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, AzureError> {
        let authorization = self.token(&endpoint.resource).await?;
        let mut attempts = VAULT_RETRY.start();
        loop {
            let mut request = self
                .http
                .request(method.clone(), url)
                .query(&[("api-version", API_VERSION)])
                .bearer_auth(authorization.token.as_str());
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e)
                    if http::is_transient_error(&e)
                        && attempts.retry(None, format!("{what}: {}", describe(&e))).await =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(AzureError::Unreachable {
                        vault: endpoint.host.clone(),
                        detail: describe(&e),
                    });
                }
            };
            let status = response.status();
            if status.is_success() {
                return response.json::<Value>().await.map_err(|e| AzureError::Protocol {
                    vault: endpoint.host.clone(),
                    detail: format!("{what}: unreadable answer: {}", describe(&e)),
                });
            }
            if http::is_transient_status(status)
                && attempts
                    .retry(retry_after(response.headers()), format!("{what}: {status}"))
                    .await
            {
                continue;
            }
            let detail = vault_error_detail(response).await;
            let (vault, what) = (endpoint.host.clone(), what.to_string());
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => AzureError::Unauthorized {
                    vault,
                    what,
                    status: status.as_u16(),
                    credential: authorization.credential.to_string(),
                    detail,
                },
                StatusCode::NOT_FOUND => AzureError::NotFound { vault, what, detail },
                _ => AzureError::Status {
                    vault,
                    what,
                    status: status.as_u16(),
                    detail,
                },
            });
        }
    }

    /// A token for `resource`, from the cache or the credential.
    async fn token(&self, resource: &str) -> Result<Authorization, AzureError> {
        let mut state = self.state.lock().await;
        if let (Some(token), Some(chosen)) = (state.tokens.get(resource), state.chosen)
            && token.renew_at > Instant::now()
        {
            return Ok(Authorization {
                token: token.value.clone(),
                credential: self.sources[chosen].label(),
            });
        }
        let order: Vec<usize> = match state.chosen {
            Some(chosen) => vec![chosen],
            None => (0..self.sources.len()).collect(),
        };
        let mut tried = Vec::new();
        for index in order {
            let source = &self.sources[index];
            match self.fetch(source, resource).await {
                Ok((value, lifetime)) => {
                    tracing::debug!("Azure access token for {resource} from {}", source.label());
                    let margin = TOKEN_RENEW_MARGIN.min(lifetime / 2);
                    state.chosen = Some(index);
                    state.tokens.insert(
                        resource.to_string(),
                        Token {
                            value: value.clone(),
                            renew_at: Instant::now() + lifetime - margin,
                        },
                    );
                    return Ok(Authorization {
                        token: value,
                        credential: source.label(),
                    });
                }
                Err(Miss::Unavailable(reason)) => {
                    tracing::debug!("{}: {reason}", source.label());
                    tried.push(format!("{}: {reason}", source.label()));
                }
                Err(Miss::Failed(error)) => return Err(error),
            }
        }
        Err(AzureError::NoCredential {
            looked_for: self.looked_for.clone(),
            tried: tried.iter().map(|t| format!("; {t}")).collect(),
        })
    }

    async fn fetch(&self, source: &Source, resource: &str) -> Result<(Zeroizing<String>, Duration), Miss> {
        let failed = |detail: String| {
            Miss::Failed(AzureError::Token {
                credential: source.label().to_string(),
                detail,
            })
        };
        let scope = format!("{resource}/.default");
        match source {
            Source::ClientSecret {
                authority,
                tenant,
                client_id,
                secret,
            } => {
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", secret.as_str()),
                    ("scope", scope.as_str()),
                ];
                let url = format!("{authority}/{tenant}/oauth2/v2.0/token");
                let response = self.http.post(&url).form(&form).send().await;
                token_answer(response, &[secret.as_str()]).await.map_err(failed)
            }
            Source::Workload {
                authority,
                tenant,
                client_id,
                token_file,
            } => {
                // Read on every request: the file is rotated under us.
                let assertion = std::fs::read_to_string(token_file)
                    .map(Zeroizing::new)
                    .map_err(|e| failed(format!("cannot read {}: {e}", token_file.display())))?;
                let assertion = Zeroizing::new(assertion.trim().to_string());
                if assertion.is_empty() {
                    return Err(failed(format!("{} is empty", token_file.display())));
                }
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", assertion.as_str()),
                    ("scope", scope.as_str()),
                ];
                let url = format!("{authority}/{tenant}/oauth2/v2.0/token");
                let response = self.http.post(&url).form(&form).send().await;
                token_answer(response, &[assertion.as_str()])
                    .await
                    .map_err(failed)
            }
            Source::AppService {
                endpoint,
                header,
                client_id,
            } => {
                let mut request = self
                    .http
                    .get(endpoint)
                    .query(&[("api-version", APP_SERVICE_API_VERSION), ("resource", resource)])
                    .header("X-IDENTITY-HEADER", header.as_str());
                if let Some(client_id) = client_id {
                    request = request.query(&[("client_id", client_id)]);
                }
                token_answer(request.send().await, &[header.as_str()])
                    .await
                    .map_err(failed)
            }
            Source::Imds {
                url,
                client_id,
                probe,
            } => {
                if *probe {
                    // Anything answering (IMDS says 400 to a request without
                    // `Metadata: true`) means the service is there.
                    if let Err(e) = self.http.get(url).timeout(IMDS_PROBE_TIMEOUT).send().await {
                        return Err(Miss::Unavailable(format!("not reachable ({})", describe(&e))));
                    }
                }
                let mut request = self
                    .http
                    .get(url)
                    .query(&[("api-version", IMDS_API_VERSION), ("resource", resource)])
                    .header("Metadata", "true");
                if let Some(client_id) = client_id {
                    request = request.query(&[("client_id", client_id)]);
                }
                match token_answer(request.send().await, &[]).await {
                    Ok(token) => Ok(token),
                    // E.g. a VM without an identity assigned.
                    Err(detail) if *probe => Err(Miss::Unavailable(detail)),
                    Err(detail) => Err(failed(detail)),
                }
            }
            Source::AzureCli { az } => {
                let (az, resource) = (az.clone(), resource.to_string());
                let output = tokio::task::spawn_blocking(move || run_az(&az, &resource))
                    .await
                    .map_err(|e| failed(format!("az did not finish: {e}")))?
                    .map_err(failed)?;
                #[derive(Deserialize)]
                struct CliToken {
                    #[serde(rename = "accessToken")]
                    access_token: Option<String>,
                    expires_on: Option<Value>,
                }
                let parsed: CliToken = serde_json::from_slice(&output)
                    .map_err(|_| failed("az printed something that is not its token JSON".into()))?;
                let token = parsed
                    .access_token
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| failed("az printed no accessToken".into()))?;
                let lifetime = lifetime(None, parsed.expires_on.as_ref().and_then(number));
                Ok((Zeroizing::new(token), lifetime))
            }
        }
    }
}

/// The sources a credential kind uses, in order, and (for `Auto`) the
/// description of what was looked for.
fn resolve(
    kind: CredentialKind,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<Source>, String), AzureError> {
    let take = |names: &[&'static str]| -> Result<Vec<String>, Vec<&'static str>> {
        let values: Vec<Option<String>> = names.iter().map(|name| var(name)).collect();
        let missing: Vec<&'static str> = names
            .iter()
            .zip(&values)
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| *name)
            .collect();
        if missing.is_empty() {
            Ok(values.into_iter().flatten().collect())
        } else {
            Err(missing)
        }
    };
    let environment = |values: Vec<String>| -> Result<Source, AzureError> {
        let [tenant, client_id, secret] = <[String; 3]>::try_from(values).expect("three values");
        Ok(Source::ClientSecret {
            authority: authority_host(var("AZURE_AUTHORITY_HOST"))?,
            tenant: tenant_id(tenant)?,
            client_id,
            secret: Zeroizing::new(secret),
        })
    };
    let workload = |values: Vec<String>| -> Result<Source, AzureError> {
        let [file, client_id, tenant] = <[String; 3]>::try_from(values).expect("three values");
        Ok(Source::Workload {
            authority: authority_host(var("AZURE_AUTHORITY_HOST"))?,
            tenant: tenant_id(tenant)?,
            client_id,
            token_file: PathBuf::from(file),
        })
    };
    let app_service = |values: Vec<String>| -> Result<Source, AzureError> {
        let [endpoint, header] = <[String; 2]>::try_from(values).expect("two values");
        let parsed = url::Url::parse(&endpoint).map_err(|e| AzureError::BadSetting {
            name: "IDENTITY_ENDPOINT",
            detail: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AzureError::BadSetting {
                name: "IDENTITY_ENDPOINT",
                detail: "not an http(s) URL".into(),
            });
        }
        Ok(Source::AppService {
            endpoint,
            header: Zeroizing::new(header),
            client_id: var("AZURE_CLIENT_ID"),
        })
    };
    let imds = |probe: bool| Source::Imds {
        url: format!(
            "{}{IMDS_PATH}",
            var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
                .as_deref()
                .unwrap_or(IMDS_AUTHORITY)
                .trim_end_matches('/')
        ),
        client_id: var("AZURE_CLIENT_ID"),
        probe,
    };
    let missing = |missing: Vec<&'static str>| AzureError::MissingVariables { kind, missing };
    let sources = match kind {
        CredentialKind::Environment => vec![environment(take(&ENVIRONMENT_VARS).map_err(missing)?)?],
        CredentialKind::WorkloadIdentity => vec![workload(take(&WORKLOAD_VARS).map_err(missing)?)?],
        CredentialKind::ManagedIdentity => match var("IDENTITY_ENDPOINT") {
            Some(_) => vec![app_service(take(&APP_SERVICE_VARS).map_err(missing)?)?],
            None => vec![imds(false)],
        },
        CredentialKind::AzureCli => {
            vec![Source::AzureCli {
                az: find_az(var("PATH")).ok_or(AzureError::AzureCliNotFound)?,
            }]
        }
        CredentialKind::Auto => {
            let mut looked_for = Vec::new();
            let mut note = |what: &str, names: &[&str], missing: &[&str]| {
                looked_for.push(format!(
                    "{} for {what} (unset: {})",
                    names.join(" + "),
                    missing.join(", ")
                ));
            };
            match take(&ENVIRONMENT_VARS) {
                Ok(values) => return Ok((vec![environment(values)?], String::new())),
                Err(missing) => note("environment", &ENVIRONMENT_VARS, &missing),
            }
            match take(&WORKLOAD_VARS) {
                Ok(values) => return Ok((vec![workload(values)?], String::new())),
                Err(missing) => note("workload-identity", &WORKLOAD_VARS, &missing),
            }
            match take(&APP_SERVICE_VARS) {
                Ok(values) => return Ok((vec![app_service(values)?], String::new())),
                Err(missing) => note("managed-identity", &APP_SERVICE_VARS, &missing),
            }
            looked_for.push("the instance metadata service for managed-identity".into());
            let mut sources = vec![imds(true)];
            match find_az(var("PATH")) {
                Some(az) => sources.push(Source::AzureCli { az }),
                None => looked_for.push("`az` on PATH for azure-cli (not found)".into()),
            }
            return Ok((sources, looked_for.join("; ")));
        }
    };
    Ok((sources, String::new()))
}

/// `AZURE_AUTHORITY_HOST`, or the public cloud's: HTTPS, or plain HTTP on
/// loopback only (a client secret never crosses a network in the clear).
fn authority_host(value: Option<String>) -> Result<String, AzureError> {
    let Some(value) = value else {
        return Ok(DEFAULT_AUTHORITY.to_string());
    };
    let bad = |detail: String| AzureError::BadSetting {
        name: "AZURE_AUTHORITY_HOST",
        detail,
    };
    let url = url::Url::parse(value.trim()).map_err(|e| bad(format!("{value:?}: {e}")))?;
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        _ => return Err(bad(format!("{value:?}: must be an https:// URL"))),
    }
    Ok(value.trim().trim_end_matches('/').to_string())
}

fn tenant_id(value: String) -> Result<String, AzureError> {
    if value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        Ok(value)
    } else {
        Err(AzureError::BadSetting {
            name: "AZURE_TENANT_ID",
            detail: format!("{value:?} is not a tenant id or domain"),
        })
    }
}

fn find_az(path: Option<String>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&path?)
        .map(|dir| dir.join("az"))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `az account get-access-token`'s standard output, or a one-line reason.
fn run_az(az: &Path, resource: &str) -> Result<Vec<u8>, String> {
    let mut child = Command::new(az)
        .args([
            "account",
            "get-access-token",
            "--resource",
            resource,
            "-o",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", az.display()))?;
    let readers = [child.stdout.take().map(drain), child.stderr.take().map(drain)];
    let deadline = Instant::now() + AZ_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("az did not answer within {} s", AZ_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(format!("waiting for az: {e}")),
        }
    };
    let [stdout, stderr] = readers.map(|r| r.and_then(|r| r.join().ok()).unwrap_or_default());
    if status.success() {
        return Ok(stdout);
    }
    // az's own message ("ERROR: Please run 'az login' to setup account.");
    // its standard output, which could hold a token, is never shown.
    let message = String::from_utf8_lossy(&stderr);
    let message: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    Err(format!("az failed ({status}): {}", clip(&message.join(" "))))
}

fn drain(mut reader: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        bytes
    })
}

/// A token endpoint's answer: the token and its lifetime, or a reason with
/// every `secret` scrubbed out.
async fn token_answer(
    response: Result<reqwest::Response, reqwest::Error>,
    secrets: &[&str],
) -> Result<(Zeroizing<String>, Duration), String> {
    let response = response.map_err(|e| redact(&describe(&e), secrets))?;
    let status = response.status();
    let body = Zeroizing::new(response.bytes().await.map_err(|e| describe(&e))?.to_vec());
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
        expires_in: Option<Value>,
        expires_on: Option<Value>,
        error: Option<Value>,
        error_description: Option<String>,
    }
    let answer: Option<Answer> = serde_json::from_slice(&body).ok();
    if status.is_success()
        && let Some(Answer {
            access_token: Some(token),
            expires_in,
            expires_on,
            ..
        }) = &answer
        && !token.is_empty()
    {
        let token = Zeroizing::new(token.clone());
        if reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.as_str())).is_err() {
            return Err("the token endpoint returned a token that is not a valid header value".into());
        }
        let lifetime = lifetime(
            expires_in.as_ref().and_then(number),
            expires_on.as_ref().and_then(number),
        );
        return Ok((token, lifetime));
    }
    let detail = match answer {
        Some(Answer {
            error: Some(error),
            error_description,
            ..
        }) => {
            // Entra: {"error":"invalid_client","error_description":"AADSTS…"};
            // managed identity endpoints sometimes nest an object.
            let error = match &error {
                Value::String(code) => code.clone(),
                other => other
                    .get("code")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string()),
            };
            match error_description {
                Some(description) => format!("{error}: {}", first_line(&description)),
                None => error,
            }
        }
        _ if status.is_success() => "the answer has no access_token".into(),
        _ => first_line(&String::from_utf8_lossy(&body)).to_string(),
    };
    Err(format!("{status}: {}", clip(&redact(&detail, secrets))))
}

/// A token's lifetime from `expires_in` (seconds) or `expires_on` (Unix
/// seconds).
fn lifetime(expires_in: Option<u64>, expires_on: Option<u64>) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    match (expires_in, expires_on) {
        (Some(seconds), _) => Duration::from_secs(seconds),
        (None, Some(on)) => Duration::from_secs(on.saturating_sub(now)),
        (None, None) => TOKEN_LIFETIME_FALLBACK,
    }
}

/// A number given as a JSON number or a string of digits.
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn redact(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(secret, "***");
    }
    text
}

fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or_default().trim()
}

fn clip(text: &str) -> String {
    const MAX: usize = 400;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Key Vault's error envelope (`{"error":{"code","message"}}`) as one line.
async fn vault_error_detail(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |name: &str| error.and_then(|e| e.get(name)).and_then(Value::as_str);
    match (field("code"), field("message")) {
        (Some(code), Some(message)) => clip(&format!("{code}: {}", first_line(message))),
        (Some(code), None) => code.to_string(),
        (None, Some(message)) => clip(first_line(message)),
        (None, None) => {
            let text = String::from_utf8_lossy(&body);
            match first_line(&text) {
                "" => status.canonical_reason().unwrap_or("no detail").to_string(),
                line => clip(line),
            }
        }
    }
}

/// Where a vault is and which token it takes.
struct Endpoint {
    /// `host[:port]` as given.
    host: String,
    /// `https://host` (`http://` on loopback).
    base: String,
    /// The token resource (`https://vault.azure.net`, …).
    resource: String,
}

impl Endpoint {
    fn from_host(vault: &str) -> Result<Endpoint, AzureError> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']');
        if vault.is_empty() || !vault.bytes().all(allowed) {
            return Err(AzureError::BadVault(vault.into()));
        }
        let parsed =
            url::Url::parse(&format!("https://{vault}/")).map_err(|_| AzureError::BadVault(vault.into()))?;
        let name = parsed
            .host_str()
            .ok_or_else(|| AzureError::BadVault(vault.into()))?;
        let scheme = if is_loopback(name) { "http" } else { "https" };
        Ok(Endpoint {
            host: vault.to_string(),
            base: format!("{scheme}://{vault}"),
            resource: resource_for(name),
        })
    }

    /// The vault a key id names; the key id must be a key URL of it.
    fn from_kid(kid: &str) -> Result<Endpoint, AzureError> {
        let bad = |detail: &str| AzureError::Unsupported {
            kid: kid.into(),
            detail: detail.into(),
        };
        let url = url::Url::parse(kid).map_err(|_| bad("not a Key Vault key id URL"))?;
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(bad("the key id has no host")),
        };
        let endpoint = Endpoint::from_host(&host)?;
        let well_formed = url.scheme() == endpoint.base.split("://").next().unwrap_or_default()
            && url.path().starts_with("/keys/")
            && url.path().split('/').count() == 4
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none();
        if !well_formed {
            return Err(bad("not a Key Vault key id (https://VAULT/keys/NAME/VERSION)"));
        }
        Ok(endpoint)
    }
}

/// The token resource for a vault host: `NAME.vault.SUFFIX` →
/// `https://vault.SUFFIX` (`vault.azure.net` in the public cloud, and the
/// sovereign clouds' own), `NAME.managedhsm.SUFFIX` → `https://managedhsm.SUFFIX`;
/// anything else (loopback, private names) the public cloud's vault resource.
fn resource_for(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    for service in [".vault.", ".managedhsm."] {
        if let Some(at) = host.find(service) {
            return format!("https://{}", &host[at + 1..]);
        }
    }
    DEFAULT_RESOURCE.to_string()
}

/// Key names and versions go into URL paths: Key Vault allows only letters,
/// digits and dashes in them.
fn check_name(what: &'static str, value: &str) -> Result<(), AzureError> {
    if !value.is_empty()
        && value.len() <= 127
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(AzureError::BadName {
            what,
            value: value.into(),
            detail: "Key Vault names have only letters, digits and dashes",
        })
    }
}

#[derive(Deserialize)]
struct KeyBundle {
    key: Jwk,
    attributes: Option<KeyAttributes>,
}

#[derive(Deserialize)]
struct KeyAttributes {
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct Jwk {
    kid: String,
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    key_ops: Option<Vec<String>>,
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_RSA_ENCRYPTION: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const DER_NULL: &[u8] = &[0x05, 0x00];

impl Jwk {
    /// SubjectPublicKeyInfo DER and the signing algorithm.
    fn spki(&self) -> Result<(Vec<u8>, &'static str), String> {
        let field = |name: &str, value: &Option<String>| -> Result<Vec<u8>, String> {
            let value = value.as_deref().ok_or(format!("the JWK has no {name:?}"))?;
            b64url_decode(value).map_err(|_| format!("the JWK's {name:?} is not base64url"))
        };
        match self.kty.as_str() {
            "EC" | "EC-HSM" => {
                let crv = self.crv.as_deref().unwrap_or_default();
                let (curve, width, algorithm) = match crv {
                    "P-256" => (OID_P256, 32, "ES256"),
                    "P-384" => (OID_P384, 48, "ES384"),
                    other => return Err(format!("EC curve {other:?} (supported: P-256, P-384)")),
                };
                let mut point = vec![0x00, 0x04];
                for name in ["x", "y"] {
                    let coordinate = field(name, if name == "x" { &self.x } else { &self.y })?;
                    let coordinate = strip_zeros(&coordinate);
                    if coordinate.len() > width {
                        return Err(format!("the JWK's {name:?} is too long for {crv}"));
                    }
                    point.resize(point.len() + width - coordinate.len(), 0);
                    point.extend_from_slice(coordinate);
                }
                let algorithm_id = der(0x30, &[OID_EC_PUBLIC_KEY, curve].concat());
                Ok((der(0x30, &[algorithm_id, der(0x03, &point)].concat()), algorithm))
            }
            "RSA" | "RSA-HSM" => {
                let (n, e) = (field("n", &self.n)?, field("e", &self.e)?);
                if strip_zeros(&n).is_empty() || strip_zeros(&e).is_empty() {
                    return Err("the JWK's RSA modulus or exponent is zero".into());
                }
                let rsa_key = der(0x30, &[der_uint(&n), der_uint(&e)].concat());
                let bits = [&[0u8][..], &rsa_key].concat();
                let algorithm_id = der(0x30, &[OID_RSA_ENCRYPTION, DER_NULL].concat());
                Ok((der(0x30, &[algorithm_id, der(0x03, &bits)].concat()), "RS256"))
            }
            other => Err(format!(
                "key type {other:?} cannot sign here (supported: EC, RSA)"
            )),
        }
    }
}

/// Converts an ECDSA signature from the raw `r‖s` form (each half fixed
/// width, big-endian: what Key Vault returns) to ASN.1 DER
/// `SEQUENCE { INTEGER r, INTEGER s }`.
pub fn raw_ecdsa_to_der(raw: &[u8]) -> Result<Vec<u8>, AzureError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 2 * 66 {
        return Err(AzureError::BadSignature(format!(
            "{} bytes cannot be an ECDSA r‖s",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = Vec::with_capacity(raw.len() + 6);
    for (name, half) in [("r", r), ("s", s)] {
        if strip_zeros(half).is_empty() {
            return Err(AzureError::BadSignature(format!("{name} is zero")));
        }
        body.extend(der_uint(half));
    }
    Ok(der(0x30, &body))
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// A DER INTEGER for an unsigned big-endian magnitude: minimal, with a
/// leading 0x00 when the high bit would make it negative.
fn der_uint(magnitude: &[u8]) -> Vec<u8> {
    let magnitude = strip_zeros(magnitude);
    let mut content = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(magnitude);
    der(0x02, &content)
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    if content.len() < 0x80 {
        out.push(content.len() as u8);
    } else {
        let length = content.len().to_be_bytes();
        let length = strip_zeros(&length);
        out.push(0x80 | length.len() as u8);
        out.extend_from_slice(length);
    }
    out.extend_from_slice(content);
    out
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD_INDIFFERENT.decode(text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_resources() {
        let vault = Endpoint::from_host("kv.vault.azure.net").unwrap();
        assert_eq!(vault.base, "https://kv.vault.azure.net");
        assert_eq!(vault.resource, "https://vault.azure.net");
        let hsm = Endpoint::from_host("hsm.managedhsm.azure.net").unwrap();
        assert_eq!(hsm.resource, "https://managedhsm.azure.net");
        let gov = Endpoint::from_host("kv.vault.usgovcloudapi.net").unwrap();
        assert_eq!(gov.resource, "https://vault.usgovcloudapi.net");
        for host in ["127.0.0.1:8443", "localhost:1", "[::1]:9"] {
            let local = Endpoint::from_host(host).unwrap();
            assert_eq!(local.base, format!("http://{host}"));
            assert_eq!(local.resource, DEFAULT_RESOURCE);
        }
        for bad in ["", "kv/x", "kv.vault.azure.net/keys", "a b", "user@kv"] {
            assert!(Endpoint::from_host(bad).is_err(), "{bad}");
        }
        assert!(Endpoint::from_kid("https://kv.vault.azure.net/keys/k/v1").is_ok());
        for bad in [
            "http://kv.vault.azure.net/keys/k/v1",
            "https://kv.vault.azure.net/secrets/k/v1",
            "https://kv.vault.azure.net/keys/k",
            "https://kv.vault.azure.net/keys/k/v1?x=1",
            "https://127.0.0.1:1/keys/k/v1",
        ] {
            assert!(Endpoint::from_kid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn authority_hosts() {
        assert_eq!(authority_host(None).unwrap(), DEFAULT_AUTHORITY);
        assert_eq!(
            authority_host(Some("https://login.microsoftonline.us/".into())).unwrap(),
            "https://login.microsoftonline.us"
        );
        assert!(authority_host(Some("http://127.0.0.1:5/".into())).is_ok());
        assert!(authority_host(Some("http://login.example.com".into())).is_err());
    }

    #[test]
    fn token_lifetimes() {
        let value: Value = serde_json::from_str(r#"{"a":3599,"b":"3599","c":true}"#).unwrap();
        assert_eq!(number(&value["a"]), Some(3599));
        assert_eq!(number(&value["b"]), Some(3599));
        assert_eq!(number(&value["c"]), None);
        assert_eq!(lifetime(Some(10), Some(1)), Duration::from_secs(10));
        let soon = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 100;
        assert!(lifetime(None, Some(soon)) <= Duration::from_secs(100));
        assert_eq!(lifetime(None, Some(1)), Duration::ZERO);
    }

    #[test]
    fn der_lengths() {
        assert_eq!(der(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = der(0x04, &[0; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        assert_eq!(der_uint(&[0, 0, 0x7f]), vec![0x02, 1, 0x7f]);
        assert_eq!(der_uint(&[0x80]), vec![0x02, 2, 0, 0x80]);
        assert_eq!(redact("bad secret s3cr3t!", &["s3cr3t"]), "bad secret ***!");
    }
}
