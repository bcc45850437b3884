//! os-import under faults, between real registries with a fault-injecting
//! proxy in front of one of them: transient faults (a connection reset
//! mid-blob, 5xx, 429, an upload cut off) are retried and the import ends
//! with identical digests; permanent faults (a blob that is never served,
//! corrupted bytes, refused credentials, a denied push) end in an error
//! record naming the blob and the registry, with no manifest left at the
//! target that points at something missing.

use os_testkit as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::bins::tool;
use support::fault_proxy::{Fault, FaultProxy, Seen};
use support::images::{self, TestImage};
use support::registry::TestRegistry;
use support::schema::{one, records};

const REPOSITORY: &str = "onestream/iam";
const ACCEPT_MANIFESTS: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
const USER: &str = "pusher";
/// Recognizable, so a leak shows in any output.
const SECRET: &str = "Wr0ng-S3cret-4711";

/// A dev registry holding one test image and an empty prod registry.
struct Promotion {
    dev: TestRegistry,
    prod: TestRegistry,
    image: TestImage,
    _dir: tempfile::TempDir,
}

fn single_arch_promotion(seed: &str) -> Promotion {
    let dir = tempfile::tempdir().unwrap();
    let image = images::single_arch(&dir.path().join("layout"), "1", seed);
    promotion(image, dir)
}

fn multi_arch_promotion(seed: &str) -> Promotion {
    let dir = tempfile::tempdir().unwrap();
    let image = images::multi_arch(&dir.path().join("layout"), "1", seed);
    promotion(image, dir)
}

fn promotion(image: TestImage, dir: tempfile::TempDir) -> Promotion {
    let dev = TestRegistry::start();
    images::push(&image, &dev, REPOSITORY, "1");
    Promotion {
        dev,
        prod: TestRegistry::start(),
        image,
        _dir: dir,
    }
}

/// `os-import --to TARGET/onestream SOURCE/onestream/iam@DIGEST`: hosts are
/// the registries' or their proxies'.
fn import(source_host: &str, target_host: &str, digest: &str) -> assert_cmd::Command {
    let mut command = tool("os-import");
    command
        .args(["--to", &format!("{target_host}/onestream")])
        .arg(format!("{source_host}/{REPOSITORY}@{digest}"));
    command
}

fn last_event(record: &Value) -> Value {
    record["history"].as_array().unwrap().last().unwrap().clone()
}

/// The config and layer descriptors of an image manifest: (digest, size).
fn blobs_of(manifest: &Value) -> Vec<(String, u64)> {
    std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().unwrap())
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn parsed_blob(image: &TestImage, digest: &str) -> Value {
    serde_json::from_slice(&image.blob(digest)).unwrap()
}

