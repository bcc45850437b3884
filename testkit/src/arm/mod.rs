//! A local stand-in for Azure Resource Manager (and the Entra ID token
//! endpoint in front of it) that fronts local registries as Azure Container
//! Registries, in process, on `127.0.0.1:<free port>`. Written from
//! Microsoft's public REST spec (Microsoft.ContainerRegistry, api-version
//! [`API_VERSION`]: `Registries_List`, `Registries_Get`,
//! `Registries_ImportImage` and its examples) and ARM's long-running
//! operation conventions, and pinned by Microsoft's own Python SDK
//! (`azure-mgmt-containerregistry` over `azure-mgmt-core`'s `ARMPolling`,
//! `tests/fixtures/azure_sdk/arm_standin.py`, run by `tests/it/arm_standin.rs`).
//!
//! - `POST /{tenant}/oauth2/v2.0/token` (point `AZURE_AUTHORITY_HOST` at
//!   [`ArmStandIn::authority`]): `grant_type=client_credentials`, the
//!   configured `client_id` and `client_secret`, `scope={resource}/.default`.
//!   A wrong secret gets 401 `{"error":"invalid_client",…}` (its description
//!   repeats the secret sent, on purpose, as the Key Vault stand-in's does: a
//!   test can prove a client scrubs it). Tokens are opaque random strings the
//!   stand-in remembers with their audience.
//! - Every other request is ARM's. It needs `Authorization: Bearer <token>`
//!   with a token issued for `https://management.azure.com` (or the classic
//!   `https://management.core.windows.net`), else 401 with a
//!   `WWW-Authenticate: Bearer authorization_uri="…", error="invalid_token", …`
//!   challenge and `AuthenticationFailed` (no or malformed header),
//!   `InvalidAuthenticationToken` (a token it never issued) or
//!   `InvalidAuthenticationTokenAudience`. Then `api-version`: missing → 400
//!   `MissingApiVersionParameter`; not a date-shaped version → 400
//!   `InvalidApiVersionParameter`; a well-formed version other than
//!   [`API_VERSION`] → 400 `NoRegisteredProviderFound` (what ARM answers for a
//!   resource provider's type it has no such version of).
//! - `GET /subscriptions/{sub}/providers/Microsoft.ContainerRegistry/registries`
//!   (`Registries_List`): `{"value":[Registry…],"nextLink"?}`, paged when
//!   [`ArmConfig::page_size`] is set (`nextLink` absolute, with `$skipToken`).
//!   `GET …/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}`
//!   (`Registries_Get`). The Registry is the spec's model: `id`, `name`,
//!   `type`, `location`, `tags`, `sku` Premium, `properties` (`loginServer`
//!   = the registry's `127.0.0.1:PORT`, `provisioningState`, `policies`
//!   with `exportPolicy.status`, `publicNetworkAccess` — `Disabled` with
//!   exports, as ACR requires — …). Unknown subscription → 404
//!   `SubscriptionNotFound`; resource group → 404 `ResourceGroupNotFound`;
//!   registry → 404 `ResourceNotFound`. Path words and names match
//!   case-insensitively, as ARM's do.
//! - `POST …/registries/{name}/importImage` with `ImportImageParameters`.
//!   Checked at once: a `Content-Type` other than `application/json` → 415
//!   `UnsupportedMediaType`; a body that is not JSON → 400 `InvalidRequestContent`;
//!   `source.sourceImage` missing or not `repo`, `repo:tag` or
//!   `repo@sha256:…`, neither `source.resourceId` nor `source.registryUri`,
//!   `credentials` without `password`, a bad `targetTags` /
//!   `untaggedTargetRepositories` entry, both of them empty, or a `mode`
//!   other than `NoForce`/`Force` → 400 `InvalidParameters` (ACR's code for
//!   import parameters); a `resourceId` that names no registry of the
//!   subscription → 404 `ResourceNotFound`; a source registry of the
//!   stand-in whose export policy is disabled → 400 `ExportPolicyDisabled`
//!   (a name chosen here: ACR documents the refusal, not its code). Otherwise
//!   202 with `Location: {endpoint}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/locations/{location}/operationResults/operationStatuses/registries-{guid}?api-version=…`
//!   (the spec example's shape), `Retry-After` ([`ArmConfig::retry_after_secs`])
//!   and no body; `resourceId` wins when both it and `registryUri` are given.
//!   The copy then runs in a thread, as ACR's does server-side: from the
//!   source (the registry `resourceId` names, or any `registryUri`
//!   `host:port`; plain HTTP, with `credentials` as Basic auth or for a
//!   Bearer token from the registry's realm; a stand-in registry's own
//!   [`AcrEntry::credentials`] otherwise) to the target: every blob of every
//!   platform, each child manifest by digest before its index, then the
//!   exact top manifest bytes under each target tag, or by digest into each
//!   untagged repository. A target tag without `:tag` takes the source's tag
//!   (`latest` when the source is by digest). NOTHING attached is copied: no
//!   `sha256-….sig`/`.att` tags, no referrers — ACR import's documented
//!   behaviour, which a client must make up for.
//! - `GET` the `Location`: 202 (again with `Location` and `Retry-After`)
//!   while the copy runs and for the first [`ArmConfig::polls_before_done`]
//!   polls, then 200 with an empty body on success, or the failure as its
//!   status and ARM error body (without `Retry-After`, which Azure's
//!   clients would take as "try again"): exactly what `ARMPolling`'s
//!   Location algorithm reads. The operation's failures: the source image
//!   missing → 404 `ManifestUnknown` naming it; more than [`MANIFEST_LIMIT`]
//!   manifests (the top one plus every index entry, as ACR counts them) →
//!   400 `TooManyManifests`; `NoForce` with a target tag that names another
//!   digest → 409 `Conflict`, before anything is copied (a tag already
//!   naming the same digest is no conflict: a re-run is a no-op); a source
//!   or target that fails or refuses → 400 `InvalidParameters`
//!   (`Error copying …`, as ACR reports copy failures). Codes other than
//!   ARM's documented ones (`TooManyManifests`, `ManifestUnknown`,
//!   `ExportPolicyDisabled`) are this stand-in's choice.
//!
//! Throttling ([`Fault::Throttle`], [`Fault::ThrottlePoll`]) answers 429
//! with `Retry-After` and ARM's `SubscriptionRequestsThrottled`. Every answer
//! carries `x-ms-request-id` and `x-ms-correlation-request-id`; every error
//! body is ARM's `{"error":{"code","message"}}` (Entra's own shape at the
//! token endpoint).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::form::{param, parse_form};
use super::images::sha256_digest;
use super::push::{self, Response};

