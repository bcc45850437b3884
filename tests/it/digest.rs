//! os-digest end to end: real registries (plain, TLS + basic auth, token
//! auth), OCI layouts, skopeo as the peer, and a lying stub registry.

use os_testkit as support;

use std::io::Write;
use std::path::Path;

use serde_json::Value;
use support::bins::tool;
use support::images::{self, TestImage};
use support::registry::TestRegistry;
use support::schema::records;
use support::stub::{Reply, StubRegistry};

fn pushed_single(registry: &TestRegistry, dir: &Path, repo: &str, tag: &str, seed: &str) -> TestImage {
    let image = images::single_arch(dir, tag, seed);
    images::push(&image, registry, repo, tag);
    image
}

fn only(stdout: &[u8]) -> Value {
    let mut all = records(stdout);
    assert_eq!(all.len(), 1, "expected one record: {all:?}");
    all.remove(0)
}

#[test]
fn single_arch_reference_becomes_a_complete_record() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = pushed_single(&registry, dir.path(), "onestream/iam", "1.4.2", "iam");

    let output = tool("os-digest")
        .arg(format!("{}/onestream/iam:1.4.2", registry.host()))
        .arg("--service-from-repo")
        .assert()
        .success();
    let record = only(&output.get_output().stdout);
    assert_eq!(record["service"], "iam");
    assert_eq!(record["image"], format!("{}/onestream/iam", registry.host()));
    assert_eq!(record["digest"], image.digest.as_str());
    assert_eq!(record["tag"], "1.4.2");
    assert_eq!(record["mediaType"], image.media_type.as_str());
    assert_eq!(record["size"], image.size);
    assert!(record.get("platforms").is_none());
    let history = record["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["step"], "digest");
    assert_eq!(
        history[0]["tool"],
        concat!("os-digest ", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn multi_arch_index_lists_its_platforms_and_keeps_its_digest() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = images::multi_arch(dir.path(), "2.0", "multi");
    images::push(&image, &registry, "onestream/auth", "2.0");

    let output = tool("os-digest")
        .arg(format!("{}/onestream/auth:2.0", registry.host()))
        .assert()
        .success();
    let record = only(&output.get_output().stdout);
    assert_eq!(record["digest"], image.digest.as_str());
    assert_eq!(record["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(record["size"], image.size);
    let platforms: Vec<&str> = record["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        platforms,
        image.platforms.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // skopeo, the peer, sees the same digest.
    let peer = images::inspect_raw(&registry, "onestream/auth", "2.0");
    assert_eq!(images::sha256_digest(&peer), record["digest"].as_str().unwrap());
}

#[test]
fn oci_layouts_resolve_like_registries() {
    let dir = tempfile::tempdir().unwrap();
    let single = images::single_arch(&dir.path().join("build"), "1.0", "layout-a");
    let multi = images::multi_arch(&dir.path().join("build"), "2.0", "layout-b");
    let layout = dir.path().join("build");

    let output = tool("os-digest")
        .arg(format!("oci:{}:1.0", layout.display()))
        .arg(format!("oci:{}:2.0", layout.display()))
        .assert()
        .success();
    let out = records(&output.get_output().stdout);
    assert_eq!(out[0]["digest"], single.digest.as_str());
    assert_eq!(out[0]["image"], format!("oci:{}", layout.display()));
    assert_eq!(out[0]["tag"], "1.0");
    assert_eq!(out[1]["digest"], multi.digest.as_str());
    assert_eq!(out[1]["platforms"].as_array().unwrap().len(), 2);

    tool("os-digest")
        .arg(format!("oci:{}:9.9", layout.display()))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("no manifest tagged \"9.9\""));
}

#[test]
fn a_layout_written_by_os_core_is_read_by_skopeo_and_a_skopeo_layout_by_os_digest() {
    use os_core::oci::digest::Digest;
    use os_core::oci::layout::Layout;

    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // Our writer: copy a test image's blobs into a fresh layout.
    let source = images::single_arch(&dir.path().join("src"), "1", "ours");
    let ours = Layout::create(dir.path().join("ours")).unwrap();
    let manifest = source.manifest();
    let mut blobs: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    blobs.push(manifest["config"]["digest"].as_str().unwrap().to_string());
    blobs.push(source.digest.clone());
    for blob in &blobs {
        let digest: Digest = blob.parse().unwrap();
        ours.write_blob(&digest, source.blob(blob).as_slice()).unwrap();
    }
    ours.add_manifest(
        &source.media_type,
        &source.digest.parse().unwrap(),
        source.size,
        Some("1"),
    )
    .unwrap();

    // skopeo reads it and pushes it with the same digest...
    images::skopeo_copy(
        &format!("oci:{}:1", dir.path().join("ours").display()),
        &format!("docker://{}/ours:1", registry.host()),
    );
    assert_eq!(
        images::sha256_digest(&images::inspect_raw(&registry, "ours", "1")),
        source.digest
    );

    // ...and writes a layout of its own that os-digest reads.
    images::skopeo_copy(
        &format!("docker://{}/ours:1", registry.host()),
        &format!("oci:{}:fromskopeo", dir.path().join("theirs").display()),
    );
    let output = tool("os-digest")
        .arg(format!("oci:{}:fromskopeo", dir.path().join("theirs").display()))
        .assert()
        .success();
    assert_eq!(
        only(&output.get_output().stdout)["digest"],
        source.digest.as_str()
    );
}

#[test]
fn references_on_stdin_keep_their_order_and_bad_lines_are_named() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let host = registry.host();
    let mut expected = Vec::new();
    for n in 0..12 {
        let repo = format!("team/svc{n}");
        expected.push(pushed_single(&registry, dir.path(), &repo, "1", &format!("seed{n}")).digest);
    }
    let mut input = String::new();
    for n in 0..12 {
        input.push_str(&format!("{host}/team/svc{n}:1\n"));
        if n == 5 {
            input.push_str("{\"image\": oops}\n");
        }
    }
    let output = tool("os-digest")
        .args(["--service-from-repo", "--jobs", "4"])
        .write_stdin(input)
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "stdin line 7: malformed JSON at column 11",
        ));
    let out = records(&output.get_output().stdout);
    assert_eq!(
        out.len(),
        13,
        "every line yields a record, the bad one an error record"
    );
    assert_eq!(out[6]["error"]["code"], "malformed-input");
    let good: Vec<&Value> = out.iter().filter(|r| r.get("error").is_none()).collect();
    for (n, record) in good.iter().enumerate() {
        assert_eq!(record["service"], format!("svc{n}"));
        assert_eq!(record["digest"], expected[n].as_str());
    }
}

#[test]
fn unknown_fields_pass_through_and_a_moved_tag_is_caught() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let first = pushed_single(&registry, dir.path(), "app", "stable", "first");
    let host = registry.host();
    let record = format!(
        r#"{{"team":{{"cost":123456789012345678901234567890,"ratio":1.50}},"image":"{host}/app","tag":"stable","digest":"{}","history":[{{"step":"build","tool":"os-build 1","at":"2026-11-25T10:00:00Z"}}]}}"#,
        first.digest
    );
    let output = tool("os-digest")
        .write_stdin(format!("{record}\n"))
        .assert()
        .success();
    let stdout = String::from_utf8(output.get_output().stdout.clone()).unwrap();
    assert!(
        stdout.starts_with(r#"{"team":{"cost":123456789012345678901234567890,"ratio":1.50},"#),
        "unknown fields must come out exactly as they went in: {stdout}"
    );
    let checked = only(stdout.as_bytes());
    assert_eq!(
        checked["history"].as_array().unwrap().len(),
        2,
        "history is appended to"
    );
    assert_eq!(checked["history"][0]["step"], "build");
    assert_eq!(checked["digest"], first.digest.as_str());

    // Someone pushes another image to the same tag: the record no longer holds.
    let second = pushed_single(&registry, dir.path(), "app", "stable", "second");
    assert_ne!(first.digest, second.digest);
    let output = tool("os-digest")
        .write_stdin(format!("{record}\n"))
        .assert()
        .code(1);
    let failed = only(&output.get_output().stdout);
    assert_eq!(failed["error"]["code"], "digest-mismatch");
    assert_eq!(
        failed["digest"],
        first.digest.as_str(),
        "the digest is never changed"
    );
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the tag moved")
    );

    // Error records pass a second tool untouched, and keep failing the exit code.
    let rerun = tool("os-digest")
        .write_stdin(output.get_output().stdout.clone())
        .assert()
        .code(1);
    assert_eq!(rerun.get_output().stdout, output.get_output().stdout);
}

