//! Exercises the end-to-end test support itself (testkit/): real registries
//! in their three variants and the hand-written OCI test images.

use os_testkit as support;

use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use support::images::{self, OCI_INDEX, OCI_MANIFEST, sha256_digest};
use support::registry::TestRegistry;

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

/// `curl` status code of `GET url` (extra args before the URL).
fn curl_status(args: &[&str], url: &str) -> String {
    let mut all = vec!["-sS", "-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    all.push(url);
    let out = run("curl", &all);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl_json(args: &[&str], url: &str) -> (String, Value) {
    let mut all = vec!["-sS", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    all.push(url);
    let out = run("curl", &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl output with status");
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status.to_string(), body)
}

/// A skopeo run that failed because the registry refused it.
fn assert_refused(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "anonymous push succeeded");
    assert!(
        ["authentication required", "unauthorized", "denied"]
            .iter()
            .any(|m| stderr.to_lowercase().contains(m)),
        "skopeo failed for another reason: {stderr}"
    );
}

fn jwt_part(token: &str, n: usize) -> Value {
    let part = token.split('.').nth(n).expect("JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

#[test]
fn images_are_deterministic_and_seeded() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let one = images::single_arch(a.path(), "v1", "alpha");
    let again = images::single_arch(b.path(), "v1", "alpha");
    let other = images::single_arch(a.path(), "v2", "beta");
    assert_eq!(one.digest, again.digest);
    assert_ne!(one.digest, other.digest);
    assert_eq!(one.media_type, OCI_MANIFEST);
    assert!(one.platforms.is_empty());

    let multi = images::multi_arch(a.path(), "multi", "alpha");
    let multi_again = images::multi_arch(b.path(), "multi", "alpha");
    assert_eq!(multi.digest, multi_again.digest);
    assert_eq!(multi.media_type, OCI_INDEX);
    assert_eq!(multi.platforms, ["linux/amd64", "linux/arm64/v8"]);

    // The layout holds all three tags, and the blobs match their digests.
    let index: Value = serde_json::from_slice(&std::fs::read(a.path().join("index.json")).unwrap()).unwrap();
    let tags: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(tags, ["v1", "v2", "multi"]);
    let top = multi.blob(&multi.digest);
    assert_eq!(sha256_digest(&top), multi.digest);
    assert_eq!(top.len() as u64, multi.size);
    let manifest = multi.manifest();
    let arm = &manifest["manifests"][1];
    assert_eq!(arm["platform"]["variant"], "v8");
    let child: Value = serde_json::from_slice(&multi.blob(arm["digest"].as_str().unwrap())).unwrap();
    let config: Value =
        serde_json::from_slice(&multi.blob(child["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["rootfs"]["diff_ids"][0], child["layers"][0]["digest"]);
}

#[test]
fn plain_registry_push_single_and_multi_arch() {
    let registry = TestRegistry::start();
    assert!(registry.host().starts_with("127.0.0.1:"));
    assert!(registry.ca_file().is_none() && registry.cert_dir().is_none());
    assert_eq!(registry.token_requests(), 0);
    assert_eq!(
        curl_status(&[], &format!("http://{}/v2/", registry.host())),
        "200"
    );

    let dir = tempfile::tempdir().unwrap();
    let single = images::single_arch(dir.path(), "single", "plain");
    let multi = images::multi_arch(dir.path(), "multi", "plain");
    images::push(&single, &registry, "test/single", "v1");
    images::push(&multi, &registry, "test/multi", "v1");

    // The registry serves the exact index, and its children by digest.
    let index: Value = serde_json::from_slice(&images::inspect_raw(&registry, "test/multi", "v1")).unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);
    let child = index["manifests"][1]["digest"].as_str().unwrap();
    let raw = images::inspect_raw(&registry, "test/multi", child);
    assert_eq!(sha256_digest(&raw), child);

    assert!(
        registry
            .storage_dir()
            .join("docker/registry/v2/repositories/test/multi")
            .is_dir()
    );
    assert!(registry.log().contains("listening on"), "{}", registry.log());
}

#[test]
fn tls_basic_registry() {
    let registry = TestRegistry::start_tls_basic("alice", "s3cret");
    let ca = registry.ca_file().expect("CA file").to_str().unwrap().to_string();
    assert!(registry.cert_dir().unwrap().join("ca.crt").is_file());
    let url = format!("https://{}/v2/", registry.host());
    assert_eq!(curl_status(&["--cacert", &ca], &url), "401");
    assert_eq!(curl_status(&["--cacert", &ca, "-u", "alice:wrong"], &url), "401");
    assert_eq!(curl_status(&["--cacert", &ca, "-u", "alice:s3cret"], &url), "200");
    // The certificate is valid for localhost too.
    let local = url.replace("127.0.0.1", "localhost");
    assert_eq!(
        curl_status(&["--cacert", &ca, "-u", "alice:s3cret"], &local),
        "200"
    );

    let dir = tempfile::tempdir().unwrap();
    let image = images::single_arch(dir.path(), "v1", "tls");
    images::push(&image, &registry, "secure/app", "v1");

    // Without credentials the same push is refused.
    let out = run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--retry-times",
            "0",
            "--dest-no-creds",
            "--dest-cert-dir",
            registry.cert_dir().unwrap().to_str().unwrap(),
            &image.oci_ref(),
            &format!("docker://{}/secure/app:anon", registry.host()),
        ],
    );
    assert_refused(&out);
}

#[test]
fn token_registry() {
    let registry = TestRegistry::start_token("bob", "hunter2");
    let dir = tempfile::tempdir().unwrap();
    let image = images::multi_arch(dir.path(), "v1", "token");

    // Without credentials: anonymous tokens grant nothing, so the push fails.
    let out = run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--all",
            "--retry-times",
            "0",
            "--dest-tls-verify=false",
            "--dest-no-creds",
            &image.oci_ref(),
            &format!("docker://{}/tok/app:v1", registry.host()),
        ],
    );
    assert_refused(&out);
    let anonymous = registry.token_requests();
    assert!(anonymous > 0, "skopeo asked no anonymous token");

    // With credentials: push and inspect (both through `images`) work.
    images::push(&image, &registry, "tok/app", "v1");
    assert!(registry.token_requests() > anonymous);
    let server = registry.token_server().unwrap();
    assert!(
        server
            .issued_tokens()
            .iter()
            .any(|t| t.subject == "bob" && t.access.iter().any(|a| a.ends_with("tok/app:pull,push"))),
        "{:?}",
        server.issued_tokens()
    );
    let out = run(
        "skopeo",
        &[
            "inspect",
            "--retry-times",
            "0",
            "--tls-verify=false",
            "--creds",
            "bob:hunter2",
            "--format",
            "{{.Digest}}",
            &format!("docker://{}/tok/app:v1", registry.host()),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), image.digest);

    // The token server itself.
    let realm = server.realm();
    let scope = "scope=repository:tok/app:pull,push";
    let get = format!("{realm}?service=test-registry&{scope}");
    assert_eq!(curl_status(&["-u", "bob:nope"], &get), "401");
    let (status, anon) = curl_json(&[], &get);
    assert_eq!(status, "200");
    let claims = jwt_part(anon["token"].as_str().unwrap(), 1);
    assert_eq!(claims["access"][0]["actions"].as_array().unwrap().len(), 0);
    let (status, answer) = curl_json(&["-u", "bob:hunter2"], &get);
    assert_eq!(status, "200");
    assert_eq!(answer["token"], answer["access_token"]);
    let token = answer["token"].as_str().unwrap();
    let header = jwt_part(token, 0);
    assert_eq!(header["alg"], "ES256");
    assert!(!header["x5c"].as_array().unwrap().is_empty());
    let claims = jwt_part(token, 1);
    assert_eq!(claims["iss"], "test-issuer");
    assert_eq!(claims["aud"], "test-registry");
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["access"][0]["name"], "tok/app");
    assert_eq!(
        claims["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );

    // The token really opens the registry's API.
    let manifest_url = format!("http://{}/v2/tok/app/manifests/v1", registry.host());
    let bearer = format!("Authorization: Bearer {token}");
    let accept = format!("Accept: {OCI_INDEX}");
    assert_eq!(curl_status(&["-H", &accept], &manifest_url), "401");
    assert_eq!(curl_status(&["-H", &bearer, "-H", &accept], &manifest_url), "200");

    // OAuth2 POST: password and refresh-token grants.
    let form = format!(
        "grant_type=password&username=bob&password=hunter2&service=test-registry&{scope}&access_type=offline"
    );
    let (status, answer) = curl_json(&["-d", &form], &realm);
    assert_eq!(status, "200", "{answer}");
    assert_eq!(answer["refresh_token"], "test-refresh-token-bob");
    let form = "grant_type=refresh_token&refresh_token=test-refresh-token-bob&service=test-registry&scope=repository%3Atok%2Fapp%3Apull";
    let (status, answer) = curl_json(&["-d", form], &realm);
    assert_eq!(status, "200", "{answer}");
    let claims = jwt_part(answer["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["access"][0]["actions"], serde_json::json!(["pull"]));
    let (status, _) = curl_json(&["-d", "grant_type=password&username=bob&password=x"], &realm);
    assert_eq!(status, "401");
}
