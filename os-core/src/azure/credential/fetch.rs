//! Getting a token from one source: the token endpoint (client secret or
//! federated assertion), the managed identity endpoints, or `az`; the
//! answer's lifetime; and messages scrubbed of every secret.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::AzureError;
use super::sources::Source;
use super::{AzureCredential, Miss};
use crate::http::describe;

pub(super) const IMDS_API_VERSION: &str = "2018-02-01";

pub(super) const APP_SERVICE_API_VERSION: &str = "2019-08-01";

pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// In `Auto` mode the metadata service is only probed: a machine outside
/// Azure has nothing at 169.254.169.254, and nobody should wait for a TCP
/// timeout to learn that.
pub(super) const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) const AZ_TIMEOUT: Duration = Duration::from_secs(30);

/// For a token answer that says nothing about its lifetime.
pub(super) const TOKEN_LIFETIME_FALLBACK: Duration = Duration::from_secs(600);

impl AzureCredential {
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

pub(in crate::azure) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(secret, "***");
    }
    text
}

pub(in crate::azure) fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or_default().trim()
}

pub(in crate::azure) fn clip(text: &str) -> String {
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
