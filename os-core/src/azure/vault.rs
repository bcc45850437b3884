//! The Key Vault (and Managed HSM) REST calls: a key's public half as
//! SubjectPublicKeyInfo DER, and a digest signed in the vault (EC signatures
//! turned from raw `r‖s` into ASN.1 DER).

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::credential::{AzureCredential, clip, first_line};
use super::{AzureError, CredentialKind};
use crate::http::{RetryPolicy, describe, is_loopback};

pub(super) const API_VERSION: &str = "7.4";

pub(super) const DEFAULT_RESOURCE: &str = "https://vault.azure.net";

/// Vault requests, retried on connection errors, 429 and 5xx: a signature
/// is one small request, so a few quick tries, and a vault that throttles
/// for longer than the budget fails the record rather than the pipeline.
pub(super) const VAULT_RETRY: RetryPolicy = RetryPolicy {
    attempts: 3,
    budget: Duration::from_secs(30),
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(10),
};

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

/// The run's Key Vault client: one credential, and its HTTP client.
#[derive(Debug)]
pub struct KeyVault {
    credential: AzureCredential,
}

/// Where a vault is and which token it takes.
pub(super) struct Endpoint {
    /// `host[:port]` as given.
    host: String,
    /// `https://host` (`http://` on loopback).
    base: String,
    /// The token resource (`https://vault.azure.net`, …).
    resource: String,
}

#[derive(Deserialize)]
pub(super) struct KeyBundle {
    key: Jwk,
    attributes: Option<KeyAttributes>,
}

#[derive(Deserialize)]
pub(super) struct KeyAttributes {
    enabled: Option<bool>,
}

#[derive(Deserialize)]
pub(super) struct Jwk {
    kid: String,
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    key_ops: Option<Vec<String>>,
}

pub(super) const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

pub(super) const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

pub(super) const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

pub(super) const OID_RSA_ENCRYPTION: &[u8] =
    &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

pub(super) const DER_NULL: &[u8] = &[0x05, 0x00];

impl KeyVault {
    /// A client whose credential comes from the process environment.
    pub fn new(credential: CredentialKind) -> Result<KeyVault, AzureError> {
        KeyVault::with_env(credential, |name| std::env::var(name).ok())
    }

    /// A client whose credential comes from `env` ([`AzureCredential::with_env`]).
    pub fn with_env(
        credential: CredentialKind,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<KeyVault, AzureError> {
        Ok(KeyVault {
            credential: AzureCredential::with_env(credential, env)?,
        })
    }

    /// The credential kind this client was built for.
    pub fn credential(&self) -> CredentialKind {
        self.credential.kind()
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
    pub(super) async fn vault_request(
        &self,
        method: Method,
        url: &str,
        endpoint: &Endpoint,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, AzureError> {
        let authorization = self.credential.token(&endpoint.resource).await?;
        let build = || {
            let request = self
                .credential
                .http()
                .request(method.clone(), url)
                .query(&[("api-version", API_VERSION)])
                .bearer_auth(authorization.token.as_str());
            match body {
                Some(body) => request.json(body),
                None => request,
            }
        };
        let response = VAULT_RETRY
            .send(what, build)
            .await
            .map_err(|e| AzureError::Unreachable {
                vault: endpoint.host.clone(),
                detail: describe(&e),
            })?;
        let status = response.status();
        if status.is_success() {
            return response.json::<Value>().await.map_err(|e| AzureError::Protocol {
                vault: endpoint.host.clone(),
                detail: format!("{what}: unreadable answer: {}", describe(&e)),
            });
        }
        let detail = vault_error_detail(response).await;
        let (vault, what) = (endpoint.host.clone(), what.to_string());
        Err(match status {
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
        })
    }
}

impl Endpoint {
    pub(super) fn from_host(vault: &str) -> Result<Endpoint, AzureError> {
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
    pub(super) fn from_kid(kid: &str) -> Result<Endpoint, AzureError> {
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

impl Jwk {
    /// SubjectPublicKeyInfo DER and the signing algorithm.
    pub(super) fn spki(&self) -> Result<(Vec<u8>, &'static str), String> {
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

/// Key Vault's error envelope (`{"error":{"code","message"}}`) as one line.
pub(super) async fn vault_error_detail(response: reqwest::Response) -> String {
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

/// The token resource for a vault host: `NAME.vault.SUFFIX` →
/// `https://vault.SUFFIX` (`vault.azure.net` in the public cloud, and the
/// sovereign clouds' own), `NAME.managedhsm.SUFFIX` → `https://managedhsm.SUFFIX`;
/// anything else (loopback, private names) the public cloud's vault resource.
pub(super) fn resource_for(host: &str) -> String {
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
pub(super) fn check_name(what: &'static str, value: &str) -> Result<(), AzureError> {
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

pub(super) fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// A DER INTEGER for an unsigned big-endian magnitude: minimal, with a
/// leading 0x00 when the high bit would make it negative.
pub(super) fn der_uint(magnitude: &[u8]) -> Vec<u8> {
    let magnitude = strip_zeros(magnitude);
    let mut content = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(magnitude);
    der(0x02, &content)
}

pub(super) fn der(tag: u8, content: &[u8]) -> Vec<u8> {
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

pub(super) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD_INDIFFERENT.decode(text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::credential::redact;

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
    fn der_lengths() {
        assert_eq!(der(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = der(0x04, &[0; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        assert_eq!(der_uint(&[0, 0, 0x7f]), vec![0x02, 1, 0x7f]);
        assert_eq!(der_uint(&[0x80]), vec![0x02, 2, 0, 0x80]);
        assert_eq!(redact("bad secret s3cr3t!", &["s3cr3t"]), "bad secret ***!");
    }
}