/// The token audience (resource) of public Azure's Resource Manager.
pub const ARM_RESOURCE: &str = "https://management.azure.com";
/// The one Microsoft.ContainerRegistry api-version the stand-in speaks.
pub const API_VERSION: &str = "2025-11-01";
/// Audiences ARM accepts in a token.
const AUDIENCES: [&str; 2] = [ARM_RESOURCE, "https://management.core.windows.net"];
/// What the token endpoint says a token lives, in seconds.
pub const EXPIRES_IN: u64 = 3599;
/// ACR imports an image of at most this many manifests.
pub const MANIFEST_LIMIT: usize = 50;
/// [`AcrEntry::new`]'s resource group.
pub const RESOURCE_GROUP: &str = "rg-onestream";
/// [`AcrEntry::new`]'s location.
pub const LOCATION: &str = "westeurope";
/// Where the Azure SDK for Python venv is, when not at its default
/// (`target/azure-sdk-venv` under the workspace; `scripts/setup` makes it).
pub const SDK_VENV_ENV: &str = "ONESTREAM_AZURE_SDK_VENV";

const PROVIDER: &str = "Microsoft.ContainerRegistry";
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// One registry the stand-in fronts as an ACR.
#[derive(Clone, Debug)]
pub struct AcrEntry {
    pub name: String,
    pub resource_group: String,
    /// `127.0.0.1:PORT` of a plain-HTTP registry: its `loginServer`.
    pub host: String,
    /// `properties.policies.exportPolicy.status` is `disabled`: nothing is
    /// imported from it.
    pub export_disabled: bool,
    pub location: String,
    /// How the stand-in itself (playing ACR's internal access) reads and
    /// writes this registry, when it needs auth (a token-auth registry's
    /// user); reported as `adminUserEnabled`.
    pub credentials: Option<(String, String)>,
}

