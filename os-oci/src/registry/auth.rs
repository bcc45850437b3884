//! Credentials and tokens: the docker config's credential for a registry,
//! the `WWW-Authenticate` challenge, and bearer tokens cached per scope.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use super::{Challenge, Host, Registry, RegistryError, Token, error_detail, header_str, slot};
use crate::credentials::{self, Credential};
use crate::http::describe;
use crate::reference::RegistryRef;

/// Tokens without `expires_in` live 60 s by the token spec; we renew a
/// little early so a token never expires in flight.
pub(super) const TOKEN_LIFETIME_DEFAULT: u64 = 60;

pub(super) const TOKEN_RENEW_MARGIN: u64 = 10;

/// Azure Container Registry's (and docker's) user name for a refresh token
/// presented as a password.
pub const ACR_TOKEN_USER: &str = "00000000-0000-0000-0000-000000000000";

impl Registry {
    /// The credential this run uses for `registry` (flags or the
    /// environment, else the docker config and its helpers), looked up once.
    pub async fn credential(&self, registry: &str) -> Result<Option<Credential>, RegistryError> {
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

    pub(super) async fn authorization(
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

    pub(super) async fn forget_token(&self, host: &Host, scope: &str) {
        let slot = slot(&self.tokens, (host.base.clone(), scope.to_string()));
        *slot.lock().await = None;
    }

    /// The token endpoint of the Docker token protocol: GET with basic auth
    /// for a password, the OAuth2 refresh-token POST for an identity token.
    pub(super) async fn fetch_token(
        &self,
        reference: &RegistryRef,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token, RegistryError> {
        let credential = match self.credential(&reference.registry).await? {
            Some(credential) => Some(credential),
            None => self.entra_credential(reference, realm, service).await?,
        };
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

impl Registry {
    /// Without a docker credential for an ACR, an ACR refresh token from
    /// the Entra sign-in (when the caller configured one), exchanged once
    /// per registry and run.
    async fn entra_credential(
        &self,
        reference: &RegistryRef,
        realm: &str,
        service: Option<&str>,
    ) -> Result<Option<Credential>, RegistryError> {
        let (Some(entra), Some(exchange)) = (
            &self.options.entra,
            super::acr::exchange_url(&reference.registry, realm),
        ) else {
            return Ok(None);
        };
        let slot = slot(&self.acr_refresh_tokens, reference.registry.clone());
        let mut guard = slot.lock().await;
        if guard.is_none() {
            let refresh = self
                .exchange_entra_token(entra, reference, &exchange, service)
                .await?;
            tracing::debug!("{}: signed in with Entra ID", reference.registry);
            *guard = Some(refresh);
        }
        Ok(guard.clone().map(Credential::IdentityToken))
    }
}

pub(super) fn basic(username: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

pub(super) fn challenge(response: &Response) -> Challenge {
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
pub(super) fn auth_params(text: &str) -> HashMap<String, String> {
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
}
