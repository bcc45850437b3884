//! Azure credentials: where a token may come from (environment, workload
//! identity, managed identity, the Azure CLI), read from the environment
//! once, tried in order for `Auto`, and tokens cached per resource. Secrets,
//! tokens and client assertions never reach an error or a log line.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{AzureError, CredentialKind};
use crate::http::{USER_AGENT, describe, is_loopback};

impl Source {
    /// How errors and logs name this source (never with a value in it).
    pub(super) fn label(&self) -> &'static str {
        match self {
            Source::ClientSecret { .. } => "environment (AZURE_CLIENT_SECRET)",
            Source::Workload { .. } => "workload identity (AZURE_FEDERATED_TOKEN_FILE)",
            Source::AppService { .. } => "managed identity (IDENTITY_ENDPOINT)",
            Source::Imds { .. } => "managed identity (instance metadata service)",
            Source::AzureCli { .. } => "Azure CLI (az)",
        }
    }
}

impl fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<&str> = self.sources.iter().map(Source::label).collect();
        f.debug_struct("AzureCredential")
            .field("kind", &self.kind)
            .field("sources", &sources)
            .finish_non_exhaustive()
    }
}

impl AzureCredential {
    /// A credential from `env` (a variable's value by name), read once,
    /// here. `PATH` is looked up through `env` too, to find `az`. Empty
    /// values count as unset.
    pub fn with_env(
        kind: CredentialKind,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AzureCredential, AzureError> {
        let var = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let (sources, looked_for) = resolve(kind, &var)?;
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
        Ok(AzureCredential {
            http,
            kind,
            sources,
            looked_for,
            state: tokio::sync::Mutex::default(),
        })
    }

    /// The kind this credential was built for.
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The HTTP client its tokens are fetched with, for the requests that
    /// carry them (one connection pool).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A token for `resource`, from the cache or the credential.
    pub(super) async fn token(&self, resource: &str) -> Result<Authorization, AzureError> {
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

    pub(super) async fn fetch(
        &self,
        source: &Source,
        resource: &str,
    ) -> Result<(Zeroizing<String>, Duration), Miss> {
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

pub(super) const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";

pub(super) const IMDS_AUTHORITY: &str = "http://169.254.169.254";

pub(super) const IMDS_PATH: &str = "/metadata/identity/oauth2/token";

pub(super) const IMDS_API_VERSION: &str = "2018-02-01";

pub(super) const APP_SERVICE_API_VERSION: &str = "2019-08-01";

pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// In `Auto` mode the metadata service is only probed: a machine outside
/// Azure has nothing at 169.254.169.254, and nobody should wait for a TCP
/// timeout to learn that.
pub(super) const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) const AZ_TIMEOUT: Duration = Duration::from_secs(30);

/// Tokens are renewed this long before they expire (at most half their life).
pub(super) const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(300);

/// For a token answer that says nothing about its lifetime.
pub(super) const TOKEN_LIFETIME_FALLBACK: Duration = Duration::from_secs(600);

pub(super) const ENVIRONMENT_VARS: [&str; 3] = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"];

pub(super) const WORKLOAD_VARS: [&str; 3] =
    ["AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"];

pub(super) const APP_SERVICE_VARS: [&str; 2] = ["IDENTITY_ENDPOINT", "IDENTITY_HEADER"];

/// One way of getting a token, with what it needs read from the
/// environment up front.
pub(super) enum Source {
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

pub(super) struct Token {
    value: Zeroizing<String>,
    renew_at: Instant,
}

#[derive(Default)]
pub(super) struct TokenState {
    /// The source that gave the first token; later tokens come from it too.
    chosen: Option<usize>,
    /// By resource (`https://vault.azure.net`, `https://managedhsm.azure.net`).
    tokens: HashMap<String, Token>,
}

/// A bearer token and the name of the credential that got it.
pub(super) struct Authorization {
    pub(super) token: Zeroizing<String>,
    pub(super) credential: &'static str,
}

/// Why a source gave no token.
pub(super) enum Miss {
    /// Not there (`Auto` mode's metadata service probe): try the next one.
    Unavailable(String),
    Failed(AzureError),
}

/// An Azure credential: the sources it may take tokens from (read from the
/// environment once), one HTTP client, and tokens cached per resource (Key
/// Vault, Managed HSM, Resource Manager) until shortly before they expire.
pub struct AzureCredential {
    http: reqwest::Client,
    kind: CredentialKind,
    sources: Vec<Source>,
    /// For the `Auto` error when nothing works: what was looked for.
    looked_for: String,
    state: tokio::sync::Mutex<TokenState>,
}

/// The sources a credential kind uses, in order, and (for `Auto`) the
/// description of what was looked for.
pub(super) fn resolve(
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
pub(super) fn authority_host(value: Option<String>) -> Result<String, AzureError> {
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

pub(super) fn tenant_id(value: String) -> Result<String, AzureError> {
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

pub(super) fn find_az(path: Option<String>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&path?)
        .map(|dir| dir.join("az"))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `az account get-access-token`'s standard output, or a one-line reason.
pub(super) fn run_az(az: &Path, resource: &str) -> Result<Vec<u8>, String> {
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

pub(super) fn drain(mut reader: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        bytes
    })
}

/// A token endpoint's answer: the token and its lifetime, or a reason with
/// every `secret` scrubbed out.
pub(super) async fn token_answer(
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
pub(super) fn lifetime(expires_in: Option<u64>, expires_on: Option<u64>) -> Duration {
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
pub(super) fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(secret, "***");
    }
    text
}

pub(super) fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or_default().trim()
}

pub(super) fn clip(text: &str) -> String {
    const MAX: usize = 400;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