impl AcrEntry {
    /// Resource group [`RESOURCE_GROUP`], location [`LOCATION`], exports
    /// enabled, no credentials.
    pub fn new(name: &str, host: &str) -> AcrEntry {
        AcrEntry {
            name: name.to_string(),
            resource_group: RESOURCE_GROUP.to_string(),
            host: host.to_string(),
            export_disabled: false,
            location: LOCATION.to_string(),
            credentials: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ArmConfig {
    pub subscription: String,
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    pub registries: Vec<AcrEntry>,
    /// Polls answered 202 before an import answers 200 (or its failure).
    pub polls_before_done: u32,
    /// `Retry-After` of every 202 (the accepted import and its polls).
    pub retry_after_secs: u64,
    /// Registries per `Registries_List` page; 0 for one page.
    pub page_size: usize,
}

impl ArmConfig {
    /// Fixed test ids, `polls_before_done` 1, `Retry-After: 0`, one page.
    pub fn new(registries: Vec<AcrEntry>) -> ArmConfig {
        ArmConfig {
            subscription: "5e7b3c1a-0d2f-4c8e-9a6b-0e5a1f2c3d4e".into(),
            tenant: "9c2d4e6f-1a3b-4c5d-8e7f-0a1b2c3d4e5f".into(),
            client_id: "3f8a1b2c-4d5e-4f60-9a7b-8c9d0e1f2a3b".into(),
            client_secret: "arm-standin~secret.Q8x7Vb2".into(),
            registries,
            polls_before_done: 1,
            retry_after_secs: 0,
            page_size: 0,
        }
    }
}

/// What goes wrong on purpose, once each, in the order injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next importImage POST answers 429 with this `Retry-After`.
    Throttle { retry_after_secs: u64 },
    /// The next accepted import copies the blobs but no manifest, and its
    /// `Location` poll answers an ARM error.
    FailMidway,
    /// The next `Location` poll answers 429 `Retry-After: 1` (not counted
    /// as a poll).
    ThrottlePoll,
}

#[derive(Clone, Debug)]
struct Failure {
    status: u16,
    code: &'static str,
    message: String,
}

fn failure(status: u16, code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        code,
        message: message.into(),
    }
}

fn copy_error(message: impl std::fmt::Display) -> Failure {
    failure(400, "InvalidParameters", format!("Error copying {message}"))
}

struct Operation {
    outcome: Option<Result<(), Failure>>,
    answered_202: u32,
    location: String,
}

struct State {
    base: String,
    config: ArmConfig,
    /// Issued token → its audience.
    tokens: Mutex<HashMap<String, String>>,
    log: Mutex<Vec<String>>,
    imports: Mutex<Vec<Value>>,
    faults: Mutex<Vec<Fault>>,
    operations: Mutex<HashMap<String, Operation>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    token_requests: AtomicUsize,
}

impl State {
    fn take_fault(&self, wanted: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap();
        let at = faults.iter().position(wanted)?;
        Some(faults.remove(at))
    }
}

/// A running stand-in; stopped (and its imports finished) on drop.
pub struct ArmStandIn {
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl ArmStandIn {
    pub fn start(config: ArmConfig) -> ArmStandIn {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind the ARM stand-in"));
        let port = server.server_addr().to_ip().expect("ip listener").port();
        let state = Arc::new(State {
            base: format!("http://127.0.0.1:{port}"),
            config,
            tokens: Mutex::default(),
            log: Mutex::default(),
            imports: Mutex::default(),
            faults: Mutex::default(),
            operations: Mutex::default(),
            workers: Mutex::default(),
            token_requests: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, state, stop) = (server.clone(), state.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("arm-standin-{port}"))
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let Ok(request) = server.recv() else { return };
                        handle(&state, request);
                    }
                })
                .expect("spawn the ARM stand-in")
        };
        ArmStandIn {
            state,
            stop,
            server,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`: `--arm-endpoint`, the SDK's `base_url`.
    pub fn endpoint(&self) -> String {
        self.state.base.clone()
    }

    /// `http://127.0.0.1:PORT` too, for `AZURE_AUTHORITY_HOST`.
    pub fn authority(&self) -> String {
        self.state.base.clone()
    }

    pub fn config(&self) -> &ArmConfig {
        &self.state.config
    }

    /// `AZURE_AUTHORITY_HOST`, `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_CLIENT_SECRET`, `AZURE_SUBSCRIPTION_ID`.
    pub fn env(&self) -> Vec<(String, String)> {
        let config = &self.state.config;
        [
            ("AZURE_AUTHORITY_HOST", self.authority()),
            ("AZURE_TENANT_ID", config.tenant.clone()),
            ("AZURE_CLIENT_ID", config.client_id.clone()),
            ("AZURE_CLIENT_SECRET", config.client_secret.clone()),
            ("AZURE_SUBSCRIPTION_ID", config.subscription.clone()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }

    pub fn inject(&self, fault: Fault) {
        self.state.faults.lock().unwrap().push(fault);
    }

    /// Each accepted importImage, in order: `{"registry": NAME, "body": …}`
    /// with the body as received.
    pub fn imports(&self) -> Vec<Value> {
        self.state.imports.lock().unwrap().clone()
    }

    /// `METHOD /path?query -> STATUS` of every request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }

    /// Requests at the token endpoint, answered or not.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// A token for `audience`, as if fetched elsewhere (the Azure CLI).
    pub fn issue_token(&self, audience: &str) -> String {
        issue(&self.state, audience)
    }

    /// Waits until every accepted import's copy has ended (its next poll
    /// after `polls_before_done` then answers its outcome); panics after
    /// `timeout`.
    pub fn wait_for_operations(&self, timeout: std::time::Duration) {
        let started = std::time::Instant::now();
        loop {
            let running = self
                .state
                .operations
                .lock()
                .unwrap()
                .values()
                .filter(|o| o.outcome.is_none())
                .count();
            if running == 0 {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "{running} imports still running after {timeout:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}`.
    pub fn registry_id(&self, name: &str) -> String {
        let entry = self
            .state
            .config
            .registries
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("the ARM stand-in fronts no registry {name}"));
        resource_id(&self.state.config.subscription, entry)
    }
}

impl Drop for ArmStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let workers = std::mem::take(&mut *self.state.workers.lock().unwrap());
        for worker in workers {
            let _ = worker.join();
        }
    }
}

/// The Azure SDK for Python's interpreter: `bin/python` of the venv
/// `scripts/setup` makes (`$ONESTREAM_AZURE_SDK_VENV`, else
/// `target/azure-sdk-venv`). Fails, naming the command, when it is missing.
pub fn azure_sdk_python() -> PathBuf {
    let venv = std::env::var_os(SDK_VENV_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| super::bins::workspace_root().join("target/azure-sdk-venv"));
    let python = venv.join("bin/python");
    let imports = Command::new(&python)
        .args([
            "-c",
            "import azure.mgmt.containerregistry, azure.mgmt.core, azure.core",
        ])
        .output();
    let ready = imports.as_ref().is_ok_and(|output| output.status.success());
    assert!(
        ready,
        "the Azure SDK for Python is not installed in {} ({SDK_VENV_ENV} overrides where): \
         run scripts/setup (it makes the venv with pinned azure-mgmt-containerregistry); {}",
        venv.display(),
        match &imports {
            Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        }
    );
    python
}

/// `tests/fixtures/azure_sdk/arm_standin.py`.
pub fn azure_sdk_script() -> PathBuf {
    super::bins::workspace_root().join("tests/fixtures/azure_sdk/arm_standin.py")
}

fn resource_id(subscription: &str, entry: &AcrEntry) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{}/providers/{PROVIDER}/registries/{}",
        entry.resource_group, entry.name
    )
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    /// `None`: an empty body.
    body: Option<Value>,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: Some(body),
    }
}

fn empty(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: None,
    }
}

/// ARM's error envelope.
fn arm_error(status: u16, code: &str, message: impl Into<String>) -> Reply {
    reply(
        status,
        json!({ "error": { "code": code, "message": message.into() } }),
    )
}

impl From<Failure> for Reply {
    fn from(failure: Failure) -> Reply {
        arm_error(failure.status, failure.code, failure.message)
    }
}

/// Entra ID's error shape.
fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    reply(
        status,
        json!({
            "error": error,
            "error_description": description,
            "error_codes": [],
            "timestamp": now_secs(),
            "trace_id": guid(),
            "correlation_id": guid(),
        }),
    )
}

fn throttled(kind: &str, subscription: &str, retry_after_secs: u64) -> Reply {
    let mut reply = arm_error(
        429,
        "SubscriptionRequestsThrottled",
        format!(
            "Number of '{kind}' requests for subscription '{subscription}' exceeded. \
             Please try again after '{retry_after_secs}' seconds after the time specified in the 'Retry-After' header."
        ),
    );
    reply.headers.push(("Retry-After", retry_after_secs.to_string()));
    reply
        .headers
        .push(("x-ms-ratelimit-remaining-subscription-writes", "0".into()));
    reply
}

