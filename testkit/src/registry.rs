//! Real OCI registries for end-to-end tests: `docker-registry serve` (CNCF
//! distribution 2.8) on `127.0.0.1:<free port>`, each with its own temporary
//! storage, config and log, killed and removed on drop.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::token_server::TokenServer;

/// The registry binary (Debian's `docker-registry` package).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// skopeo, used to push test images.
pub const SKOPEO_BIN: &str = "/usr/bin/skopeo";

/// `service` and `issuer` of the token-auth variant.
pub const TOKEN_SERVICE: &str = "test-registry";
pub const TOKEN_ISSUER: &str = "test-issuer";

/// How long a registry may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Attempts at starting on a fresh port when the one picked was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// Checks that the external tools the tests need are installed, and fails
/// with the command that installs them when one is not. Tests never install
/// anything themselves (that is `scripts/setup`'s job) and never skip.
pub fn ensure_tools() {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        let missing: Vec<&str> = [REGISTRY_BIN, SKOPEO_BIN, "/usr/bin/curl"]
            .into_iter()
            .filter(|path| !Path::new(path).exists())
            .collect();
        assert!(
            missing.is_empty(),
            "end-to-end tests need {missing:?}: run scripts/setup (it installs them with apt-get)"
        );
    });
}

/// How a registry is started (besides its auth): where its directory goes
/// and how much it logs. [`Options::default`] is what the tests use.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Parent of the registry's temporary directory (config, storage, log);
    /// the system's temp dir (TMPDIR) when `None`. Benchmarks put it on
    /// /dev/shm: the registry fsyncs every file it writes.
    pub parent: Option<PathBuf>,
    /// Warnings only and no access log, as a benchmark wants (logging costs
    /// the registry CPU time). [`TestRegistry::requests`] then sees nothing.
    pub quiet: bool,
}

enum Auth {
    None,
    TlsBasic {
        user: String,
        password: String,
    },
    Token {
        user: String,
        password: String,
    },
    /// Token auth whose realm is ACR's `/oauth2/token` (its exchange set up
    /// afterwards with [`TokenServer::accept_entra`]).
    AcrToken {
        user: String,
        password: String,
    },
}

/// A running `docker-registry` process.
pub struct TestRegistry {
    child: Child,
    host: String,
    tls: bool,
    creds: Option<(String, String)>,
    storage_dir: PathBuf,
    log_path: PathBuf,
    ca_file: Option<PathBuf>,
    cert_dir: Option<PathBuf>,
    token_server: Option<TokenServer>,
    // Dropped last: holds config, storage, certificates and the log.
    dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Plain HTTP, no auth.
    pub fn start() -> TestRegistry {
        Self::start_with(Auth::None, &Options::default())
    }

    /// Plain HTTP, no auth, started as `options` say (benchmarks).
    pub fn start_with_options(options: &Options) -> TestRegistry {
        Self::start_with(Auth::None, options)
    }

    /// HTTPS with a certificate (for 127.0.0.1 and localhost) issued by a CA made
    /// here, plus htpasswd (bcrypt) basic auth of `user`/`password`.
    pub fn start_tls_basic(user: &str, password: &str) -> TestRegistry {
        Self::start_with(
            Auth::TlsBasic {
                user: user.to_string(),
                password: password.to_string(),
            },
            &Options::default(),
        )
    }

    /// Plain HTTP with `auth: token`; the realm is an in-process [`TokenServer`]
    /// that authenticates `user`/`password`.
    pub fn start_token(user: &str, password: &str) -> TestRegistry {
        Self::start_with(
            Auth::Token {
                user: user.to_string(),
                password: password.to_string(),
            },
            &Options::default(),
        )
    }

    /// Plain HTTP with `auth: token` as an Azure Container Registry has it:
    /// the realm is `/oauth2/token` of an in-process [`TokenServer`], which
    /// also trades Entra tokens at `/oauth2/exchange` (what it accepts is
    /// set through [`TestRegistry::token_server`]); `user`/`password` play
    /// ACR's admin user, for the test's own pushes.
    pub fn start_acr_token(user: &str, password: &str) -> TestRegistry {
        Self::start_with(
            Auth::AcrToken {
                user: user.to_string(),
                password: password.to_string(),
            },
            &Options::default(),
        )
    }