#[test]
fn missing_tags_bad_references_and_a_dead_registry_are_error_records() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    pushed_single(&registry, dir.path(), "app", "1", "x");
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let output = tool("os-digest")
        .arg(format!("{}/app:1", registry.host()))
        .arg(format!("{}/app:missing", registry.host()))
        .arg("Bad/Reference:x")
        .arg(format!("127.0.0.1:{dead}/app:1"))
        .assert()
        .code(1);
    let out = records(&output.get_output().stdout);
    assert!(out[0].get("error").is_none());
    assert_eq!(out[1]["error"]["code"], "not-found");
    assert_eq!(out[1]["tag"], "missing");
    assert_eq!(out[2]["error"]["code"], "bad-reference");
    assert!(
        out[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("argument 3")
    );
    assert_eq!(out[3]["error"]["code"], "registry-unreachable");
    let stderr = String::from_utf8_lossy(&output.get_output().stderr);
    assert!(stderr.contains("os-digest: error: argument 2:"), "{stderr}");
}

// TLS and basic auth, with the CA file flag and the auth files: one test
// per way in (or out).

/// An image on a TLS registry with basic auth (user `ci`), and the CA that
/// signed the registry's certificate.
struct SecureImage {
    registry: TestRegistry,
    dir: tempfile::TempDir,
    digest: String,
    reference: String,
    ca: std::path::PathBuf,
}