fn handle(state: &Arc<State>, mut request: tiny_http::Request) {
    let method = request.method().to_string();
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let query = parse_form(query);
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_string());
    let content_type = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Content-Type"))
        .map(|h| h.value.as_str().to_string());
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let reply = route(
        state,
        &method,
        path,
        &query,
        authorization.as_deref(),
        content_type.as_deref(),
        &body,
    );
    state
        .log
        .lock()
        .unwrap()
        .push(format!("{method} {url} -> {}", reply.status));
    let bytes = reply.body.as_ref().map(Value::to_string).unwrap_or_default();
    let mut response = tiny_http::Response::from_data(bytes.into_bytes())
        .with_status_code(reply.status)
        .with_header(header_of("x-ms-request-id", &guid()))
        .with_header(header_of("x-ms-correlation-request-id", &guid()));
    if reply.body.is_some() {
        response.add_header(header_of("Content-Type", "application/json; charset=utf-8"));
    }
    for (name, value) in &reply.headers {
        response.add_header(header_of(name, value));
    }
    let _ = request.respond(response);
}

fn header_of(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("header")
}

fn route(
    state: &Arc<State>,
    method: &str,
    path: &str,
    query: &[(String, String)],
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ("POST", [tenant, "oauth2", "v2.0", "token"]) = (method, segments.as_slice()) {
        return token_endpoint(state, tenant, &parse_form(&String::from_utf8_lossy(body)));
    }
    if let Err(refused) = authenticate(state, authorization) {
        return refused;
    }
    if let Err(refused) = check_api_version(state, query) {
        return refused;
    }
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let result = match (method, lower.as_slice()) {
        (
            "GET",
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.containerregistry",
                "registries",
            ],
        ) => list(state, segments[1], query),
        (
            "GET",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.containerregistry",
                "registries",
                _,
            ],
        ) => find_registry(state, segments[1], segments[3], segments[7])
            .map(|entry| reply(200, registry_json(state, entry))),
        (
            "POST",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.containerregistry",
                "registries",
                _,
                "importimage",
            ],
        ) => find_registry(state, segments[1], segments[3], segments[7])
            .and_then(|entry| import(state, entry, content_type, body)),
        (
            "GET",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.containerregistry",
                "locations",
                _,
                "operationresults",
                "operationstatuses",
                _,
            ],
        ) => check_subscription(state, segments[1]).map(|()| poll(state, segments[10])),
        _ => Err(arm_error(
            404,
            "NotFound",
            format!("The ARM stand-in has no route for {method} {path}."),
        )),
    };
    result.unwrap_or_else(|refused| refused)
}