    fn start_with(auth: Auth, options: &Options) -> TestRegistry {
        ensure_tools();
        let mut builder = tempfile::Builder::new();
        builder.prefix("onestream-registry-");
        let dir = match &options.parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .expect("registry tempdir");
        // Every response carries this, so a server that already sat on the
        // port is never taken for ours (a quiet registry logs no "listening on").
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let instance = format!(
            "onestream-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let storage_dir = dir.path().join("storage");
        fs::create_dir_all(&storage_dir).unwrap();

        let mut ca_file = None;
        let mut cert_dir = None;
        let mut token_server = None;
        let mut creds = None;
        let mut tls = false;
        let mut extra = String::new();
        match &auth {
            Auth::None => {}
            Auth::TlsBasic { user, password } => {
                tls = true;
                creds = Some((user.clone(), password.clone()));
                let certs = dir.path().join("certs");
                fs::create_dir_all(&certs).unwrap();
                let (ca_pem, cert_pem, key_pem) = server_certificates();
                let ca = certs.join("ca.crt");
                fs::write(&ca, ca_pem).unwrap();
                let cert = dir.path().join("server.crt");
                let key = dir.path().join("server.key");
                fs::write(&cert, cert_pem).unwrap();
                fs::write(&key, key_pem).unwrap();
                let htpasswd = dir.path().join("htpasswd");
                let hash = bcrypt::hash_with_result(password, 5)
                    .expect("bcrypt")
                    .format_for_version(bcrypt::Version::TwoY);
                fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                extra.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n\
                     auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                    yaml_path(&cert),
                    yaml_path(&key),
                    yaml_path(&htpasswd)
                ));
                ca_file = Some(ca);
                cert_dir = Some(certs);
            }
            Auth::Token { user, password } | Auth::AcrToken { user, password } => {
                creds = Some((user.clone(), password.clone()));
                let server = TokenServer::start(user, password, TOKEN_SERVICE, TOKEN_ISSUER);
                let realm = match &auth {
                    Auth::AcrToken { .. } => server.acr_realm(),
                    _ => server.realm(),
                };
                let bundle = dir.path().join("token-ca.pem");
                fs::write(&bundle, server.root_cert_pem()).unwrap();
                extra.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
                     rootcertbundle: {}\n",
                    yaml_str(&realm),
                    yaml_str(TOKEN_SERVICE),
                    yaml_str(TOKEN_ISSUER),
                    yaml_path(&bundle)
                ));
                token_server = Some(server);
            }
        }

        let config = dir.path().join("config.yml");
        let log_path = dir.path().join("registry.log");
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let host = format!("127.0.0.1:{port}");
            fs::write(
                &config,
                config_yaml(&host, &storage_dir, &extra, &instance, options.quiet),
            )
            .unwrap();
            let log = fs::File::create(&log_path).expect("registry log file");
            let mut command = Command::new(REGISTRY_BIN);
            command
                .arg("serve")
                .arg(&config)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // Keep the environment from reconfiguring the registry.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("REGISTRY_") {
                    command.env_remove(key);
                }
            }
            let mut child = command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {REGISTRY_BIN}: {e}"));
            match wait_ready(&mut child, port, &log_path, &instance) {
                Ok(()) => {
                    return TestRegistry {
                        child,
                        host,
                        tls,
                        creds,
                        storage_dir,
                        log_path,
                        ca_file,
                        cert_dir,
                        token_server,
                        dir,
                    };
                }
                Err(Failure::Exited(status)) => {
                    last_log = read_lossy(&log_path);
                    if last_log.contains("address already in use") {
                        continue;
                    }
                    panic!(
                        "docker-registry exited early ({status}); config:\n{}\nlog:\n{last_log}",
                        read_lossy(&config)
                    );
                }
                Err(Failure::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "docker-registry on {host} not ready after {READY_TIMEOUT:?}; config:\n{}\nlog:\n{}",
                        read_lossy(&config),
                        read_lossy(&log_path)
                    );
                }
            }
        }
        panic!("docker-registry found no free port in {PORT_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host)
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The user and password the registry accepts (TLS and token variants).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// PEM of the CA that issued the server certificate (TLS variant).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// A directory holding only `ca.crt`, for skopeo's `--*-cert-dir` (TLS variant).
    pub fn cert_dir(&self) -> Option<&Path> {
        self.cert_dir.as_deref()
    }

    /// The registry's `storage.filesystem.rootdirectory`.
    pub fn storage_dir(&self) -> &Path {
        &self.storage_dir
    }

    /// Everything the registry process wrote so far (stdout and stderr).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// The requests the registry served so far, as "METHOD /path?query",
    /// from its access log. A request's line is written before its response
    /// is flushed (for everything but streamed blob bodies), so a client
    /// that has exited has all of its manifest and upload requests here.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|line| {
                let quoted = line.split('"').nth(1)?;
                let mut parts = quoted.split(' ');
                let (method, path) = (parts.next()?, parts.next()?);
                path.starts_with("/v2/").then(|| format!("{method} {path}"))
            })
            .collect()
    }

    /// The in-process token server (token variant).
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }

    /// How many tokens the token server issued (0 for the other variants).
    pub fn token_requests(&self) -> usize {
        self.token_server.as_ref().map_or(0, TokenServer::issued)
    }

    /// skopeo flags to write here (`skopeo copy ... docker://HOST/...`).
    pub fn skopeo_dest_args(&self) -> Vec<String> {
        self.skopeo_flags("--dest-")
    }

    /// skopeo flags to read from here as the source of `skopeo copy`.
    pub fn skopeo_src_args(&self) -> Vec<String> {
        self.skopeo_flags("--src-")
    }

    /// skopeo flags for the single-image commands (`inspect`, `delete`,
    /// `list-tags`): `--tls-verify`, `--cert-dir`, `--creds`.
    pub fn skopeo_args(&self) -> Vec<String> {
        self.skopeo_flags("--")
    }

    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut args = Vec::new();
        match &self.cert_dir {
            Some(dir) => {
                args.push(format!("{prefix}cert-dir"));
                args.push(dir.display().to_string());
            }
            None => args.push(format!("{prefix}tls-verify=false")),
        }
        if let Some((user, password)) = &self.creds {
            args.push(format!("{prefix}creds"));
            args.push(format!("{user}:{password}"));
        }
        args
    }

    /// The `docker-registry` process's id (for its CPU time in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the config, storage and log live.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Failure {
    Exited(std::process::ExitStatus),
    Timeout,
}