/// The image's child manifests (empty for a single manifest).
fn children_of(image: &TestImage) -> Vec<String> {
    image.manifest()["manifests"]
        .as_array()
        .map(|children| {
            children
                .iter()
                .map(|c| c["digest"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// One plain HTTP/1.0 request straight to a registry (no proxy, no client
/// of the project's own): status and body.
fn request(registry: &TestRegistry, method: &str, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(registry.host()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {}\r\nAccept: {ACCEPT_MANIFESTS}\r\n\r\n",
        registry.host()
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let status = std::str::from_utf8(&response[..end])
        .unwrap()
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, response[end + 4..].to_vec())
}

fn has_manifest(registry: &TestRegistry, digest: &str) -> bool {
    http_presence(request(registry, "HEAD", &format!("/v2/{REPOSITORY}/manifests/{digest}")).0)
}

fn has_blob(registry: &TestRegistry, digest: &str) -> bool {
    http_presence(request(registry, "HEAD", &format!("/v2/{REPOSITORY}/blobs/{digest}")).0)
}

fn http_presence(status: u16) -> bool {
    match status {
        200 => true,
        404 => false,
        other => panic!("HEAD answered {other}"),
    }
}

/// The blob's bytes at the registry, compared with the layout's.
fn assert_blob_intact(registry: &TestRegistry, image: &TestImage, digest: &str) {
    let (status, body) = request(registry, "GET", &format!("/v2/{REPOSITORY}/blobs/{digest}"));
    assert_eq!(status, 200, "GET blob {digest}");
    assert!(
        body == image.blob(digest),
        "{digest} at the target differs from the source"
    );
}

/// Whatever manifest of the image the target holds has everything it
/// references there too: no reader can find a dangling manifest.
fn assert_nothing_dangling(registry: &TestRegistry, image: &TestImage) {
    let children = children_of(image);
    let manifests: Vec<String> = if children.is_empty() {
        vec![image.digest.clone()]
    } else {
        children.clone()
    };
    let mut complete = Vec::new();
    for manifest in &manifests {
        if has_manifest(registry, manifest) {
            for (blob, _) in blobs_of(&parsed_blob(image, manifest)) {
                assert!(
                    has_blob(registry, &blob),
                    "manifest {manifest} is at the target, blob {blob} is not"
                );
            }
            complete.push(manifest);
        }
    }
    if !children.is_empty() && has_manifest(registry, &image.digest) {
        assert_eq!(
            complete.len(),
            children.len(),
            "the index is at the target, not all its children"
        );
    }
}

/// The requests the proxy saw for one method and target fragment.
fn seen_for<'a>(seen: &'a [Seen], method: &str, fragment: &str) -> Vec<&'a Seen> {
    seen.iter()
        .filter(|s| s.method == method && s.target.contains(fragment))
        .collect()
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// Asserts the import succeeded with the image's digest at the target and
/// every blob intact there; returns its import event.
fn assert_promoted(assert: &assert_cmd::assert::Assert, p: &Promotion, target_host: &str) -> Value {
    let record = one(assert);
    assert_eq!(record["image"], format!("{target_host}/{REPOSITORY}"), "{record}");
    assert_eq!(record["digest"], p.image.digest.as_str());
    let served = images::inspect_raw(&p.prod, REPOSITORY, &p.image.digest);
    assert_eq!(images::sha256_digest(&served), p.image.digest);
    for (blob, _) in blobs_of(&p.image.manifest()) {
        assert_blob_intact(&p.prod, &p.image, &blob);
    }
    last_event(&record)
}

/// The one error record of a failed run (exit 1); the run's stderr comes
/// along for the message on failure.
fn error_of(assert: &assert_cmd::assert::Assert) -> Value {
    let out = records(&assert.get_output().stdout);
    assert_eq!(out.len(), 1, "{out:?}");
    let error = out[0]["error"].clone();
    assert!(
        error.is_object(),
        "expected an error record: {}\nstderr:\n{}",
        out[0],
        String::from_utf8_lossy(&assert.get_output().stderr)
    );
    assert_eq!(error["step"], "import", "{error}");
    error
}

#[test]
fn a_connection_reset_mid_blob_is_retried_and_the_digest_kept() {
    let p = single_arch_promotion("reset-mid-blob");
    let source = FaultProxy::start(&p.dev);
    let (layer, size) = blobs_of(&p.image.manifest())[2].clone();
    let cut_at = (size / 2) as usize;
    let reset = source.add(Fault::reset_response("GET", &format!("/blobs/{layer}"), cut_at).times(1));

    let imported = import(source.host(), p.prod.host(), &p.image.digest)
        .assert()
        .success();

    let event = assert_promoted(&imported, &p, p.prod.host());
    assert_eq!(source.fired(reset), 1);
    // The reset transfer was started over, not given up on or resumed elsewhere.
    assert_eq!(
        seen_for(&source.seen(), "GET", &format!("/blobs/{layer}")).len(),
        2
    );
    assert_eq!(event["blobsCopied"], 3, "{event}");
    let total: u64 = blobs_of(&p.image.manifest()).iter().map(|(_, size)| size).sum();
    assert_eq!(event["bytes"], total, "a restarted transfer counts once: {event}");
}

#[test]
fn server_errors_and_rate_limits_on_an_upload_are_retried() {
    let p = single_arch_promotion("upload-5xx-429");
    let target = FaultProxy::start(&p.prod);
    let (layer, _) = blobs_of(&p.image.manifest())[2].clone();
    // Opening an upload session: retried by the request itself.
    let unavailable = target.add(Fault::status("POST", "/blobs/uploads/", 503).times(1));
    let throttled = target.add(
        Fault::status("POST", "/blobs/uploads/", 429)
            .header("Retry-After", "1")
            .times(1),
    );
    // The streamed PUT of a layer cannot be replayed: the whole transfer
    // starts over.
    let put_failed = target.add(Fault::status("PUT", hex_of(&layer), 503).times(1));

    // One transfer at a time: upload sessions all open on the same path, so
    // only then is the POST after the 429 its retry (not another blob's).
    let imported = import(p.dev.host(), target.host(), &p.image.digest)
        .args(["--jobs", "1"])
        .assert()
        .success();

    assert_promoted(&imported, &p, target.host());
    assert_eq!(
        [
            target.fired(unavailable),
            target.fired(throttled),
            target.fired(put_failed)
        ],
        [1, 1, 1]
    );
    let seen = target.seen();
    let posts = seen_for(&seen, "POST", "/blobs/uploads/");
    let after_429 = posts
        .iter()
        .position(|s| s.fault == Some(throttled))
        .expect("the 429 was answered");
    let waited = posts[after_429 + 1].at - posts[after_429].at;
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 honoured; waited {waited:?}"
    );
    assert_eq!(seen_for(&seen, "PUT", hex_of(&layer)).len(), 2, "{seen:#?}");
}

#[test]
fn retry_after_on_a_blob_upload_is_honoured() {
    let p = single_arch_promotion("upload-retry-after");
    let target = FaultProxy::start(&p.prod);
    let (layer, _) = blobs_of(&p.image.manifest())[2].clone();
    let throttled = target.add(
        Fault::status("PUT", hex_of(&layer), 429)
            .header("Retry-After", "2")
            .times(1),
    );

    let imported = import(p.dev.host(), target.host(), &p.image.digest)
        .assert()
        .success();

    assert_promoted(&imported, &p, target.host());
    assert_eq!(target.fired(throttled), 1);
    // The transfer starts over with a new upload session: the first request
    // after the 429 must wait what the registry asked for.
    // Other blobs move concurrently: follow this layer's own PUTs.
    let seen = target.seen();
    let puts = seen_for(&seen, "PUT", hex_of(&layer));
    let refused = puts.iter().position(|s| s.fault == Some(throttled)).unwrap();
    let waited = puts[refused + 1].at - puts[refused].at;
    assert!(
        waited >= Duration::from_secs(2),
        "the layer's next PUT came {waited:?} after a 429 with Retry-After: 2: {:?}",
        puts[refused + 1]
    );
}

#[test]
fn an_interrupted_upload_restarts_in_a_fresh_session() {
    let p = single_arch_promotion("interrupted-upload");
    let target = FaultProxy::start(&p.prod);
    let (layer, size) = blobs_of(&p.image.manifest())[2].clone();
    let cut_at = (size / 2) as usize;
    let interrupted = target.add(Fault::reset_request("PUT", hex_of(&layer), cut_at).times(1));

    let imported = import(p.dev.host(), target.host(), &p.image.digest)
        .assert()
        .success();

    let event = assert_promoted(&imported, &p, target.host());
    assert_eq!(target.fired(interrupted), 1);
    let seen = target.seen();
    let puts = seen_for(&seen, "PUT", hex_of(&layer));
    assert_eq!(puts.len(), 2, "{seen:#?}");
    let session = |s: &Seen| s.target.split('?').next().unwrap().to_string();
    assert_ne!(
        session(puts[0]),
        session(puts[1]),
        "the half-written session is abandoned, not appended to"
    );
    assert_eq!(event["blobsCopied"], 3, "{event}");
    let total: u64 = blobs_of(&p.image.manifest()).iter().map(|(_, size)| size).sum();
    assert_eq!(event["bytes"], total, "{event}");
}

/// A multi-arch promotion where every GET of the last layer of the last
/// platform fails with 500 at the source: the import gives up. Returns the
/// proxy (still failing), the failing layer and its size.
fn fail_on_last_layer(p: &Promotion) -> (FaultProxy, String, u64) {
    let source = FaultProxy::start(&p.dev);
    let last_child = children_of(&p.image).pop().unwrap();
    let (layer, size) = blobs_of(&parsed_blob(&p.image, &last_child)).pop().unwrap();
    // Retry-After: 0 keeps the many retries of a permanent fault fast.
    let broken = source.add(Fault::status("GET", &format!("/blobs/{layer}"), 500).header("Retry-After", "0"));

    let failed = import(source.host(), p.prod.host(), &p.image.digest)
        .assert()
        .code(1);

    let error = error_of(&failed);
    assert_eq!(error["code"], "registry-error", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(&layer), "names the blob: {message}");
    assert!(message.contains(source.host()), "names the registry: {message}");
    assert!(message.contains("500"), "{message}");
    // Retried (so it was treated as transient), and then given up on: at
    // most the request's attempts (5) for each of the blob's transfers (3).
    let fired = source.fired(broken);
    assert!((2..=15).contains(&fired), "{fired} GETs of the broken blob");
    assert!(
        !has_manifest(&p.prod, &p.image.digest),
        "the index was pushed without all its children"
    );
    assert!(
        !has_manifest(&p.prod, &last_child),
        "the platform manifest was pushed without its layer"
    );
    assert_nothing_dangling(&p.prod, &p.image);
    (source, layer, size)
}

#[test]
fn a_blob_the_source_never_serves_fails_the_record_and_leaves_no_manifest() {
    let p = multi_arch_promotion("permanent-500");
    fail_on_last_layer(&p);
}

#[test]
fn a_re_run_after_a_failure_copies_only_what_was_missing() {
    let p = multi_arch_promotion("re-run");
    let (source, layer, _) = fail_on_last_layer(&p);
    source.heal();
    source.clear_seen();
    // What the failed run left behind. The broken platform image is
    // missing; a sibling may or may not have been pushed before the failure
    // cancelled the record (that is timing). The re-run must copy exactly
    // what is missing, whichever it is.
    let missing_manifests: Vec<String> = children_of(&p.image)
        .into_iter()
        .filter(|child| !has_manifest(&p.prod, child))
        .collect();
    let references: Vec<(String, u64)> = missing_manifests
        .iter()
        .flat_map(|child| blobs_of(&parsed_blob(&p.image, child)))
        .collect();
    let missing_blobs: std::collections::BTreeMap<String, u64> = references
        .iter()
        .filter(|(blob, _)| !has_blob(&p.prod, blob))
        .cloned()
        .collect();
    assert!(missing_blobs.contains_key(&layer), "{missing_blobs:?}");

    let imported = import(source.host(), p.prod.host(), &p.image.digest)
        .assert()
        .success();

    let record = one(&imported);
    assert_eq!(record["digest"], p.image.digest.as_str());
    assert_eq!(
        images::sha256_digest(&images::inspect_raw(&p.prod, REPOSITORY, &p.image.digest)),
        p.image.digest
    );
    let event = last_event(&record);
    assert_eq!(event["blobsCopied"], missing_blobs.len() as u64, "{event}");
    assert_eq!(event["bytes"], missing_blobs.values().sum::<u64>(), "{event}");
    assert_eq!(
        event["blobsSkipped"],
        (references.len() - missing_blobs.len()) as u64,
        "{event}"
    );
    // The missing platform manifests and the index.
    assert_eq!(event["manifests"], missing_manifests.len() as u64 + 1, "{event}");
    let mut fetched: Vec<String> = seen_for(&source.seen(), "GET", "/blobs/")
        .iter()
        .map(|s| s.target.clone())
        .collect();
    fetched.sort();
    let expected: Vec<String> = missing_blobs
        .keys()
        .map(|blob| format!("/v2/{REPOSITORY}/blobs/{blob}"))
        .collect();
    assert_eq!(fetched, expected, "only the missing blobs are read again");
    assert_blob_intact(&p.prod, &p.image, &layer);
    assert_nothing_dangling(&p.prod, &p.image);
}

#[test]
fn corrupted_blob_bytes_are_refused_and_nothing_is_committed() {
    let p = single_arch_promotion("corrupt");
    let source = FaultProxy::start(&p.dev);
    let (layer, size) = blobs_of(&p.image.manifest())[2].clone();
    let corrupt = source.add(Fault::corrupt_response(
        "GET",
        &format!("/blobs/{layer}"),
        (size / 2) as usize,
    ));

    let failed = import(source.host(), p.prod.host(), &p.image.digest)
        .assert()
        .code(1);

    // os-import hashes every blob as it streams: the mismatch is its own
    // finding about the source, not a refusal by the target.
    let error = error_of(&failed);
    assert_eq!(error["code"], "digest-mismatch", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(&layer), "names the blob: {message}");
    assert!(
        message.contains(source.host()),
        "names the source registry: {message}"
    );
    assert!(source.fired(corrupt) >= 1);
    assert!(!has_blob(&p.prod, &layer), "corrupt bytes were committed");
    assert!(
        !has_manifest(&p.prod, &p.image.digest),
        "the manifest was pushed without its layer"
    );
}

#[test]
fn a_source_that_always_breaks_off_mid_blob_is_named_in_the_error() {
    let p = single_arch_promotion("reset-always");
    let source = FaultProxy::start(&p.dev);
    let (layer, size) = blobs_of(&p.image.manifest())[2].clone();
    let reset = source.add(Fault::reset_response(
        "GET",
        &format!("/blobs/{layer}"),
        (size / 2) as usize,
    ));

    let failed = import(source.host(), p.prod.host(), &p.image.digest)
        .assert()
        .code(1);

    let error = error_of(&failed);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(&layer), "names the blob: {message}");
    assert!(
        message.contains(&format!("registry {}", source.host())),
        "names the registry that broke off, the source: {message}"
    );
    assert!(source.fired(reset) >= 2, "retried before giving up");
    assert!(!has_manifest(&p.prod, &p.image.digest));
}

/// The run's stdout and stderr hold neither the secret nor its basic-auth
/// encoding.
fn assert_no_secret(assert: &assert_cmd::assert::Assert) {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"));
    let output = assert.get_output();
    for (name, text) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let text = String::from_utf8_lossy(text);
        assert!(!text.contains(SECRET), "the password is in {name}:\n{text}");
        assert!(
            !text.contains(&encoded),
            "the basic-auth header is in {name}:\n{text}"
        );
    }
}

#[test]
fn credentials_the_target_refuses_are_unauthorized_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let image = images::single_arch(&dir.path().join("layout"), "1", "refused");
    let dev = TestRegistry::start();
    images::push(&image, &dev, REPOSITORY, "1");
    let prod = TestRegistry::start_tls_basic(USER, "the-right-password");

    let failed = tool("os-import")
        .args(["--to", &format!("{}/onestream", prod.host())])
        .arg("--ca-file")
        .arg(prod.ca_file().unwrap())
        .args(["--username", USER, "--password-stdin", "-vv"])
        .arg(format!("{}/{REPOSITORY}@{}", dev.host(), image.digest))
        .write_stdin(format!("{SECRET}\n"))
        .assert()
        .code(1);

    let error = error_of(&failed);
    assert_eq!(error["code"], "unauthorized", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(prod.host()),
        "names the target registry: {message}"
    );
    assert!(message.contains("401"), "{message}");
    assert_no_secret(&failed);
}

