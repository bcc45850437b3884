//! A local stand-in for Azure Key Vault and the token endpoints in front of
//! it, in process, on `127.0.0.1:<free port>`, with real keys. It speaks
//! just enough of the documented REST protocols for a real client:
//!
//! - `POST /{tenant}/oauth2/v2.0/token` (Entra ID; point `AZURE_AUTHORITY_HOST`
//!   at [`KeyVaultStandIn::authority`]): `grant_type=client_credentials` with
//!   the configured `client_secret`, or with `client_assertion_type=…jwt-bearer`
//!   and a `client_assertion` equal to the configured federated token.
//!   `scope` must be `{resource}/.default`. A wrong secret gets 401
//!   `{"error":"invalid_client",…}`.
//! - `GET /msi/token?api-version=2019-08-01&resource=…` with the configured
//!   `X-IDENTITY-HEADER` (the App Service managed identity endpoint; point
//!   `IDENTITY_ENDPOINT` at [`KeyVaultStandIn::identity_endpoint`]).
//! - `GET /keys/{name}[/{version}]?api-version=7.4`: the key bundle, the public
//!   key as a JWK (base64url without padding, as Key Vault writes it).
//! - `POST /keys/{name}/{version}/sign?api-version=7.4` with
//!   `{"alg","value":"<b64url digest>"}`: signs the DIGEST (prehashed) with the
//!   private key; EC signatures as raw `r‖s`, fixed width, as Key Vault does.
//!
//! Vault requests need `Authorization: Bearer <token>` with a token this
//! stand-in issued for the `https://vault.azure.net` resource (else 401 with
//! Key Vault's `WWW-Authenticate` challenge); unknown keys or versions give
//! 404 `KeyNotFound`, a wrong `alg` or digest length 400 `BadParameter`.
//!
//! Key types: EC P-256 (ES256), EC P-384 (ES384) and RSA 2048 (RS256, PKCS#1
//! v1.5). ring cannot sign a digest it did not hash itself, so the keys are
//! generated and used with OpenSSL (already built for `sigstore`); tests
//! verify with ring, an independent implementation.

use super::form::{param, parse_form};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::ecdsa::EcdsaSig;
use openssl::md::Md;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use serde_json::{Value, json};

/// The resource (token audience) Key Vault accepts.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";
const API_VERSION: &str = "7.4";
const MSI_API_VERSION: &str = "2019-08-01";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// What the token endpoints say a token lives, in seconds.
pub const EXPIRES_IN: u64 = 3599;

/// A key's type. (Named for the EC curves; RSA is there too.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    /// RSA 2048, signing RS256 (PKCS#1 v1.5 with SHA-256).
    Rsa2048,
}

impl Curve {
    /// The one signing algorithm the stand-in accepts for the key.
    pub fn algorithm(self) -> &'static str {
        match self {
            Curve::P256 => "ES256",
            Curve::P384 => "ES384",
            Curve::Rsa2048 => "RS256",
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Curve::P256 | Curve::Rsa2048 => 32,
            Curve::P384 => 48,
        }
    }

    /// Width of r and s for EC keys.
    fn width(self) -> Option<usize> {
        match self {
            Curve::P256 => Some(32),
            Curve::P384 => Some(48),
            Curve::Rsa2048 => None,
        }
    }
}

struct Key {
    curve: Curve,
    version: String,
    pkey: PKey<Private>,
}

struct State {
    base: String,
    tenant_id: String,
    client_id: String,
    client_secret: String,
    federated_token: String,
    identity_header: String,
    keys: HashMap<String, Key>,
    /// Issued token → its audience.
    tokens: Mutex<HashMap<String, String>>,
    /// The scope (token endpoint) or resource (managed identity) of each
    /// token request.
    asked: Mutex<Vec<String>>,
    token_requests: AtomicUsize,
    sign_requests: AtomicUsize,
    leading_zero: AtomicBool,
    throttle: AtomicUsize,
    denied: Mutex<HashSet<String>>,
    last_raw_signature: Mutex<Option<Vec<u8>>>,
}