impl SecureImage {
    fn new() -> SecureImage {
        let registry = TestRegistry::start_tls_basic("ci", "s3cret-pass");
        let dir = tempfile::tempdir().unwrap();
        let image = pushed_single(&registry, dir.path(), "secure/app", "1", "tls");
        let reference = format!("{}/secure/app:1", registry.host());
        let ca = registry.ca_file().unwrap().to_path_buf();
        SecureImage {
            digest: image.digest.to_string(),
            registry,
            dir,
            reference,
            ca,
        }
    }

    /// os-digest of the image, trusting the CA.
    fn digest_trusting_the_ca(&self) -> assert_cmd::Command {
        let mut command = tool("os-digest");
        command.arg(&self.reference).arg("--ca-file").arg(&self.ca);
        command
    }
}

#[test]
fn tls_is_verified_even_on_loopback_without_the_ca() {
    let s = SecureImage::new();
    let output = tool("os-digest").arg(&s.reference).assert().code(1);
    let stderr = String::from_utf8_lossy(&output.get_output().stderr).to_string();
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}

#[test]
fn a_trusted_registry_refuses_anonymous_access() {
    let s = SecureImage::new();
    let output = s.digest_trusting_the_ca().assert().code(1);
    assert_eq!(only(&output.get_output().stdout)["error"]["code"], "unauthorized");
}

#[test]
fn username_and_password_stdin_sign_in() {
    let s = SecureImage::new();
    let output = s
        .digest_trusting_the_ca()
        .args(["--username", "ci", "--password-stdin"])
        .write_stdin("s3cret-pass\n")
        .assert()
        .success();
    assert_eq!(only(&output.get_output().stdout)["digest"], s.digest.as_str());
}

#[test]
fn a_wrong_password_is_refused_and_never_echoed() {
    let s = SecureImage::new();
    let output = s
        .digest_trusting_the_ca()
        .args(["--username", "ci"])
        .env("OS_REGISTRY_PASSWORD", "wrong-password-123")
        .assert()
        .code(1);
    let all = [
        output.get_output().stdout.clone(),
        output.get_output().stderr.clone(),
    ]
    .concat();
    assert!(!String::from_utf8_lossy(&all).contains("wrong-password-123"));
    assert_eq!(only(&output.get_output().stdout)["error"]["code"], "unauthorized");
}

#[test]
fn registry_auth_file_auths_sign_in() {
    let s = SecureImage::new();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret-pass");
    let auth_file = s.dir.path().join("auth.json");
    std::fs::write(
        &auth_file,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, s.registry.host()),
    )
    .unwrap();
    let output = s
        .digest_trusting_the_ca()
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .assert()
        .success();
    assert_eq!(only(&output.get_output().stdout)["digest"], s.digest.as_str());
}