/// Waits until the registry answers `GET /v2/` with any HTTP status and is
/// known to be ours (so the port is its own, not another process's): it
/// logged that it listens, or its answer carries `instance`. Fails when the
/// process exits or the deadline passes.
///
/// The probe is plain HTTP even for the TLS variant: Go's TLS server answers a
/// plain request with `HTTP/1.0 400 Bad Request`, which proves it is serving
/// (and the log, at level info, that it is ours).
fn wait_ready(child: &mut Child, port: u16, log_path: &Path, instance: &str) -> Result<(), Failure> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("registry process status") {
            return Err(Failure::Exited(status));
        }
        if let Some(head) = probe(port)
            && (head.contains(instance) || read_lossy(log_path).contains("listening on"))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure::Timeout);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The head of the answer to `GET /v2/` (up to 4 KiB), if it is HTTP.
fn probe(port: u16) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while got < buf.len() && !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf[..got]
        .starts_with(b"HTTP/")
        .then(|| String::from_utf8_lossy(&buf[..got]).into_owned())
}

/// A port that was free a moment ago (the start retries if it is taken by then).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn config_yaml(host: &str, storage: &Path, extra: &str, instance: &str, quiet: bool) -> String {
    let log = if quiet {
        "log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: true\n"
    } else {
        "log:\n  level: info\n  formatter: text\n"
    };
    format!(
        "version: 0.1\n\
         {log}\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {}\n  secret: onestream-test-secret\n  \
         headers:\n    X-Content-Type-Options: [nosniff]\n    X-Onestream-Registry: [{}]\n\
         {extra}",
        yaml_path(storage),
        yaml_str(host),
        yaml_str(instance),
    )
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn yaml_path(p: &Path) -> String {
    yaml_str(p.to_str().expect("UTF-8 temp path"))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A fresh CA and a server certificate for 127.0.0.1 and localhost signed by it:
/// `(ca_pem, cert_pem, key_pem)`.
fn server_certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "onestream test registry CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");

    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}