pub struct KeyVaultStandIn {
    host: String,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl KeyVaultStandIn {
    /// Generates the named keys (one version each) and serves.
    pub fn start(keys: &[(&str, Curve)]) -> KeyVaultStandIn {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind Key Vault stand-in"));
        let host = format!(
            "127.0.0.1:{}",
            server.server_addr().to_ip().expect("ip listener").port()
        );
        let keys = keys
            .iter()
            .map(|&(name, curve)| {
                let key = Key {
                    curve,
                    version: random_hex(16),
                    pkey: generate(curve),
                };
                (name.to_string(), key)
            })
            .collect();
        let state = Arc::new(State {
            base: format!("http://{host}"),
            tenant_id: guid(),
            client_id: guid(),
            client_secret: format!("secret~{}", random_hex(16)),
            federated_token: format!("eyJhbGciOiJSUzI1NiJ9.{}.{}", random_hex(24), random_hex(32)),
            identity_header: random_hex(16),
            keys,
            tokens: Mutex::default(),
            asked: Mutex::default(),
            token_requests: AtomicUsize::new(0),
            sign_requests: AtomicUsize::new(0),
            leading_zero: AtomicBool::new(false),
            throttle: AtomicUsize::new(0),
            denied: Mutex::default(),
            last_raw_signature: Mutex::default(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, state, stop) = (server.clone(), state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(request) = server.recv() else { return };
                    handle(&state, request);
                }
            })
        };
        KeyVaultStandIn {
            host,
            state,
            stop,
            server,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`: the vault host of `azurekms://HOST/KEY`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `http://127.0.0.1:PORT`, for `AZURE_AUTHORITY_HOST`.
    pub fn authority(&self) -> String {
        self.state.base.clone()
    }

    /// `http://127.0.0.1:PORT/msi/token`, for `IDENTITY_ENDPOINT`.
    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.state.base)
    }

    pub fn identity_header(&self) -> &str {
        &self.state.identity_header
    }

    pub fn tenant_id(&self) -> &str {
        &self.state.tenant_id
    }

    pub fn client_id(&self) -> &str {
        &self.state.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.state.client_secret
    }

    pub fn federated_token(&self) -> &str {
        &self.state.federated_token
    }

    fn key(&self, name: &str) -> &Key {
        self.state
            .keys
            .get(name)
            .unwrap_or_else(|| panic!("the stand-in has no key {name}"))
    }

    pub fn key_version(&self, name: &str) -> String {
        self.key(name).version.clone()
    }

    /// `http://127.0.0.1:PORT/keys/NAME/VERSION`.
    pub fn kid(&self, name: &str) -> String {
        format!("{}/keys/{name}/{}", self.state.base, self.key(name).version)
    }

    pub fn public_key_pem(&self, name: &str) -> String {
        String::from_utf8(self.key(name).pkey.public_key_to_pem().expect("public key PEM"))
            .expect("PEM is text")
    }

