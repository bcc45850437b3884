//! How the copy talks to a registry: plain HTTP as a distribution client,
//! with `credentials` as Basic auth or for a Bearer token from the
//! registry's realm.

use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::push::{self, Response};

/// HTTP to a plain-HTTP registry as a distribution client: on 401, the
/// challenge answered (Basic with the credentials, or a Bearer token from
/// the realm) and the request sent again.
pub(super) struct RegistryClient {
    pub(super) host: String,
    credentials: Option<(String, String)>,
    /// The last `Authorization` that worked, tried first.
    authorization: Mutex<Option<String>>,
}

impl RegistryClient {
    pub(super) fn new(host: &str, credentials: Option<(String, String)>) -> RegistryClient {
        RegistryClient {
            host: host.to_string(),
            credentials,
            authorization: Mutex::new(None),
        }
    }

    pub(super) fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        let mut authorization = self.authorization.lock().unwrap().clone();
        for attempt in 0..2 {
            let mut all = headers.to_vec();
            if let Some(value) = &authorization {
                all.push(("Authorization", value));
            }
            let response = push::request(&self.host, method, path, &all, body)
                .map_err(|e| format!("{method} {}{path}: {e}", self.host))?;
            let challenge = response.header("WWW-Authenticate").map(str::to_string);
            match challenge {
                Some(challenge) if response.status == 401 && attempt == 0 => {
                    authorization = Some(self.answer(&challenge)?);
                }
                _ => {
                    if response.status != 401 && authorization.is_some() {
                        *self.authorization.lock().unwrap() = authorization;
                    }
                    return Ok(response);
                }
            }
        }
        unreachable!("two attempts at most")
    }

    fn basic(&self) -> Option<String> {
        self.credentials
            .as_ref()
            .map(|(user, password)| format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))))
    }

    fn answer(&self, challenge: &str) -> Result<String, String> {
        let (scheme, rest) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("Basic") {
            return self
                .basic()
                .ok_or_else(|| format!("{} asks for credentials and none were given", self.host));
        }
        if !scheme.eq_ignore_ascii_case("Bearer") {
            return Err(format!("{} asks for {scheme} auth", self.host));
        }
        let params = challenge_params(rest);
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let realm = get("realm").ok_or_else(|| format!("{}: a Bearer challenge without realm", self.host))?;
        let (realm_host, realm_path) = realm
            .strip_prefix("http://")
            .and_then(|rest| rest.find('/').map(|i| (&rest[..i], &rest[i..])))
            .ok_or_else(|| format!("{}: realm {realm} is not a plain-HTTP URL", self.host))?;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(service) = get("service") {
            query.append_pair("service", service);
        }
        if let Some(scope) = get("scope") {
            query.append_pair("scope", scope);
        }
        let sep = if realm_path.contains('?') { '&' } else { '?' };
        let path = format!("{realm_path}{sep}{}", query.finish());
        let basic = self.basic();
        let headers: Vec<(&str, &str)> = basic.iter().map(|b| ("Authorization", b.as_str())).collect();
        let answer = push::request(realm_host, "GET", &path, &headers, &[])
            .map_err(|e| format!("GET {realm}: {e}"))?;
        if answer.status != 200 {
            return Err(format!(
                "the token service {realm} of {} answered {}: {}",
                self.host,
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            ));
        }
        let token: Value =
            serde_json::from_slice(&answer.body).map_err(|e| format!("{realm}: not JSON: {e}"))?;
        let token = token["token"]
            .as_str()
            .or_else(|| token["access_token"].as_str())
            .ok_or_else(|| format!("{realm}: an answer without a token"))?;
        Ok(format!("Bearer {token}"))
    }
}

/// `k="v", k2="v2"` of an auth challenge.
fn challenge_params(rest: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((value, next)) => (value, next),
                None => (quoted, ""),
            },
            None => after.split_once(',').unwrap_or((after, "")),
        };
        params.push((key, value.to_string()));
        rest = next.trim_start_matches(',').trim();
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_quoted_and_bare_values() {
        let params = challenge_params(
            r#"realm="http://127.0.0.1:1/token",service="svc",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            params,
            vec![
                ("realm".to_string(), "http://127.0.0.1:1/token".to_string()),
                ("service".to_string(), "svc".to_string()),
                ("scope".to_string(), "repository:a/b:pull,push".to_string()),
            ]
        );
        assert_eq!(
            challenge_params("realm=x, error=invalid_token"),
            vec![
                ("realm".to_string(), "x".to_string()),
                ("error".to_string(), "invalid_token".to_string())
            ]
        );
    }
}
