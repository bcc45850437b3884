//! A Docker registry token server (the "token" auth of distribution), in process.
//!
//! Implements <https://distribution.github.io/distribution/spec/auth/token/> and
//! the OAuth2 variant closely enough for real clients (skopeo, the project's own):
//!
//! - `GET /token?service=..&scope=repository:NAME:pull,push` (scope may repeat),
//!   with HTTP Basic auth of the configured user. Wrong credentials give 401; no
//!   credentials give an anonymous token that grants no actions at all.
//!   `offline_token=true` adds a refresh token to the answer.
//! - `POST /token` with a form body: `grant_type=password&username=..&password=..`
//!   or `grant_type=refresh_token&refresh_token=..` (the refresh token handed out
//!   is the fixed `test-refresh-token-<user>`), plus `service`, `scope`
//!   (space separated) and `access_type=offline` for a refresh token.
//!
//! - With [`TokenServer::accept_entra`] (an Azure Container Registry's token
//!   service): `POST /oauth2/exchange` with `grant_type=access_token`,
//!   `service`, `tenant` and an Entra `access_token` the given check accepts
//!   answers `{"refresh_token"}` (the user's), which `POST /oauth2/token`
//!   (ACR's realm, the same as `/token`) then takes.
//!
//! Tokens are ES256 JWTs signed by a P-256 leaf certificate issued by a test CA;
//! the CA is the registry's `rootcertbundle` and the JWT header's `x5c` carries the
//! chain `[leaf, ca]` (base64 std DER).

use super::form::{param, parse_form};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

/// How long an issued token is valid, in seconds.
pub const EXPIRES_IN: u64 = 300;

/// What the token server issued: one entry per token.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The authenticated user, or "" for an anonymous token.
    pub subject: String,
    /// `type:name:actions` of every granted access entry (empty actions are kept,
    /// e.g. `repository:foo:` for an anonymous request).
    pub access: Vec<String>,
}

struct State {
    user: String,
    password: String,
    service: String,
    issuer: String,
    signing_key: EcdsaKeyPair,
    rng: SystemRandom,
    /// base64 std DER of the leaf, then the CA.
    x5c: Vec<String>,
    issued: AtomicUsize,
    requests: AtomicUsize,
    log: Mutex<Vec<IssuedToken>>,
    entra: Mutex<Option<EntraCheck>>,
}

/// What ACR's exchange accepts: the tenant, and which Entra tokens.
struct EntraCheck {
    tenant: String,
    accepts: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

/// A running token server on `127.0.0.1:<free port>`; stopped on drop.
pub struct TokenServer {
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    port: u16,
    state: Arc<State>,
    root_cert_pem: String,
}

impl TokenServer {
    /// Starts a token server that authenticates `user`/`password` and issues
    /// tokens for `service` (the JWT `aud`) as `issuer` (the JWT `iss`).
    pub fn start(user: &str, password: &str, service: &str, issuer: &str) -> TokenServer {
        // The CA that the registry trusts (rootcertbundle).
        let ca_key = rcgen::KeyPair::generate().expect("token CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "onestream test token CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("token CA cert");

        // The leaf that signs the tokens (ECDSA P-256, i.e. ES256).
        let leaf_key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("token signing key");
        let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "onestream test token signer");
        leaf_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let ca_issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &ca_issuer)
            .expect("token signing cert");

        let rng = SystemRandom::new();
        let signing_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &leaf_key.serialize_der(), &rng)
                .expect("ring accepts the rcgen P-256 PKCS#8 key");

        let state = Arc::new(State {
            user: user.to_string(),
            password: password.to_string(),
            service: service.to_string(),
            issuer: issuer.to_string(),
            signing_key,
            rng,
            x5c: vec![
                STANDARD.encode(leaf_cert.der().as_ref()),
                STANDARD.encode(ca_cert.der().as_ref()),
            ],
            issued: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            entra: Mutex::new(None),
        });

