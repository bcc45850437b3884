//! Azure Resource Manager, for Azure Container Registry's server-side
//! import: the subscription's registries (to find a login server's resource
//! id) and `Registries_ImportImage`, a long-running operation polled on its
//! `Location` until it ends. Spoken over `reqwest` from the public REST spec
//! (Microsoft.ContainerRegistry, api-version [`API_VERSION`]), for the
//! reasons `azure`'s module documentation gives for Key Vault.

use std::time::{Duration, Instant};

use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::AzureError;
use super::credential::{AzureCredential, clip};
use crate::http::{RetryPolicy, describe, is_loopback, retry_after};

pub const API_VERSION: &str = "2025-11-01";

/// Public Azure's Resource Manager.
pub const DEFAULT_ENDPOINT: &str = "https://management.azure.com";

/// The token audience of public Azure's Resource Manager; a sovereign
/// cloud's endpoint is its own audience.
const PUBLIC_RESOURCE: &str = "https://management.azure.com";

/// Requests to ARM, retried on connection errors, 429 and 5xx. ARM
/// throttles per subscription and says how long to wait.
const ARM_RETRY: RetryPolicy = RetryPolicy {
    attempts: 5,
    budget: Duration::from_secs(120),
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(20),
};

/// How long to wait between polls when ARM does not say.
const DEFAULT_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    #[error("--arm-endpoint {0:?}: expected https://HOST (plain http only on loopback)")]
    BadEndpoint(String),
    #[error(
        "no Azure subscription: pass --subscription or set AZURE_SUBSCRIPTION_ID (the subscription of the target registry)"
    )]
    NoSubscription,
    #[error(transparent)]
    Credential(#[from] AzureError),
    #[error("cannot reach Azure Resource Manager at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error(
        "Azure Resource Manager refused {what} ({status}) to the {credential} credential: {code}: {message}; the identity needs {role}"
    )]
    Refused {
        what: String,
        status: u16,
        credential: String,
        code: String,
        message: String,
        role: &'static str,
    },
    #[error("{what} failed ({status}): {code}: {message}")]
    Failed {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{what}: still running after {waited:?} (--timeout); operation {operation}")]
    TimedOut {
        what: String,
        waited: Duration,
        operation: String,
    },
    #[error("{what}: {detail}")]
    Protocol { what: String, detail: String },
}

