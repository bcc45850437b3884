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
//! What it answers, each described in full next to its code:
//!
//! - `entra.rs`: `POST /{tenant}/oauth2/v2.0/token` (point
//!   `AZURE_AUTHORITY_HOST` at [`ArmStandIn::authority`]), the client
//!   credentials grant; tokens are opaque strings remembered with their
//!   audience.
//! - `http.rs`: every other request is ARM's: it needs a Bearer token for
//!   [`ARM_RESOURCE`] (or the classic audience), then `api-version`
//!   [`API_VERSION`], else ARM's 401 or 400. ARM's error envelope,
//!   throttling ([`Fault::Throttle`], [`Fault::ThrottlePoll`]: 429 with
//!   `Retry-After`), the `x-ms-*` request ids of every answer, the routes.
//! - `registries.rs`: `Registries_List` (paged by [`ArmConfig::page_size`])
//!   and `Registries_Get`: the spec's Registry model of each [`AcrEntry`],
//!   `loginServer` its `127.0.0.1:PORT`.
//! - `import.rs`: `POST …/registries/{name}/importImage`, its
//!   `ImportImageParameters` checked at once.
//! - `operation.rs`: an accepted import as ARM's long-running operation:
//!   202 with `Location` and `Retry-After`, polled to 200 or the failure
//!   ([`ArmConfig::polls_before_done`], [`ArmConfig::retry_after_secs`]).
//! - `copy.rs`: the copy, run in a thread as ACR's runs server-side: the
//!   exact manifest bytes and every blob, at most [`MANIFEST_LIMIT`]
//!   manifests, and NOTHING attached (no `.sig`/`.att` tags, no referrers);
//!   to and from each registry at its [`AcrEntry::backend`] when one is
//!   set (clients then reach the login server through a proxy that counts
//!   what they send, the stand-in's copy does not pass it).
//! - `registry_client.rs`: how the copy talks to a registry (Basic auth, or
//!   a Bearer token from the registry's realm).

mod copy;
mod entra;
mod http;
mod import;
mod operation;
mod registries;
mod registry_client;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::Value;

use entra::issue;
use http::handle;
use operation::Operation;
use registries::resource_id;

/// The token audience (resource) of public Azure's Resource Manager.
pub const ARM_RESOURCE: &str = "https://management.azure.com";
/// The one Microsoft.ContainerRegistry api-version the stand-in speaks.
pub const API_VERSION: &str = "2025-11-01";
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

/// One registry the stand-in fronts as an ACR.
#[derive(Clone, Debug)]
pub struct AcrEntry {
    pub name: String,
    pub resource_group: String,
    /// `127.0.0.1:PORT` of a plain-HTTP registry: its `loginServer`.
    pub host: String,
    /// Where the stand-in's own server-side copy reaches this registry,
    /// when not at `host`: e.g. clients are given a counting proxy as the
    /// login server while ACR's internal copy goes to the registry
    /// directly. `None`: `host`.
    pub backend: Option<String>,
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
    /// enabled, no credentials, copied from and to at `host`.
    pub fn new(name: &str, host: &str) -> AcrEntry {
        AcrEntry {
            name: name.to_string(),
            resource_group: RESOURCE_GROUP.to_string(),
            host: host.to_string(),
            backend: None,
            export_disabled: false,
            location: LOCATION.to_string(),
            credentials: None,
        }
    }

    /// The same entry, its server-side copy going to `backend` instead of
    /// the login server.
    pub fn with_backend(mut self, backend: &str) -> AcrEntry {
        self.backend = Some(backend.to_string());
        self
    }

    /// Where the server-side copy reaches the registry: `backend`, else `host`.
    pub fn copy_host(&self) -> &str {
        self.backend.as_deref().unwrap_or(&self.host)
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