fn token_endpoint(state: &State, tenant: &str, form: &[(String, String)]) -> Reply {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let config = &state.config;
    let field = |name: &str| param(form, name);
    if !tenant.eq_ignore_ascii_case(&config.tenant) {
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
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    let client_id = field("client_id").unwrap_or_default();
    if client_id != config.client_id {
        return oauth_error(
            400,
            "unauthorized_client",
            &format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    }
    match field("client_secret") {
        Some(secret) if secret == config.client_secret => {}
        Some(secret) => {
            return oauth_error(
                401,
                "invalid_client",
                &format!("AADSTS7000215: Invalid client secret provided ({secret})."),
            );
        }
        None => {
            return oauth_error(
                400,
                "invalid_client",
                "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
    }
    let scope = field("scope").unwrap_or_default();
    let Some(audience) = scope.strip_suffix("/.default").filter(|a| !a.contains(' ')) else {
        return oauth_error(
            400,
            "invalid_scope",
            &format!(
                "AADSTS1002012: The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    let token = issue(state, audience.trim_end_matches('/'));
    reply(
        200,
        json!({ "token_type": "Bearer", "expires_in": EXPIRES_IN, "ext_expires_in": EXPIRES_IN, "access_token": token }),
    )
}

fn authenticate(state: &State, authorization: Option<&str>) -> Result<(), Reply> {
    let refuse = |code: &str, message: &str, description: &str| {
        let mut reply = arm_error(401, code, message);
        reply.headers.push((
            "WWW-Authenticate",
            format!(
                "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", error_description=\"{description}\"",
                state.base, state.config.tenant
            ),
        ));
        reply
    };
    let Some(authorization) = authorization else {
        return Err(refuse(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
            "The authentication failed because of missing 'Authorization' header.",
        ));
    };
    let token = match authorization.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("Bearer") && !token.trim().is_empty() => {
            token.trim()
        }
        _ => {
            return Err(refuse(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is provided in an invalid format.",
                "The authentication failed because of an invalid 'Authorization' header.",
            ));
        }
    };
    match state.tokens.lock().unwrap().get(token) {
        None => Err(refuse(
            "InvalidAuthenticationToken",
            "The access token is invalid.",
            "The access token is invalid.",
        )),
        Some(audience) if !AUDIENCES.contains(&audience.as_str()) => Err(refuse(
            "InvalidAuthenticationTokenAudience",
            &format!(
                "The access token has been obtained for wrong audience or resource '{audience}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'."
            ),
            "The access token has been obtained for wrong audience or resource.",
        )),
        Some(_) => Ok(()),
    }
}

fn check_api_version(state: &State, query: &[(String, String)]) -> Result<(), Reply> {
    match param(query, "api-version") {
        Some(API_VERSION) => Ok(()),
        None | Some("") => Err(arm_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(version) if date_shaped(version) => {
            let mut locations: Vec<&str> = state
                .config
                .registries
                .iter()
                .map(|r| r.location.as_str())
                .collect();
            locations.sort_unstable();
            locations.dedup();
            let location = locations.first().copied().unwrap_or(LOCATION);
            Err(arm_error(
                400,
                "NoRegisteredProviderFound",
                format!(
                    "No registered resource provider found for location '{location}' and API version '{version}' for type 'registries'. The supported api-versions are '{API_VERSION}'. The supported locations are '{}'.",
                    locations.join(", ")
                ),
            ))
        }
        Some(version) => Err(arm_error(
            400,
            "InvalidApiVersionParameter",
            format!("The api-version '{version}' is invalid. The supported versions are '{API_VERSION}'."),
        )),
    }
}

/// `YYYY-MM-DD`, optionally `-preview` (or another suffix).
fn date_shaped(version: &str) -> bool {
    let bytes = version.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    bytes.len() >= 10
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && (bytes.len() == 10
            || (bytes[10] == b'-' && bytes.len() > 11 && bytes[11..].iter().all(u8::is_ascii_alphanumeric)))
}

fn check_subscription(state: &State, subscription: &str) -> Result<(), Reply> {
    if subscription.eq_ignore_ascii_case(&state.config.subscription) {
        Ok(())
    } else {
        Err(arm_error(
            404,
            "SubscriptionNotFound",
            format!("The subscription '{subscription}' could not be found."),
        ))
    }
}

fn find_registry<'a>(
    state: &'a State,
    subscription: &str,
    group: &str,
    name: &str,
) -> Result<&'a AcrEntry, Reply> {
    check_subscription(state, subscription)?;
    let registries = &state.config.registries;
    if !registries
        .iter()
        .any(|r| r.resource_group.eq_ignore_ascii_case(group))
    {
        return Err(arm_error(
            404,
            "ResourceGroupNotFound",
            format!("Resource group '{group}' could not be found."),
        ));
    }
    registries
        .iter()
        .find(|r| r.resource_group.eq_ignore_ascii_case(group) && r.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            arm_error(
                404,
                "ResourceNotFound",
                format!(
                    "The Resource '{PROVIDER}/registries/{name}' under resource group '{group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
                ),
            )
        })
}

fn list(state: &State, subscription: &str, query: &[(String, String)]) -> Result<Reply, Reply> {
    check_subscription(state, subscription)?;
    let all = &state.config.registries;
    let skip = match param(query, "$skipToken") {
        None => 0,
        Some(token) => token.parse::<usize>().map_err(|_| {
            arm_error(
                400,
                "InvalidSkipToken",
                format!("The skip token '{token}' is not valid."),
            )
        })?,
    };
    let page = if state.config.page_size == 0 {
        all.len()
    } else {
        state.config.page_size
    };
    let value: Vec<Value> = all
        .iter()
        .skip(skip)
        .take(page)
        .map(|entry| registry_json(state, entry))
        .collect();
    let mut body = json!({ "value": value });
    if skip + page < all.len() {
        body["nextLink"] = json!(format!(
            "{}/subscriptions/{}/providers/{PROVIDER}/registries?api-version={API_VERSION}&%24skipToken={}",
            state.base,
            state.config.subscription,
            skip + page
        ));
    }
    Ok(reply(200, body))
}

/// The spec's Registry model (as the RegistryGet example has it).
fn registry_json(state: &State, entry: &AcrEntry) -> Value {
    let export = if entry.export_disabled {
        "disabled"
    } else {
        "enabled"
    };
    json!({
        "id": resource_id(&state.config.subscription, entry),
        "name": entry.name,
        "type": format!("{PROVIDER}/registries"),
        "location": entry.location,
        "tags": {},
        "sku": { "name": "Premium", "tier": "Premium" },
        "properties": {
            "loginServer": entry.host,
            "creationDate": "2024-05-01T08:00:00.0000000Z",
            "provisioningState": "Succeeded",
            "adminUserEnabled": entry.credentials.is_some(),
            "networkRuleSet": { "defaultAction": if entry.export_disabled { "Deny" } else { "Allow" }, "ipRules": [] },
            "policies": {
                "quarantinePolicy": { "status": "disabled" },
                "trustPolicy": { "type": "Notary", "status": "disabled" },
                "retentionPolicy": { "days": 7, "lastUpdatedTime": "2024-05-01T08:00:00.0000000+00:00", "status": "disabled" },
                "exportPolicy": { "status": export },
                "azureADAuthenticationAsArmPolicy": { "status": "enabled" },
            },
            "encryption": { "status": "disabled" },
            "status": null,
            "dataEndpointEnabled": false,
            "dataEndpointHostNames": [],
            "privateEndpointConnections": [],
            "publicNetworkAccess": if entry.export_disabled { "Disabled" } else { "Enabled" },
            "networkRuleBypassOptions": "AzureServices",
            "networkRuleBypassAllowedForTasks": false,
            "zoneRedundancy": "Disabled",
            "anonymousPullEnabled": false,
            "roleAssignmentMode": "LegacyRegistryPermissions",
        },
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Reference {
    Tag(String),
    Digest(String),
}

impl Reference {
    fn as_str(&self) -> &str {
        match self {
            Reference::Tag(tag) | Reference::Digest(tag) => tag,
        }
    }
}

/// `repo`, `repo:tag` or `repo@sha256:…`.
fn parse_image(image: &str) -> Result<(String, Reference), String> {
    let (repo, reference) = if let Some((repo, digest)) = image.split_once('@') {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!("'{digest}' is not a sha256 digest"));
        }
        (repo, Reference::Digest(digest.to_string()))
    } else {
        match image.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Reference::Tag(valid_tag(tag)?.to_string())),
            _ => (image, Reference::Tag("latest".into())),
        }
    };
    Ok((valid_repository(repo)?.to_string(), reference))
}

/// Distribution's repository grammar: `/`-separated lower-case components.
fn valid_repository(repo: &str) -> Result<&str, String> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || b"._-".contains(&x))
    };
    if repo.len() <= 256 && repo.split('/').all(component_ok) {
        Ok(repo)
    } else {
        Err(format!("'{repo}' is not a valid repository name"))
    }
}

fn valid_tag(tag: &str) -> Result<&str, String> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || b"_.-".contains(&x));
    if ok {
        Ok(tag)
    } else {
        Err(format!("'{tag}' is not a valid tag"))
    }
}

fn invalid(message: impl Into<String>) -> Reply {
    arm_error(400, "InvalidParameters", message)
}