#[test]
fn a_push_the_target_denies_is_unauthorized_and_the_password_never_shown() {
    let p = single_arch_promotion("denied");
    let target = FaultProxy::start(&p.prod);
    // The target asks for basic auth, accepts the credentials for reading,
    // and denies the push.
    target.add(
        Fault::status("GET", "/v2/", 401)
            .exact()
            .header("WWW-Authenticate", r#"Basic realm="fault-proxy""#),
    );
    let denied = target.add(Fault::status("POST", "/blobs/uploads/", 403));

    let failed = tool("os-import")
        .args(["--to", &format!("{}/onestream", target.host())])
        .args(["--username", USER, "--password-stdin", "-vv"])
        // One transfer at a time, so one denied request means no retry
        // (concurrent blobs would each meet the denial once).
        .args(["--jobs", "1"])
        .arg(format!("{}/{REPOSITORY}@{}", p.dev.host(), p.image.digest))
        .write_stdin(format!("{SECRET}\n"))
        .assert()
        .code(1);

    let error = error_of(&failed);
    assert_eq!(error["code"], "unauthorized", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(target.host()),
        "names the target registry: {message}"
    );
    assert!(message.contains("403"), "{message}");
    assert_eq!(target.fired(denied), 1, "a denial is not retried");
    // The credentials were really presented, so the denial is about them.
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"))
    );
    assert!(
        target
            .seen()
            .iter()
            .any(|s| s.authorization.as_deref() == Some(basic.as_str())),
        "os-import never sent the credentials"
    );
    assert_no_secret(&failed);
    assert!(!has_manifest(&p.prod, &p.image.digest));
}