        let server =
            Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("token server binds 127.0.0.1:0"));
        let port = server
            .server_addr()
            .to_ip()
            .expect("token server has an IP address")
            .port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let server = Arc::clone(&server);
            let stop = Arc::clone(&stop);
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name(format!("token-server-{port}"))
                .spawn(move || {
                    loop {
                        match server.recv() {
                            Ok(request) => handle(&state, request),
                            Err(_) if stop.load(Ordering::SeqCst) => break,
                            Err(_) => continue,
                        }
                    }
                })
                .expect("spawn token server thread")
        };

        TokenServer {
            server,
            stop,
            thread: Some(thread),
            port,
            state,
            root_cert_pem: ca_cert.pem(),
        }
    }

    /// `http://127.0.0.1:PORT/token`, the registry's `auth.token.realm`.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// PEM of the CA that issued the signing certificate (`rootcertbundle`).
    pub fn root_cert_pem(&self) -> &str {
        &self.root_cert_pem
    }

    /// How many tokens were issued (anonymous ones included).
    pub fn issued(&self) -> usize {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// How many requests reached the server (including refused ones).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Every token issued so far, oldest first.
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.state.log.lock().unwrap().clone()
    }

    /// Plays ACR's token service: `/oauth2/exchange` trades the Entra
    /// tokens `accepts` takes, from `tenant`, for the user's refresh token.
    pub fn accept_entra(&self, tenant: &str, accepts: impl Fn(&str) -> bool + Send + Sync + 'static) {
        *self.state.entra.lock().unwrap() = Some(EntraCheck {
            tenant: tenant.to_string(),
            accepts: Box::new(accepts),
        });
    }

    /// `http://127.0.0.1:PORT/oauth2/token`: ACR's realm.
    pub fn acr_realm(&self) -> String {
        format!("http://127.0.0.1:{}/oauth2/token", self.port)
    }

    /// The fixed refresh token that `POST /token` accepts for the user.
    pub fn refresh_token(&self) -> String {
        refresh_token_for(&self.state.user)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn refresh_token_for(user: &str) -> String {
    format!("test-refresh-token-{user}")
}

enum Identity {
    Anonymous,
    User,
}

fn handle(state: &State, mut request: tiny_http::Request) {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    if path == "/oauth2/exchange" {
        exchange(state, request);
        return;
    }
    if path != "/token" && path != "/oauth2/token" {
        respond(request, 404, json!({"errors": [{"code": "NOT_FOUND"}]}));
        return;
    }
    let (identity, scopes, offline) = match request.method() {
        tiny_http::Method::Get => {
            let params = parse_form(query);
            let identity = match basic_auth(&request) {
                None => Ok(Identity::Anonymous),
                Some((u, p)) if u == state.user && p == state.password => Ok(Identity::User),
                Some(_) => Err("invalid username or password"),
            };
            let scopes: Vec<String> = params
                .iter()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.clone())
                .collect();
            let offline = param(&params, "offline_token") == Some("true");
            (identity, scopes, offline)
        }
        tiny_http::Method::Post => {
            let mut body = String::new();
            if request.as_reader().read_to_string(&mut body).is_err() {
                respond(request, 400, json!({"error": "invalid_request"}));
                return;
            }
            let params = parse_form(&body);
            let identity = match param(&params, "grant_type") {
                Some("password") => {
                    if param(&params, "username") == Some(state.user.as_str())
                        && param(&params, "password") == Some(state.password.as_str())
                    {
                        Ok(Identity::User)
                    } else {
                        Err("invalid username or password")
                    }
                }
                Some("refresh_token") => {
                    if param(&params, "refresh_token") == Some(refresh_token_for(&state.user).as_str()) {
                        Ok(Identity::User)
                    } else {
                        Err("invalid refresh token")
                    }
                }
                _ => {
                    respond(request, 400, json!({"error": "unsupported_grant_type"}));
                    return;
                }
            };
            let scopes: Vec<String> = params
                .iter()
                .filter(|(k, _)| k == "scope")
                .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
                .filter(|s| !s.is_empty())
                .collect();
            let offline = param(&params, "access_type") == Some("offline");
            (identity, scopes, offline)
        }
        _ => {
            respond(request, 405, json!({"errors": [{"code": "UNSUPPORTED"}]}));
            return;
        }
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(message) => {
            let response = json_response(
                401,
                json!({"errors": [{"code": "UNAUTHORIZED", "message": message}]}),
            )
            .with_header(header("WWW-Authenticate", "Basic realm=\"test-token-server\""));
            let _ = request.respond(response);
            return;
        }
    };

    let (subject, access) = match identity {
        Identity::Anonymous => (String::new(), grant(&scopes, false)),
        Identity::User => (state.user.clone(), grant(&scopes, true)),
    };
    let token = sign_token(state, &subject, &access);
    let now = now_secs();
    let mut answer = json!({
        "token": token,
        "access_token": token,
        "expires_in": EXPIRES_IN,
        "issued_at": rfc3339(now),
    });
    if offline && !subject.is_empty() {
        answer["refresh_token"] = Value::String(refresh_token_for(&subject));
    }
    state.issued.fetch_add(1, Ordering::SeqCst);
    state.log.lock().unwrap().push(IssuedToken {
        subject,
        access: access
            .iter()
            .map(|a| {
                let actions: Vec<&str> = a["actions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                format!(
                    "{}:{}:{}",
                    a["type"].as_str().unwrap(),
                    a["name"].as_str().unwrap(),
                    actions.join(",")
                )
            })
            .collect(),
    });
    respond(request, 200, answer);
}