/// A registry resource id → (subscription, group, name).
fn parse_resource_id(id: &str) -> Option<(&str, &str, &str)> {
    let segments: Vec<&str> = id.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        [s, subscription, g, group, p, provider, r, name]
            if s.eq_ignore_ascii_case("subscriptions")
                && g.eq_ignore_ascii_case("resourceGroups")
                && p.eq_ignore_ascii_case("providers")
                && provider.eq_ignore_ascii_case(PROVIDER)
                && r.eq_ignore_ascii_case("registries") =>
        {
            Some((subscription, group, name))
        }
        _ => None,
    }
}

fn string_list(body: &Value, field: &str) -> Result<Vec<String>, Reply> {
    match &body[field] {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("Every entry of '{field}' must be a string.")))
            })
            .collect(),
        _ => Err(invalid(format!("'{field}' must be an array of strings."))),
    }
}

fn import(
    state: &Arc<State>,
    target: &AcrEntry,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Reply, Reply> {
    let config = &state.config;
    if let Some(Fault::Throttle { retry_after_secs }) =
        state.take_fault(|f| matches!(f, Fault::Throttle { .. }))
    {
        return Err(throttled("write", &config.subscription, retry_after_secs));
    }
    let media_type = content_type
        .and_then(|t| t.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(arm_error(
            415,
            "UnsupportedMediaType",
            format!(
                "The content media type '{media_type}' is not supported. Only 'application/json' is supported."
            ),
        ));
    }
    let parameters: Value = serde_json::from_slice(body).map_err(|e| {
        arm_error(
            400,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{e}'."),
        )
    })?;
    let source = &parameters["source"];
    if !source.is_object() {
        return Err(invalid("The parameter 'source' is required."));
    }
    let source_image = source["sourceImage"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("The parameter 'source.sourceImage' is required."))?;
    let (source_repo, reference) =
        parse_image(source_image).map_err(|e| invalid(format!("Invalid 'source.sourceImage': {e}.")))?;
    let mode = match parameters["mode"].as_str() {
        None => "NoForce",
        Some(mode) if mode.eq_ignore_ascii_case("NoForce") => "NoForce",
        Some(mode) if mode.eq_ignore_ascii_case("Force") => "Force",
        Some(mode) => {
            return Err(invalid(format!(
                "Invalid 'mode' '{mode}': expected 'NoForce' or 'Force'."
            )));
        }
    };
    let credentials = match &source["credentials"] {
        Value::Null => None,
        given => {
            let password = given["password"]
                .as_str()
                .ok_or_else(|| invalid("The parameter 'source.credentials.password' is required."))?;
            let username = given["username"].as_str().unwrap_or_default();
            Some((username.to_string(), password.to_string()))
        }
    };
    let default_tag = match &reference {
        Reference::Tag(tag) => tag.clone(),
        Reference::Digest(_) => "latest".to_string(),
    };
    let mut tags = Vec::new();
    for entry in string_list(&parameters, "targetTags")? {
        let (repo, tag) = match entry.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag.to_string()),
            _ => (entry.as_str(), default_tag.clone()),
        };
        let bad = |e: String| invalid(format!("Invalid 'targetTags' entry '{entry}': {e}."));
        valid_repository(repo).map_err(bad)?;
        valid_tag(&tag).map_err(bad)?;
        tags.push((repo.to_string(), tag));
    }
    let untagged = string_list(&parameters, "untaggedTargetRepositories")?;
    for repo in &untagged {
        valid_repository(repo)
            .map_err(|e| invalid(format!("Invalid 'untaggedTargetRepositories' entry: {e}.")))?;
    }
    if tags.is_empty() && untagged.is_empty() {
        return Err(invalid(
            "At least one of 'targetTags' or 'untaggedTargetRepositories' must be given.",
        ));
    }

    // Where from.
    let (source_host, source_entry) = match (source["resourceId"].as_str(), source["registryUri"].as_str()) {
        (Some(id), _) => {
            let (subscription, group, name) = parse_resource_id(id).ok_or_else(|| {
                invalid(format!(
                    "Invalid 'source.resourceId' '{id}': not a {PROVIDER}/registries resource id."
                ))
            })?;
            let entry = config
                .registries
                .iter()
                .find(|r| {
                    subscription.eq_ignore_ascii_case(&config.subscription)
                        && r.resource_group.eq_ignore_ascii_case(group)
                        && r.name.eq_ignore_ascii_case(name)
                })
                .ok_or_else(|| {
                    arm_error(
                        404,
                        "ResourceNotFound",
                        format!("The source registry resource '{id}' was not found."),
                    )
                })?;
            (entry.host.clone(), Some(entry))
        }
        (None, Some(uri)) if !uri.trim().is_empty() => {
            let host = uri
                .trim()
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let entry = config
                .registries
                .iter()
                .find(|r| r.host.eq_ignore_ascii_case(host));
            (host.to_string(), entry)
        }
        _ => {
            return Err(invalid(
                "One of 'source.resourceId' or 'source.registryUri' is required.",
            ));
        }
    };
    if let Some(entry) = source_entry.filter(|e| e.export_disabled) {
        return Err(arm_error(
            400,
            "ExportPolicyDisabled",
            format!(
                "Import of artifacts from registry '{}' is not allowed: its export policy is disabled (properties.policies.exportPolicy.status).",
                entry.name
            ),
        ));
    }

    // Accepted.
    let id = format!("registries-{}", guid());
    let location = format!(
        "{}/subscriptions/{}/resourceGroups/{}/providers/{PROVIDER}/locations/{}/operationResults/operationStatuses/{id}?api-version={API_VERSION}",
        state.base, config.subscription, target.resource_group, target.location
    );
    state
        .imports
        .lock()
        .unwrap()
        .push(json!({ "registry": target.name, "body": parameters }));
    state.operations.lock().unwrap().insert(
        id.clone(),
        Operation {
            outcome: None,
            answered_202: 0,
            location: location.clone(),
        },
    );
    let job = Job {
        source: RegistryClient::new(
            &source_host,
            credentials.or_else(|| source_entry.and_then(|e| e.credentials.clone())),
        ),
        source_repo,
        reference,
        target: RegistryClient::new(&target.host, target.credentials.clone()),
        tags,
        untagged,
        force: mode == "Force",
        fail_midway: state.take_fault(|f| *f == Fault::FailMidway).is_some(),
    };
    let worker = {
        let (state, id) = (Arc::clone(state), id.clone());
        std::thread::spawn(move || {
            let outcome = job.run();
            if let Some(operation) = state.operations.lock().unwrap().get_mut(&id) {
                operation.outcome = Some(outcome);
            }
        })
    };
    state.workers.lock().unwrap().push(worker);
    let mut accepted = empty(202);
    accepted.headers.push(("Location", location));
    accepted
        .headers
        .push(("Retry-After", config.retry_after_secs.to_string()));
    Ok(accepted)
}