#[test]
fn a_docker_credential_helper_named_by_cred_helpers_signs_in() {
    // A real helper (the helper protocol: `get`, server on stdin, JSON on
    // stdout) named by credHelpers in $DOCKER_CONFIG/config.json.
    let s = SecureImage::new();
    let bin = s.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-onestreamtest");
    let mut script = std::fs::File::create(&helper).unwrap();
    writeln!(
        script,
        "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\nprintf '%s' '{{\"ServerURL\":\"'\"$server\"'\",\"Username\":\"ci\",\"Secret\":\"s3cret-pass\"}}'",
        s.registry.host()
    )
    .unwrap();
    drop(script);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker_config = s.dir.path().join("docker");
    std::fs::create_dir(&docker_config).unwrap();
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"onestreamtest"}}}}"#, s.registry.host()),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let output = s
        .digest_trusting_the_ca()
        .env("DOCKER_CONFIG", &docker_config)
        .env("PATH", path)
        .assert()
        .success();
    assert_eq!(only(&output.get_output().stdout)["digest"], s.digest.as_str());
}

#[test]
fn token_auth_fetches_a_token_once_per_repository_and_uses_identity_tokens() {
    let registry = TestRegistry::start_token("robot", "tok-pass");
    let dir = tempfile::tempdir().unwrap();
    let image = pushed_single(&registry, dir.path(), "tok/app", "1", "token");
    for tag in 2..=20 {
        pushed_single(&registry, dir.path(), "tok/app", &tag.to_string(), "token");
    }
    let before = registry.token_requests();
    let input: String = (1..=20)
        .map(|t| format!("{}/tok/app:{t}\n", registry.host()))
        .collect();
    let output = tool("os-digest")
        .env("OS_REGISTRY_USERNAME", "robot")
        .env("OS_REGISTRY_PASSWORD", "tok-pass")
        .write_stdin(input)
        .assert()
        .success();
    let out = records(&output.get_output().stdout);
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(|r| r["digest"] == image.digest.as_str()));
    assert_eq!(
        registry.token_requests() - before,
        1,
        "one token serves all 20 requests of one scope"
    );

    // Anonymous: the token endpoint grants nothing, the registry refuses.
    let output = tool("os-digest")
        .arg(format!("{}/tok/app:1", registry.host()))
        .assert()
        .code(1);
    assert_eq!(only(&output.get_output().stdout)["error"]["code"], "unauthorized");

    // An identity (refresh) token from the auth file, traded by OAuth2 POST.
    let auth_file = dir.path().join("auth.json");
    let refresh = registry.token_server().unwrap().refresh_token();
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"identitytoken":"{refresh}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let output = tool("os-digest")
        .arg(format!("{}/tok/app:1", registry.host()))
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .assert()
        .success();
    assert_eq!(only(&output.get_output().stdout)["digest"], image.digest.as_str());
}

/// A registry that serves manifest bytes whose hash is not the digest it
/// claims must never have that digest forwarded.
#[test]
fn a_registry_lying_about_the_digest_is_caught() {
    let manifest =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
            .to_vec();
    let lie = format!("sha256:{}", "ab".repeat(32));
    let stub = {
        let lie = lie.clone();
        StubRegistry::start(move |method, url, _| match (method, url) {
            (_, "/v2/") => Reply::new(200),
            (_, url) if url.starts_with("/v2/app/manifests/") => Reply::new(200)
                .header("Content-Type", "application/vnd.oci.image.index.v1+json")
                .header("Docker-Content-Digest", &lie)
                .body(if method == "HEAD" {
                    Vec::new()
                } else {
                    manifest.clone()
                }),
            _ => Reply::new(404),
        })
    };
    let output = tool("os-digest")
        .arg(format!("{}/app:1", stub.host()))
        .assert()
        .code(1);
    let record = only(&output.get_output().stdout);
    assert_eq!(record["error"]["code"], "digest-mismatch");
    assert!(
        record.get("digest").is_none(),
        "a digest we could not verify is not recorded"
    );
    assert!(record["error"]["message"].as_str().unwrap().contains(&lie));
}