impl ArmError {
    /// ARM's own error code, when it gave one.
    pub fn arm_code(&self) -> Option<&str> {
        match self {
            ArmError::Refused { code, .. } | ArmError::Failed { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A container registry resource, as the subscription lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcrResource {
    /// `/subscriptions/…/resourceGroups/…/providers/Microsoft.ContainerRegistry/registries/NAME`.
    pub id: String,
    pub name: String,
    /// `NAME.azurecr.io` (lower case, as ARM reports it).
    pub login_server: String,
    /// `properties.policies.exportPolicy.status` is `disabled`: ACR refuses
    /// to import from it.
    pub export_disabled: bool,
}

/// `ImportImageParameters`: where from, under which names, and whether an
/// existing tag may be overwritten.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportImage {
    pub source: ImportSource,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target_tags: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub untagged_target_repositories: Vec<String>,
    /// `NoForce` or `Force`.
    pub mode: &'static str,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_uri: Option<String>,
    /// `repository@sha256:…`: always by digest.
    pub source_image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<ImportCredentials>,
}

/// The source registry's credentials: secrets, so never `Debug`-printed.
#[derive(Clone, Serialize)]
pub struct ImportCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ImportSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportSource")
            .field("resource_id", &self.resource_id)
            .field("registry_uri", &self.registry_uri)
            .field("source_image", &self.source_image)
            .field("credentials", &self.credentials.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A finished import.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The operation's id: the last segment of its `Location`, else ARM's
    /// `x-ms-request-id`.
    pub operation: String,
    /// Polls made after the 202.
    pub polls: u32,
}

/// The run's Resource Manager client: one subscription, one credential, the
/// registry list fetched once.
pub struct ResourceManager {
    credential: std::sync::Arc<AzureCredential>,
    endpoint: String,
    resource: String,
    subscription: String,
    registries: OnceCell<Vec<AcrResource>>,
}

impl ResourceManager {
    pub fn new(
        credential: std::sync::Arc<AzureCredential>,
        endpoint: &str,
        subscription: Option<String>,
    ) -> Result<ResourceManager, ArmError> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let host = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://").filter(|host| is_loopback(host)))
            .filter(|host| !host.is_empty() && !host.contains('/'))
            .ok_or_else(|| ArmError::BadEndpoint(endpoint.clone()))?;
        let resource = if host == "management.azure.com" {
            PUBLIC_RESOURCE.to_string()
        } else if is_loopback(host) {
            // A stand-in: it plays public Azure.
            PUBLIC_RESOURCE.to_string()
        } else {
            endpoint.clone()
        };
        let subscription = subscription
            .filter(|s| !s.trim().is_empty())
            .ok_or(ArmError::NoSubscription)?;
        Ok(ResourceManager {
            credential,
            endpoint,
            resource,
            subscription,
            registries: OnceCell::new(),
        })
    }

    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// The registry whose login server is `host`, if the subscription has it.
    pub async fn registry_for(&self, host: &str) -> Result<Option<AcrResource>, ArmError> {
        let registries = self.registries.get_or_try_init(|| self.list_registries()).await?;
        Ok(registries
            .iter()
            .find(|r| r.login_server.eq_ignore_ascii_case(host))
            .cloned())
    }

    /// `Registries_List`, every page.
    async fn list_registries(&self) -> Result<Vec<AcrResource>, ArmError> {
        let mut url = format!(
            "{}/subscriptions/{}/providers/Microsoft.ContainerRegistry/registries?api-version={API_VERSION}",
            self.endpoint, self.subscription
        );
        let mut found = Vec::new();
        loop {
            let what = "listing the subscription's container registries";
            let (_, body) = self.request(Method::GET, &url, None, what).await?;
            let page: RegistryPage = serde_json::from_value(body).map_err(|e| ArmError::Protocol {
                what: what.into(),
                detail: format!("unexpected answer: {e}"),
            })?;
            found.extend(page.value.into_iter().map(AcrResource::from));
            match page.next_link {
                Some(next) if !next.is_empty() => url = next,
                _ => return Ok(found),
            }
        }
    }

    /// `Registries_ImportImage` into `registry`, then its `Location` polled
    /// (as long as ARM's `Retry-After` asks) until it ends or `timeout`.
    pub async fn import_image(
        &self,
        registry: &AcrResource,
        body: &ImportImage,
        timeout: Duration,
    ) -> Result<Imported, ArmError> {
        let started = Instant::now();
        let what = format!("importing {} into {}", body.source.source_image, registry.name);
        let url = format!(
            "{}{}/importImage?api-version={API_VERSION}",
            self.endpoint, registry.id
        );
        let json = serde_json::to_value(body).expect("import parameters serialize");
        let (answer, _) = self.request(Method::POST, &url, Some(&json), &what).await?;
        let mut operation = answer.request_id.clone().unwrap_or_default();
        if answer.status != StatusCode::ACCEPTED {
            return Ok(Imported { operation, polls: 0 });
        }
        let location = answer.location.ok_or_else(|| ArmError::Protocol {
            what: what.clone(),
            detail: "202 Accepted without a Location to poll".into(),
        })?;
        if let Some(id) = operation_id(&location) {
            operation = id;
        }
        let mut wait = answer.retry_after;
        let mut polls = 0;
        loop {
            let pause = wait.unwrap_or(DEFAULT_POLL);
            if started.elapsed() + pause > timeout {
                return Err(ArmError::TimedOut {
                    what,
                    waited: started.elapsed(),
                    operation,
                });
            }
            tokio::time::sleep(pause).await;
            polls += 1;
            let (answer, _) = self.request(Method::GET, &location, None, &what).await?;
            if answer.status != StatusCode::ACCEPTED {
                return Ok(Imported { operation, polls });
            }
            wait = answer.retry_after;
        }
    }

    /// One request with a bearer token, retried on transient failures. A
    /// success (2xx) comes back with its headers of interest and its JSON
    /// body (`null` when empty); anything else is an [`ArmError`].
    async fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<(Answer, Value), ArmError> {
        let authorization = self.credential.token(&self.resource).await?;
        let build = || {
            let request = self
                .credential
                .http()
                .request(method.clone(), url)
                .bearer_auth(authorization.token.as_str());
            match body {
                Some(body) => request.json(body),
                None => request,
            }
        };
        let response = ARM_RETRY
            .send(what, build)
            .await
            .map_err(|e| ArmError::Unreachable {
                endpoint: self.endpoint.clone(),
                detail: describe(&e),
            })?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if !status.is_success() {
            return Err(self.refusal(status, &json, &bytes, what, authorization.credential));
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let answer = Answer {
            status,
            location: header(LOCATION.as_str()),
            retry_after: retry_after(&headers),
            request_id: header("x-ms-request-id"),
        };
        Ok((answer, json))
    }

    fn refusal(
        &self,
        status: StatusCode,
        json: &Value,
        bytes: &[u8],
        what: &str,
        credential: &str,
    ) -> ArmError {
        let (code, message) = match json.get("error") {
            Some(error) => (
                error["code"].as_str().unwrap_or("Unknown").to_string(),
                clip(error["message"].as_str().unwrap_or("")),
            ),
            None => (
                status.canonical_reason().unwrap_or("Error").replace(' ', ""),
                clip(String::from_utf8_lossy(bytes).trim()),
            ),
        };
        let what = what.to_string();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ArmError::Refused {
                what,
                status: status.as_u16(),
                credential: credential.to_string(),
                code,
                message,
                role: "AcrPush (or Contributor) on the target registry, and Reader on the subscription \
                       to list its registries (AcrPull on a source registry of the subscription)",
            },
            _ => ArmError::Failed {
                what,
                status: status.as_u16(),
                code,
                message,
            },
        }
    }
}

struct Answer {
    status: StatusCode,
    location: Option<String>,
    retry_after: Option<Duration>,
    request_id: Option<String>,
}

/// `…/operationResults/{id}?…` → `{id}`.
fn operation_id(location: &str) -> Option<String> {
    let path = location.split('?').next()?;
    let (_, id) = path.rsplit_once('/')?;
    (!id.is_empty()).then(|| id.to_string())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryPage {
    #[serde(default)]
    value: Vec<RegistryResource>,
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct RegistryResource {
    id: String,
    name: String,
    #[serde(default)]
    properties: RegistryProperties,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryProperties {
    #[serde(default)]
    login_server: String,
    #[serde(default)]
    policies: Value,
}

impl From<RegistryResource> for AcrResource {
    fn from(resource: RegistryResource) -> AcrResource {
        let export = &resource.properties.policies["exportPolicy"]["status"];
        AcrResource {
            id: resource.id,
            name: resource.name,
            login_server: resource.properties.login_server.to_ascii_lowercase(),
            export_disabled: export
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("disabled")),
        }
    }
}

/// Whether `host` is an Azure Container Registry login server by its name
/// (public Azure, Azure China, Azure US Government).
pub fn is_acr_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    [".azurecr.io", ".azurecr.cn", ".azurecr.us"]
        .iter()
        .any(|suffix| host.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_and_acr_hosts() {
        assert_eq!(
            operation_id("https://management.azure.com/subscriptions/s/providers/Microsoft.ContainerRegistry/locations/westus/operationResults/abc-123?api-version=2025-11-01")
                .as_deref(),
            Some("abc-123")
        );
        assert!(is_acr_host("OneStreamProd.azurecr.io"));
        assert!(is_acr_host("x.azurecr.us"));
        assert!(!is_acr_host("azurecr.io.example.com"));
    }

    #[test]
    fn credentials_never_print() {
        let source = ImportSource {
            resource_id: None,
            registry_uri: Some("dev.example.com".into()),
            source_image: "iam@sha256:00".into(),
            credentials: Some(ImportCredentials {
                username: "u".into(),
                password: "hunter2".into(),
            }),
        };
        assert!(!format!("{source:?}").contains("hunter2"));
    }
}