fn poll(state: &State, id: &str) -> Reply {
    if state.take_fault(|f| *f == Fault::ThrottlePoll).is_some() {
        return throttled("read", &state.config.subscription, 1);
    }
    let mut operations = state.operations.lock().unwrap();
    let Some(operation) = operations.get_mut(id) else {
        return arm_error(
            404,
            "OperationNotFound",
            format!("The operation '{id}' could not be found."),
        );
    };
    let finished = operation.outcome.is_some() && operation.answered_202 >= state.config.polls_before_done;
    if !finished {
        operation.answered_202 += 1;
        let mut running = empty(202);
        running.headers.push(("Location", operation.location.clone()));
        running
            .headers
            .push(("Retry-After", state.config.retry_after_secs.to_string()));
        return running;
    }
    match operation.outcome.clone().expect("finished") {
        Ok(()) => empty(200),
        Err(failure) => failure.into(),
    }
}

fn issue(state: &State, audience: &str) -> String {
    let token = format!("arm-token-{}", random_hex(24));
    state
        .tokens
        .lock()
        .unwrap()
        .insert(token.clone(), audience.to_string());
    token
}

/// HTTP to a plain-HTTP registry as a distribution client: on 401, the
/// challenge answered (Basic with the credentials, or a Bearer token from
/// the realm) and the request sent again.
struct RegistryClient {
    host: String,
    credentials: Option<(String, String)>,
    /// The last `Authorization` that worked, tried first.
    authorization: Mutex<Option<String>>,
}

impl RegistryClient {
    fn new(host: &str, credentials: Option<(String, String)>) -> RegistryClient {
        RegistryClient {
            host: host.to_string(),
            credentials,
            authorization: Mutex::new(None),
        }
    }