#[test]
fn transient_failures_are_retried_honouring_retry_after() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#.to_vec();
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&manifest))
    );
    let stub = {
        let digest = digest.clone();
        StubRegistry::start(move |method, url, n| match url {
            "/v2/" => Reply::new(200),
            _ if n == 1 => Reply::new(503),
            _ if n == 2 => Reply::new(429).header("Retry-After", "1"),
            _ => Reply::new(200)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Docker-Content-Digest", &digest)
                .body(if method == "HEAD" {
                    Vec::new()
                } else {
                    manifest.clone()
                }),
        })
    };
    let started = std::time::Instant::now();
    let output = tool("os-digest")
        .arg(format!("{}/app:1", stub.host()))
        .assert()
        .success();
    let record = only(&output.get_output().stdout);
    assert_eq!(record["digest"], digest.as_str());
    let manifest_requests = stub.seen().iter().filter(|r| r.contains("/manifests/")).count();
    assert!(
        manifest_requests >= 3,
        "503 and 429 were retried: {:?}",
        stub.seen()
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );

    // A registry that only ever fails gives up within its bounds.
    let always = StubRegistry::start(|_, url, _| {
        if url == "/v2/" {
            Reply::new(200)
        } else {
            Reply::new(500)
        }
    });
    let output = tool("os-digest")
        .arg(format!("{}/app:1", always.host()))
        .assert()
        .code(1);
    assert_eq!(
        only(&output.get_output().stdout)["error"]["code"],
        "registry-error"
    );
    let attempts = always.seen().iter().filter(|r| r.contains("/manifests/")).count();
    assert_eq!(attempts, 5, "bounded retries: {:?}", always.seen());
}

#[test]
fn source_comes_from_flags_or_the_ci_system() {
    let dir = tempfile::tempdir().unwrap();
    let image = images::single_arch(dir.path(), "1", "ci");
    let output = tool("os-digest")
        .arg(image.oci_ref())
        .env("TF_BUILD", "True")
        .env("BUILD_SOURCEVERSION", "9f1e2d")
        .env(
            "BUILD_REPOSITORY_URI",
            "https://dev.azure.com/onestream/iam/_git/iam",
        )
        .env("BUILD_BUILDNUMBER", "20261125.3")
        .assert()
        .success();
    let record = only(&output.get_output().stdout);
    assert_eq!(record["source"]["commit"], "9f1e2d");
    assert_eq!(
        record["source"]["repository"],
        "https://dev.azure.com/onestream/iam/_git/iam"
    );
    assert_eq!(record["source"]["run"], "20261125.3");

    let output = tool("os-digest")
        .arg(image.oci_ref())
        .args(["--commit", "abc123", "--service", "iam"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_SHA", "ignored-because-flag")
        .env("GITHUB_REPOSITORY", "onestream/iam")
        .env("GITHUB_RUN_ID", "42")
        .assert()
        .success();
    let record = only(&output.get_output().stdout);
    assert_eq!(record["service"], "iam");
    assert_eq!(record["source"]["commit"], "abc123");
    assert_eq!(record["source"]["repository"], "https://github.com/onestream/iam");
    assert_eq!(record["source"]["run"], "42");
}

#[test]
fn usage_errors_exit_2() {
    tool("os-digest")
        .args(["--password-stdin", "--username", "u"])
        .write_stdin("pw\n")
        .assert()
        .code(2);
    tool("os-digest").args(["--jobs", "0", "x/y:1"]).assert().code(2);
    tool("os-digest")
        .args(["--ca-file", "/nonexistent.pem", "x.io/y:1"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("/nonexistent.pem"));
    let help = tool("os-digest").arg("--help").assert().success();
    let text = String::from_utf8_lossy(&help.get_output().stdout).to_string();
    assert!(
        text.contains("Examples:") && text.contains("Exit status:"),
        "{text}"
    );
}

#[test]
fn os_deploy_without_a_mode_is_a_usage_error_naming_the_modes() {
    // It replaced a stub that said "not implemented yet" (tests/it/deploy.rs has the rest).
    tool("os-deploy")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("render"))
        .stderr(predicates::str::contains("gitops"));
}