    /// SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self, name: &str) -> Vec<u8> {
        self.key(name).pkey.public_key_to_der().expect("public key DER")
    }

    /// The public key as ring's `UnparsedPublicKey` takes it: the
    /// uncompressed point for EC, PKCS#1 `RSAPublicKey` DER for RSA.
    pub fn public_key_for_ring(&self, name: &str) -> Vec<u8> {
        let pkey = &self.key(name).pkey;
        match self.key(name).curve {
            Curve::Rsa2048 => pkey.rsa().unwrap().public_key_to_der_pkcs1().unwrap(),
            _ => {
                let ec = pkey.ec_key().unwrap();
                let mut ctx = BigNumContext::new().unwrap();
                ec.public_key()
                    .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
                    .unwrap()
            }
        }
    }

    /// A token for `audience`, as if an identity outside this stand-in (the
    /// Azure CLI) had fetched it.
    pub fn issue_token(&self, audience: &str) -> String {
        issue(&self.state, audience)
    }

    /// Whether a token is one this stand-in issued for `audience`: what a
    /// service in front of it (ACR's token exchange) checks.
    pub fn token_check(&self, audience: &str) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let (state, audience) = (Arc::clone(&self.state), audience.to_string());
        move |token| state.tokens.lock().unwrap().get(token) == Some(&audience)
    }

    /// Token requests at both token endpoints, answered or not.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// The scope or resource each token request asked for, in order.
    pub fn token_scopes(&self) -> Vec<String> {
        self.state.asked.lock().unwrap().clone()
    }

    /// Signatures made.
    pub fn sign_requests(&self) -> usize {
        self.state.sign_requests.load(Ordering::SeqCst)
    }

    /// From now on, EC signatures are made again until r or s (raw, fixed
    /// width) starts with a zero byte.
    pub fn force_leading_zero(&self, on: bool) {
        self.state.leading_zero.store(on, Ordering::SeqCst);
    }

    /// The raw signature of the last sign request.
    pub fn last_raw_signature(&self) -> Option<Vec<u8>> {
        self.state.last_raw_signature.lock().unwrap().clone()
    }

    /// The next `n` authorized vault requests get 429 with `Retry-After: 0`.
    pub fn throttle_next(&self, n: usize) {
        self.state.throttle.store(n, Ordering::SeqCst);
    }

    /// Requests for this key get 403 (no role assignment on it).
    pub fn deny(&self, name: &str) {
        self.state.denied.lock().unwrap().insert(name.to_string());
    }
}

impl Drop for KeyVaultStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn generate(curve: Curve) -> PKey<Private> {
    let ec = |nid| {
        let group = EcGroup::from_curve_name(nid).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    };
    match curve {
        Curve::P256 => ec(Nid::X9_62_PRIME256V1),
        Curve::P384 => ec(Nid::SECP384R1),
        Curve::Rsa2048 => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
    }
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body,
    }
}

/// Key Vault's error envelope.
fn vault_error(status: u16, code: &str, message: &str) -> Reply {
    reply(status, json!({ "error": { "code": code, "message": message } }))
}

/// Entra ID's error shape.
fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    reply(
        status,
        json!({ "error": error, "error_description": description, "error_codes": [], "timestamp": now_secs() }),
    )
}

fn handle(state: &State, mut request: tiny_http::Request) {
    let method = request.method().to_string();
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let query = parse_form(query);
    let header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    let authorization = header("Authorization");
    let identity_header = header("X-IDENTITY-HEADER");
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let reply = match (method.as_str(), segments.as_slice()) {
        ("POST", [tenant, "oauth2", "v2.0", "token"]) => {
            token_endpoint(state, tenant, &parse_form(&String::from_utf8_lossy(&body)))
        }
        ("GET", ["msi", "token"]) => msi_endpoint(state, &query, identity_header.as_deref()),
        ("GET", ["keys", name]) => vault(state, &query, authorization.as_deref(), name, None, |key| {
            get_key(state, name, key)
        }),
        ("GET", ["keys", name, version]) => vault(
            state,
            &query,
            authorization.as_deref(),
            name,
            Some(version),
            |key| get_key(state, name, key),
        ),
        ("POST", ["keys", name, version, "sign"]) => vault(
            state,
            &query,
            authorization.as_deref(),
            name,
            Some(version),
            |key| sign(state, name, key, &body),
        ),
        _ => vault_error(404, "NotFound", &format!("no route for {method} {path}")),
    };
    let text = reply.body.to_string();
    let mut response = tiny_http::Response::from_data(text.into_bytes())
        .with_status_code(reply.status)
        .with_header(header_of("Content-Type", "application/json; charset=utf-8"));
    for (name, value) in &reply.headers {
        response.add_header(header_of(name, value));
    }
    let _ = request.respond(response);
}

fn header_of(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("header")
}