/// ACR's `POST /oauth2/exchange`: an Entra token for a refresh token.
fn exchange(state: &State, mut request: tiny_http::Request) {
    let mut body = String::new();
    if *request.method() != tiny_http::Method::Post || request.as_reader().read_to_string(&mut body).is_err()
    {
        respond(request, 400, json!({"errors": [{"code": "UNSUPPORTED"}]}));
        return;
    }
    let params = parse_form(&body);
    let refusal = match &*state.entra.lock().unwrap() {
        None => Some("this token server is not an ACR"),
        Some(_) if param(&params, "grant_type") != Some("access_token") => {
            Some("grant_type must be access_token")
        }
        Some(check) if param(&params, "tenant").is_some_and(|t| t != check.tenant) => Some("wrong tenant"),
        Some(check) if !param(&params, "access_token").is_some_and(|t| (check.accepts)(t)) => {
            Some("invalid access token")
        }
        Some(_) => None,
    };
    match refusal {
        Some(message) => respond(
            request,
            401,
            json!({"errors": [{"code": "UNAUTHORIZED", "message": message}]}),
        ),
        None => respond(
            request,
            200,
            json!({"refresh_token": refresh_token_for(&state.user)}),
        ),
    }
}

/// The `access` claim for the requested scopes: exactly the requested actions
/// when `authenticated`, none otherwise.
fn grant(scopes: &[String], authenticated: bool) -> Vec<Value> {
    let mut access = Vec::new();
    for scope in scopes {
        // type:name:actions, where the name may itself hold colons (host:port/repo).
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let actions: Vec<&str> = if authenticated {
            actions.split(',').filter(|a| !a.is_empty()).collect()
        } else {
            Vec::new()
        };
        // Strip a resource class such as "repository(plugin)".
        let kind = kind.split('(').next().unwrap_or(kind);
        access.push(json!({"type": kind, "name": name, "actions": actions}));
    }
    access
}

static JTI: AtomicUsize = AtomicUsize::new(0);

fn sign_token(state: &State, subject: &str, access: &[Value]) -> String {
    let now = now_secs();
    let header = json!({"typ": "JWT", "alg": "ES256", "x5c": state.x5c});
    let claims = json!({
        "iss": state.issuer,
        "sub": subject,
        "aud": state.service,
        "exp": now + EXPIRES_IN,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("test-{}-{}", now, JTI.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    // ring's FIXED signing gives r || s (64 bytes), the JWS encoding of ES256.
    let signature = state
        .signing_key
        .sign(&state.rng, signing_input.as_bytes())
        .expect("ES256 signing");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

fn basic_auth(request: &tiny_http::Request) -> Option<(String, String)> {
    let value = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))?
        .value
        .as_str()
        .to_string();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        // Some other scheme counts as wrong credentials, not as anonymous.
        return Some((String::new(), String::new()));
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn json_response(status: u16, body: Value) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_data(serde_json::to_vec(&body).unwrap())
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"))
}

fn respond(request: tiny_http::Request, status: u16, body: Value) {
    let _ = request.respond(json_response(status, body));
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Formats unix seconds as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}