    fn send(
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

/// One manifest of the image, children first.
struct Node {
    digest: String,
    media_type: String,
    bytes: Vec<u8>,
    children: Vec<Node>,
}

impl Node {
    /// Config and layer digests of every image manifest below (and at) this one.
    fn blobs(&self, into: &mut Vec<String>) {
        for child in &self.children {
            child.blobs(into);
        }
        let manifest: Value = serde_json::from_slice(&self.bytes).unwrap_or(Value::Null);
        let config = manifest["config"]["digest"].as_str();
        let layers = manifest["layers"].as_array().into_iter().flatten();
        for digest in config
            .into_iter()
            .chain(layers.filter_map(|l| l["digest"].as_str()))
        {
            if !into.iter().any(|d| d == digest) {
                into.push(digest.to_string());
            }
        }
    }
}

/// One accepted import, run in its own thread.
struct Job {
    source: RegistryClient,
    source_repo: String,
    reference: Reference,
    target: RegistryClient,
    tags: Vec<(String, String)>,
    untagged: Vec<String>,
    force: bool,
    fail_midway: bool,
}

impl Job {
    fn image(&self) -> String {
        match &self.reference {
            Reference::Tag(tag) => format!("{}:{tag}", self.source_repo),
            Reference::Digest(digest) => format!("{}@{digest}", self.source_repo),
        }
    }

    fn run(&self) -> Result<(), Failure> {
        let image = self.image();
        let top = self.fetch(self.reference.as_str()).map_err(|e| match e {
            Fetch::Missing => failure(
                404,
                "ManifestUnknown",
                format!(
                    "The source image '{image}' was not found in registry '{}'.",
                    self.source.host
                ),
            ),
            Fetch::Failed(detail) => copy_error(format!("manifest {image}: {detail}")),
        })?;
        if let Reference::Digest(digest) = &self.reference
            && top.1 != *digest
        {
            return Err(copy_error(format!(
                "manifest {image}: the source served bytes of {}",
                top.1
            )));
        }
        let mut count = 1;
        let top = self.tree(top, &mut count)?;

        let mut repos: Vec<&str> = Vec::new();
        for repo in self.tags.iter().map(|(r, _)| r).chain(&self.untagged) {
            if !repos.contains(&repo.as_str()) {
                repos.push(repo);
            }
        }
        if !self.force {
            for (repo, tag) in &self.tags {
                let answer = self
                    .target
                    .send(
                        "HEAD",
                        &format!("/v2/{repo}/manifests/{tag}"),
                        &[("Accept", MANIFEST_TYPES)],
                        &[],
                    )
                    .map_err(|e| copy_error(format!("to the target: {e}")))?;
                let existing = answer.header("Docker-Content-Digest").unwrap_or_default();
                if answer.status == 200 && existing != top.digest {
                    return Err(failure(
                        409,
                        "Conflict",
                        format!(
                            "Tag '{repo}:{tag}' already exists in the target registry and names {existing}, not {}; import with mode 'Force' to overwrite it.",
                            top.digest
                        ),
                    ));
                }
            }
        }

        let mut blobs = Vec::new();
        top.blobs(&mut blobs);
        for repo in &repos {
            for digest in &blobs {
                self.copy_blob(repo, digest)?;
            }
        }
        if self.fail_midway {
            return Err(copy_error(format!(
                "manifests of {image}: the import stopped after its {} blobs were copied (a fault injected into the ARM stand-in)",
                blobs.len()
            )));
        }
        for repo in &repos {
            for child in &top.children {
                self.put_tree(repo, child)?;
            }
        }
        for repo in &self.untagged {
            self.put(repo, &top.digest, &top)?;
        }
        for (repo, tag) in &self.tags {
            self.put(repo, tag, &top)?;
        }
        Ok(())
    }

    /// The source's manifest `reference`: bytes, digest, media type.
    fn fetch(&self, reference: &str) -> Result<(Vec<u8>, String, String), Fetch> {
        let path = format!("/v2/{}/manifests/{reference}", self.source_repo);
        let answer = self
            .source
            .send("GET", &path, &[("Accept", MANIFEST_TYPES)], &[])
            .map_err(Fetch::Failed)?;
        match answer.status {
            200 => {}
            404 => return Err(Fetch::Missing),
            status => {
                return Err(Fetch::Failed(format!(
                    "{} answered {status}: {}",
                    self.source.host,
                    String::from_utf8_lossy(&answer.body).trim()
                )));
            }
        }
        let digest = sha256_digest(&answer.body);
        let manifest: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let media_type = answer
            .header("Content-Type")
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
            .filter(|t| t.contains('/') && t != "application/json")
            .or_else(|| manifest["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_string());
        Ok((answer.body, digest, media_type))
    }

    /// The manifest and, for an index, its children, counting manifests
    /// against ACR's limit before fetching more.
    fn tree(
        &self,
        (bytes, digest, media_type): (Vec<u8>, String, String),
        count: &mut usize,
    ) -> Result<Node, Failure> {
        let manifest: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let entries: Vec<String> = manifest["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["digest"].as_str().map(str::to_string))
            .collect();
        *count += entries.len();
        if *count > MANIFEST_LIMIT {
            return Err(failure(
                400,
                "TooManyManifests",
                format!(
                    "The image '{}' has more than {MANIFEST_LIMIT} manifests ({} counted so far); an image to import may have at most {MANIFEST_LIMIT}.",
                    self.image(),
                    count
                ),
            ));
        }
        let mut children = Vec::new();
        for child in entries {
            let fetched = self.fetch(&child).map_err(|e| match e {
                Fetch::Missing => copy_error(format!(
                    "manifest {}@{child}: the index names it and the source has no such manifest",
                    self.source_repo
                )),
                Fetch::Failed(detail) => {
                    copy_error(format!("manifest {}@{child}: {detail}", self.source_repo))
                }
            })?;
            if fetched.1 != child {
                return Err(copy_error(format!(
                    "manifest {}@{child}: the source served bytes of {}",
                    self.source_repo, fetched.1
                )));
            }
            children.push(self.tree(fetched, count)?);
        }
        Ok(Node {
            digest,
            media_type,
            bytes,
            children,
        })
    }

    fn copy_blob(&self, repo: &str, digest: &str) -> Result<(), Failure> {
        let fail = |detail: String| copy_error(format!("blob {digest} into {repo}: {detail}"));
        let there = self
            .target
            .send("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], &[])
            .map_err(fail)?;
        if there.status == 200 {
            return Ok(());
        }
        let blob = self
            .source
            .send(
                "GET",
                &format!("/v2/{}/blobs/{digest}", self.source_repo),
                &[],
                &[],
            )
            .map_err(fail)?;
        if blob.status != 200 || sha256_digest(&blob.body) != digest {
            return Err(fail(format!(
                "the source answered {} with bytes of {}",
                blob.status,
                sha256_digest(&blob.body)
            )));
        }
        let started = self
            .target
            .send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])
            .map_err(fail)?;
        let location = started
            .header("Location")
            .filter(|_| started.status == 202)
            .map(path_of)
            .ok_or_else(|| fail(format!("starting the upload answered {}", started.status)))?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .target
            .send(
                "PUT",
                &format!("{location}{sep}digest={digest}"),
                &[("Content-Type", "application/octet-stream")],
                &blob.body,
            )
            .map_err(fail)?;
        if put.status != 201 {
            return Err(fail(format!(
                "the upload answered {}: {}",
                put.status,
                String::from_utf8_lossy(&put.body).trim()
            )));
        }
        Ok(())
    }

    fn put_tree(&self, repo: &str, node: &Node) -> Result<(), Failure> {
        for child in &node.children {
            self.put_tree(repo, child)?;
        }
        self.put(repo, &node.digest, node)
    }

    fn put(&self, repo: &str, reference: &str, node: &Node) -> Result<(), Failure> {
        let answer = self
            .target
            .send(
                "PUT",
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("Content-Type", &node.media_type)],
                &node.bytes,
            )
            .map_err(|e| copy_error(format!("manifest {repo}:{reference}: {e}")))?;
        if answer.status != 201 {
            return Err(copy_error(format!(
                "manifest {repo}:{reference}: the target answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            )));
        }
        Ok(())
    }
}

enum Fetch {
    Missing,
    Failed(String),
}

/// The path (and query) of a `Location`, absolute or not.
fn path_of(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
        None => location.to_string(),
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    openssl::rand::rand_bytes(&mut buffer).expect("random bytes");
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
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_parse_as_the_spec_describes_them() {
        assert_eq!(
            parse_image("hello-world").unwrap(),
            ("hello-world".into(), Reference::Tag("latest".into()))
        );
        assert_eq!(
            parse_image("team/app:1.2").unwrap(),
            ("team/app".into(), Reference::Tag("1.2".into()))
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse_image(&format!("team/app@{digest}")).unwrap(),
            ("team/app".into(), Reference::Digest(digest))
        );
        assert!(parse_image("team/app@sha256:abc").is_err());
        assert!(parse_image("Team/App:1").is_err());
        assert!(parse_image("app:-bad").is_err());
    }

    #[test]
    fn api_versions_are_told_apart_as_arm_does() {
        assert!(date_shaped("2025-11-01"));
        assert!(date_shaped("2019-06-01-preview"));
        assert!(!date_shaped("latest"));
        assert!(!date_shaped("2025-11-0"));
        assert!(!date_shaped("2025-11-01-"));
    }

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