fn token_endpoint(state: &State, tenant: &str, form: &[(String, String)]) -> Reply {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let field = |name: &str| param(form, name);
    if tenant != state.tenant_id {
        return oauth_error(
            400,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if field("grant_type") != Some("client_credentials") {
        return oauth_error(
            400,
            "unsupported_grant_type",
            "AADSTS70003: unsupported grant type",
        );
    }
    if field("client_id") != Some(state.client_id.as_str()) {
        return oauth_error(
            400,
            "unauthorized_client",
            "AADSTS700016: Application with identifier was not found in the directory.",
        );
    }
    let scope = field("scope").unwrap_or_default();
    state.asked.lock().unwrap().push(scope.to_string());
    let Some(audience) = scope.strip_suffix("/.default") else {
        return oauth_error(
            400,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.",
        );
    };
    match (
        field("client_secret"),
        field("client_assertion_type"),
        field("client_assertion"),
    ) {
        (Some(secret), _, _) if secret == state.client_secret => {}
        (Some(secret), _, _) => {
            // Entra never echoes a secret; this stand-in does, on purpose, so
            // a test can prove the client scrubs what it shows.
            return oauth_error(
                401,
                "invalid_client",
                &format!("AADSTS7000215: Invalid client secret provided ({secret})."),
            );
        }
        (None, Some(JWT_BEARER), Some(assertion)) if assertion == state.federated_token => {}
        (None, Some(JWT_BEARER), Some(assertion)) => {
            return oauth_error(
                401,
                "invalid_client",
                &format!(
                    "AADSTS700211: No matching federated identity record found for presented assertion ({assertion})."
                ),
            );
        }
        _ => {
            return oauth_error(
                400,
                "invalid_client",
                "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
    }
    let token = issue(state, audience);
    reply(
        200,
        json!({ "token_type": "Bearer", "expires_in": EXPIRES_IN, "ext_expires_in": EXPIRES_IN, "access_token": token }),
    )
}

fn msi_endpoint(state: &State, query: &[(String, String)], identity_header: Option<&str>) -> Reply {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    if identity_header != Some(state.identity_header.as_str()) {
        return oauth_error(401, "invalid_request", "X-IDENTITY-HEADER is missing or wrong");
    }
    if param(query, "api-version") != Some(MSI_API_VERSION) {
        return oauth_error(400, "invalid_request", "api-version must be 2019-08-01");
    }
    let Some(resource) = param(query, "resource") else {
        return oauth_error(400, "invalid_request", "resource is required");
    };
    state.asked.lock().unwrap().push(resource.to_string());
    let token = issue(state, resource.trim_end_matches('/'));
    reply(
        200,
        json!({
            "access_token": token,
            "expires_on": (now_secs() + EXPIRES_IN).to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": state.client_id,
        }),
    )
}

/// The checks every vault request goes through, then `answer`.
fn vault(
    state: &State,
    query: &[(String, String)],
    authorization: Option<&str>,
    name: &str,
    version: Option<&str>,
    answer: impl FnOnce(&Key) -> Reply,
) -> Reply {
    let token = authorization.and_then(|a| a.strip_prefix("Bearer "));
    let audience = token.and_then(|t| state.tokens.lock().unwrap().get(t).cloned());
    if audience.as_deref() != Some(VAULT_RESOURCE) {
        let mut reply = vault_error(
            401,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoW token.",
        );
        reply.headers.push((
            "WWW-Authenticate",
            format!(
                "Bearer authorization=\"{}/{}\", resource=\"{VAULT_RESOURCE}\"",
                state.base, state.tenant_id
            ),
        ));
        return reply;
    }
    if param(query, "api-version") != Some(API_VERSION) {
        return vault_error(
            400,
            "BadParameter",
            "The api-version parameter is missing or not 7.4.",
        );
    }
    if state
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let mut reply = vault_error(429, "Throttled", "Rate limit exceeded.");
        reply.headers.push(("Retry-After", "0".into()));
        return reply;
    }
    let not_found = || {
        vault_error(
            404,
            "KeyNotFound",
            &format!("A key with (name/id) {name} was not found in this key vault."),
        )
    };
    let Some(key) = state.keys.get(name) else {
        return not_found();
    };
    if version.is_some_and(|v| v != key.version) {
        return not_found();
    }
    if state.denied.lock().unwrap().contains(name) {
        let mut reply = vault_error(
            403,
            "Forbidden",
            "Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/keys/sign/action'",
        );
        reply.body["error"]["innererror"] = json!({ "code": "ForbiddenByRbac" });
        return reply;
    }
    answer(key)
}

fn get_key(state: &State, name: &str, key: &Key) -> Reply {
    let kid = format!("{}/keys/{name}/{}", state.base, key.version);
    let jwk = match key.curve {
        Curve::Rsa2048 => {
            let rsa = key.pkey.rsa().unwrap();
            json!({
                "kid": kid, "kty": "RSA", "key_ops": ["sign", "verify"],
                "n": b64url(&rsa.n().to_vec()), "e": b64url(&rsa.e().to_vec()),
            })
        }
        curve => {
            let ec = key.pkey.ec_key().unwrap();
            let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
            let mut ctx = BigNumContext::new().unwrap();
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                .unwrap();
            let width = curve.width().unwrap() as i32;
            json!({
                "kid": kid, "kty": "EC", "key_ops": ["sign", "verify"],
                "crv": if curve == Curve::P256 { "P-256" } else { "P-384" },
                "x": b64url(&x.to_vec_padded(width).unwrap()), "y": b64url(&y.to_vec_padded(width).unwrap()),
            })
        }
    };
    let now = now_secs();
    reply(
        200,
        json!({
            "key": jwk,
            "attributes": {
                "enabled": true, "created": now, "updated": now,
                "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90,
            },
        }),
    )
}

fn sign(state: &State, name: &str, key: &Key, body: &[u8]) -> Reply {
    let request: Value = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return vault_error(400, "BadParameter", &format!("The request body is not JSON: {e}")),
    };
    let alg = request["alg"].as_str().unwrap_or_default();
    if alg != key.curve.algorithm() {
        return vault_error(
            400,
            "BadParameter",
            &format!(
                "Invalid algorithm {alg:?} for this key; it signs {}.",
                key.curve.algorithm()
            ),
        );
    }
    let digest = request["value"]
        .as_str()
        .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        .unwrap_or_default();
    if digest.len() != key.curve.digest_len() {
        return vault_error(
            400,
            "BadParameter",
            &format!("The digest for {alg} must be {} bytes.", key.curve.digest_len()),
        );
    }
    let raw = match key.curve.width() {
        Some(width) => {
            let ec = key.pkey.ec_key().unwrap();
            let mut tries = 0;
            loop {
                tries += 1;
                let signature = EcdsaSig::sign(&digest, &ec).unwrap();
                let r = signature.r().to_vec_padded(width as i32).unwrap();
                let s = signature.s().to_vec_padded(width as i32).unwrap();
                let wanted = !state.leading_zero.load(Ordering::SeqCst) || r[0] == 0 || s[0] == 0;
                if wanted || tries > 100_000 {
                    break [r, s].concat();
                }
            }
        }
        None => {
            let mut ctx = PkeyCtx::new(&key.pkey).unwrap();
            ctx.sign_init().unwrap();
            ctx.set_rsa_padding(Padding::PKCS1).unwrap();
            ctx.set_signature_md(Md::sha256()).unwrap();
            let mut signature = Vec::new();
            ctx.sign_to_vec(&digest, &mut signature).unwrap();
            signature
        }
    };
    state.sign_requests.fetch_add(1, Ordering::SeqCst);
    *state.last_raw_signature.lock().unwrap() = Some(raw.clone());
    reply(
        200,
        json!({ "kid": format!("{}/keys/{name}/{}", state.base, key.version), "value": b64url(&raw) }),
    )
}

fn issue(state: &State, audience: &str) -> String {
    let token = format!("kv-token-{}", random_hex(24));
    state
        .tokens
        .lock()
        .unwrap()
        .insert(token.clone(), audience.to_string());
    token
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    openssl::rand::rand_bytes(&mut buffer).unwrap();
    hex::encode(buffer)
}

fn guid() -> String {
    let hex = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}
