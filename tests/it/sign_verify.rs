//! os-sign and os-verify against a real registry, with the real cosign as
//! the peer in both directions, and every negative case with its reason.

use os_testkit as support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::bins::tool;
use support::cosign::{cosign, cosign_ok};
use support::images;
use support::registry::TestRegistry;
use support::schema::{one, stdout};

pub(crate) const PASSWORD: &str = "correct horse";

/// A registry and a scratch directory (cosign's HOME), shared with the
/// attestation tests.
pub(crate) struct Setup {
    pub(crate) registry: TestRegistry,
    pub(crate) dir: tempfile::TempDir,
}

impl Setup {
    pub(crate) fn new() -> Setup {
        Setup {
            registry: TestRegistry::start(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Pushes a fresh image and returns its os-digest record (one line).
    pub(crate) fn image(&self, repo: &str, seed: &str) -> (String, String) {
        let image = images::single_arch(&self.path(&format!("layout-{seed}")), "1", seed);
        images::push(&image, &self.registry, repo, "1");
        let output = tool("os-digest")
            .arg(format!("{}/{repo}:1", self.registry.host()))
            .assert()
            .success();
        (
            String::from_utf8(output.get_output().stdout.clone()).unwrap(),
            image.digest,
        )
    }

    pub(crate) fn pinned(&self, repo: &str, digest: &str) -> String {
        format!("{}/{repo}@{digest}", self.registry.host())
    }

    pub(crate) fn our_keys(&self, prefix: &str) -> (PathBuf, PathBuf) {
        tool("os-sign")
            .args(["generate-key-pair", "--output-key-prefix"])
            .arg(self.path(prefix))
            .env("COSIGN_PASSWORD", PASSWORD)
            .assert()
            .success();
        (
            self.path(&format!("{prefix}.key")),
            self.path(&format!("{prefix}.pub")),
        )
    }

    pub(crate) fn cosign_keys(&self, prefix: &str) -> (PathBuf, PathBuf) {
        let prefix_path = self.path(prefix);
        cosign_ok(
            &[
                "generate-key-pair",
                "--output-key-prefix",
                prefix_path.to_str().unwrap(),
            ],
            PASSWORD,
            self.dir.path(),
        );
        (
            self.path(&format!("{prefix}.key")),
            self.path(&format!("{prefix}.pub")),
        )
    }

    pub(crate) fn cosign_sign(&self, key: &Path, reference: &str, extra: &[&str]) {
        let mut args = vec![
            "sign",
            "--yes",
            "--key",
            key.to_str().unwrap(),
            "--tlog-upload=false",
            "--allow-http-registry",
        ];
        args.extend_from_slice(extra);
        args.push(reference);
        cosign_ok(&args, PASSWORD, self.dir.path());
    }

    pub(crate) fn cosign_verify(
        &self,
        public: &Path,
        reference: &str,
        extra: &[&str],
    ) -> std::process::Output {
        let mut args = vec![
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
        ];
        args.extend_from_slice(extra);
        args.push(reference);
        cosign(&args, PASSWORD, self.dir.path())
    }

    pub(crate) fn sign(&self, key: &Path, input: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
        tool("os-sign")
            .arg("--key")
            .arg(key)
            .args(extra)
            .env("COSIGN_PASSWORD", PASSWORD)
            .write_stdin(input.to_string())
            .assert()
    }

    pub(crate) fn verify(&self, public: &Path, input: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
        tool("os-verify")
            .arg("--key")
            .arg(public)
            .args(extra)
            .write_stdin(input.to_string())
            .assert()
    }
}

#[test]
fn our_signature_verifies_with_cosign_and_cosigns_with_us() {
    let s = Setup::new();
    let (record, digest) = s.image("onestream/iam", "iam");
    let (key, public) = s.our_keys("ours");

    let signed = s.sign(&key, &record, &["-a", "pipeline=iam-ci"]).success();
    let signed_record = one(&signed);
    let event = signed_record["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(event["step"], "sign");
    assert_eq!(event["added"], true);
    assert!(event["keyId"].as_str().unwrap().starts_with("sha256:"));
    assert!(
        event["signature"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{}.sig", digest.replace(':', "-")))
    );

    // The real cosign accepts it, with our annotation, and rejects a wrong one.
    let reference = s.pinned("onestream/iam", &digest);
    let output = s.cosign_verify(&public, &reference, &["-a", "pipeline=iam-ci"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !s.cosign_verify(&public, &reference, &["-a", "pipeline=other"])
            .status
            .success()
    );

    // And so do we, in the pipe.
    let verified = one(&s
        .verify(&public, &stdout(&signed), &["-a", "pipeline=iam-ci"])
        .success());
    let event = verified["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(event["step"], "verify");
    assert_eq!(event["verified"], true);
    assert_eq!(event["keyId"], signed_record["history"][1]["keyId"]);

    // Signing again with the same key and annotations adds nothing.
    let again = one(&s.sign(&key, &record, &["-a", "pipeline=iam-ci"]).success());
    assert_eq!(
        again["history"].as_array().unwrap().last().unwrap()["added"],
        false
    );
    let sig_manifest = images::inspect_raw(
        &s.registry,
        "onestream/iam",
        &format!("{}.sig", digest.replace(':', "-")),
    );
    let manifest: Value = serde_json::from_slice(&sig_manifest).unwrap();
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);

    // A key made by os-sign signs with cosign too.
    s.cosign_sign(&key, &reference, &["-a", "by=cosign"]);
    let manifest: Value = serde_json::from_slice(&images::inspect_raw(
        &s.registry,
        "onestream/iam",
        &format!("{}.sig", digest.replace(':', "-")),
    ))
    .unwrap();
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "cosign appended to our .sig manifest"
    );
    one(&s
        .verify(&public, &stdout(&signed), &["-a", "by=cosign"])
        .success());
}

#[test]
fn cosign_signatures_and_keys_work_with_os_sign_and_os_verify() {
    let s = Setup::new();
    let (record, digest) = s.image("team/auth", "auth");
    let (cosign_key, cosign_public) = s.cosign_keys("theirs");
    let reference = s.pinned("team/auth", &digest);

    // cosign signs; we verify, annotations included.
    s.cosign_sign(&cosign_key, &reference, &["-a", "team=auth", "-a", "stage=dev"]);
    one(&s
        .verify(&cosign_public, &record, &["-a", "team=auth", "-a", "stage=dev"])
        .success());
    let failed = one(&s.verify(&cosign_public, &record, &["-a", "team=other"]).code(1));
    assert_eq!(failed["error"]["code"], "annotation-mismatch");

    // Ad hoc, no stdin.
    let adhoc = tool("os-verify")
        .arg("--key")
        .arg(&cosign_public)
        .arg(&reference)
        .assert()
        .success();
    assert_eq!(one(&adhoc)["digest"], digest.as_str());

    // A cosign key signs with os-sign; cosign verifies; the .sig now has both.
    let _ = one(&s.sign(&cosign_key, &record, &[]).success());
    // Same key, but no annotations: a different payload, so a new layer.
    let output = s.cosign_verify(&cosign_public, &reference, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // After `cosign copy` to another registry, the signature still verifies there.
    let prod = TestRegistry::start();
    cosign_ok(
        &[
            "copy",
            "--allow-http-registry",
            &reference,
            &format!("{}/team/auth", prod.host()),
        ],
        PASSWORD,
        s.dir.path(),
    );
    let moved = format!("{}/team/auth@{digest}", prod.host());
    one(&tool("os-verify")
        .arg("--key")
        .arg(&cosign_public)
        .arg(&moved)
        .assert()
        .success());
    // Identity: signed for the dev registry, same repository path: default passes,
    // exact refuses, exact with a remap passes.
    let exact = tool("os-verify")
        .arg("--key")
        .arg(&cosign_public)
        .args(["--identity", "exact"])
        .arg(&moved)
        .assert()
        .code(1);
    assert_eq!(one(&exact)["error"]["code"], "identity-mismatch");
    let remap = format!("{}={}", s.registry.host(), prod.host());
    one(&tool("os-verify")
        .arg("--key")
        .arg(&cosign_public)
        .args(["--identity", "exact", "--identity-remap", &remap])
        .arg(&moved)
        .assert()
        .success());
}

#[test]
fn cosign_oci_1_1_referrers_are_found_without_any_flag() {
    let s = Setup::new();
    let (record, digest) = s.image("ref/app", "referrer");
    let (key, public) = s.cosign_keys("ref");
    let reference = s.pinned("ref/app", &digest);
    s.cosign_sign(
        &key,
        &reference,
        &["--registry-referrers-mode=oci-1-1", "-a", "mode=referrer"],
    );
    // distribution 2.8 has no Referrers API: cosign wrote the tag fallback.
    let fallback: Value = serde_json::from_slice(&images::inspect_raw(
        &s.registry,
        "ref/app",
        &digest.replace(':', "-"),
    ))
    .unwrap();
    assert_eq!(
        fallback["manifests"][0]["artifactType"],
        "application/vnd.dev.cosign.artifact.sig.v1+json"
    );
    let output = s.cosign_verify(&public, &reference, &["--experimental-oci11"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verified = one(&s.verify(&public, &record, &["-a", "mode=referrer"]).success());
    let event = verified["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(event["verified"], true);
    // A wrong key still fails, with its reason.
    let (_, stranger) = s.our_keys("stranger");
    assert_eq!(
        one(&s.verify(&stranger, &record, &[]).code(1))["error"]["code"],
        "key-mismatch"
    );
}

// Every way a signature can be wrong has its reason: one test per way.

/// An image signed by `signer`, the `stranger`'s public key beside it, and
/// the signature manifest cosign's tag holds.
struct Signed {
    s: Setup,
    record: String,
    digest: String,
    key: PathBuf,
    public: PathBuf,
    stranger: PathBuf,
    signature_manifest: Value,
    payload_digest: String,
}

fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

impl Signed {
    fn new() -> Signed {
        let s = Setup::new();
        let (record, digest) = s.image("neg/app", "neg");
        let (key, public) = s.our_keys("signer");
        let (_, stranger) = s.our_keys("stranger");
        s.sign(&key, &record, &[]).success();
        let signature_manifest: Value =
            serde_json::from_slice(&images::inspect_raw(&s.registry, "neg/app", &sig_tag(&digest))).unwrap();
        let payload_digest = signature_manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        Signed {
            s,
            record,
            digest,
            key,
            public,
            stranger,
            signature_manifest,
            payload_digest,
        }
    }
}

#[test]
fn an_unsigned_image_has_no_signature() {
    let s = Setup::new();
    let (record, _) = s.image("neg/app", "neg");
    let (_, public) = s.our_keys("signer");
    assert_eq!(
        one(&s.verify(&public, &record, &[]).code(1))["error"]["code"],
        "no-signature"
    );
}

#[test]
fn a_signature_by_another_key_is_a_key_mismatch_and_keeps_the_digest() {
    let t = Signed::new();
    let failed = one(&t.s.verify(&t.stranger, &t.record, &[]).code(1));
    assert_eq!(failed["error"]["code"], "key-mismatch");
    assert_eq!(
        failed["digest"],
        t.digest.as_str(),
        "error records keep the digest"
    );
}

#[test]
fn a_signature_copied_onto_another_digest_does_not_sign_it() {
    let t = Signed::new();
    let (other_record, other_digest) = t.s.image("neg/other", "other");
    let host = t.s.registry.host().to_string();
    images::skopeo_copy(
        &format!("docker://{host}/neg/app:{}", sig_tag(&t.digest)),
        &format!("docker://{host}/neg/other:{}", sig_tag(&other_digest)),
    );
    let failed = one(&t
        .s
        .verify(&t.public, &other_record, &["--identity", "any"])
        .code(1));
    assert_eq!(failed["error"]["code"], "digest-mismatch");
}

#[test]
fn a_signature_annotation_that_is_not_base64_is_malformed() {
    let t = Signed::new();
    let mut garbage = t.signature_manifest.clone();
    garbage["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] =
        Value::from("!!!not base64!!!");
    put_manifest(&t.s.registry, "neg/app", &sig_tag(&t.digest), &garbage);
    assert_eq!(
        one(&t.s.verify(&t.public, &t.record, &[]).code(1))["error"]["code"],
        "malformed-signature"
    );
}

/// The payload with one byte changed.
fn changed_payload(t: &Signed) -> Vec<u8> {
    let mut changed = fetch_blob(&t.s.registry, "neg/app", &t.payload_digest);
    let position = changed.iter().position(|b| *b == b'c').unwrap();
    changed[position] = b'C';
    changed
}

#[test]
fn a_payload_changed_by_one_byte_no_longer_verifies() {
    // Pushed as a new blob, the manifest pointing at it, the signature kept.
    let t = Signed::new();
    let changed_digest = push_blob(&t.s.registry, "neg/app", &changed_payload(&t));
    let mut tampered = t.signature_manifest.clone();
    tampered["layers"][0]["digest"] = Value::from(changed_digest);
    put_manifest(&t.s.registry, "neg/app", &sig_tag(&t.digest), &tampered);
    assert_eq!(
        one(&t.s.verify(&t.public, &t.record, &[]).code(1))["error"]["code"],
        "key-mismatch"
    );
}

#[test]
fn payload_bytes_that_do_not_match_their_digest_are_tampered() {
    // The registry's storage tampered with behind its back.
    let t = Signed::new();
    one(&t.s.verify(&t.public, &t.record, &[]).success());
    let hex = t.payload_digest.trim_start_matches("sha256:");
    let data = t.s.registry.storage_dir().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    std::fs::write(&data, changed_payload(&t)).unwrap();
    let failed = one(&t.s.verify(&t.public, &t.record, &[]).code(1));
    assert_eq!(failed["error"]["code"], "malformed-signature");
    assert!(
        failed["error"]["message"].as_str().unwrap().contains("tampered"),
        "{failed}"
    );
}

#[test]
fn a_deleted_signature_tag_is_no_signature() {
    let t = Signed::new();
    delete_tag(&t.s.registry, "neg/app", &sig_tag(&t.digest));
    assert_eq!(
        one(&t.s.verify(&t.public, &t.record, &[]).code(1))["error"]["code"],
        "no-signature"
    );
}

#[test]
fn a_signature_for_another_repository_path_is_an_identity_mismatch() {
    let t = Signed::new();
    let host = t.s.registry.host().to_string();
    let (third_record, third_digest) = t.s.image("neg/third", "third");
    t.s.sign(&t.key, &third_record, &[]).success();
    copy_sig(&t.s.registry, "neg/third", "neg/fourth", &sig_tag(&third_digest));
    let third = TestRecord::moved(&third_record, &format!("{host}/neg/fourth"));
    // neg/fourth has no image manifest, but verification is by digest and
    // only reads the signature.
    let failed = one(&t.s.verify(&t.public, &third, &[]).code(1));
    assert_eq!(failed["error"]["code"], "identity-mismatch");
    one(&t.s.verify(&t.public, &third, &["--identity", "any"]).success());
}

#[test]
fn error_records_pass_through_untouched_with_exit_1() {
    let s = Setup::new();
    let (record, _) = s.image("neg/app", "neg");
    let (_, public) = s.our_keys("signer");
    let (_, stranger) = s.our_keys("stranger");
    let passed = s
        .verify(&public, &stdout(&s.verify(&stranger, &record, &[]).code(1)), &[])
        .code(1);
    assert_eq!(one(&passed)["error"]["code"], "no-signature");
}

struct TestRecord;

impl TestRecord {
    fn moved(record: &str, image: &str) -> String {
        let mut value: Value = serde_json::from_str(record.trim()).unwrap();
        value["image"] = Value::from(image);
        format!("{value}\n")
    }
}

fn curl(args: &[&str]) -> Vec<u8> {
    let output = std::process::Command::new("curl")
        .arg("-sfS")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn put_manifest(registry: &TestRegistry, repo: &str, tag: &str, manifest: &Value) {
    let body = serde_json::to_vec(manifest).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &format!("@{}", file.path().display()),
        &format!("http://{}/v2/{repo}/manifests/{tag}", registry.host()),
    ]);
}

fn fetch_blob(registry: &TestRegistry, repo: &str, digest: &str) -> Vec<u8> {
    curl(&[
        "-L",
        &format!("http://{}/v2/{repo}/blobs/{digest}", registry.host()),
    ])
}

fn push_blob(registry: &TestRegistry, repo: &str, bytes: &[u8]) -> String {
    let digest = images::sha256_digest(bytes);
    let headers = String::from_utf8(curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        &format!("http://{}/v2/{repo}/blobs/uploads/", registry.host()),
    ]))
    .unwrap();
    let location = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .unwrap()
        .trim()
        .to_string();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let separator = if location.contains('?') { '&' } else { '?' };
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.path().display()),
        &format!("{location}{separator}digest={digest}"),
    ]);
    digest
}

fn delete_tag(registry: &TestRegistry, repo: &str, tag: &str) {
    // distribution deletes manifests by digest; the tag goes with it.
    let manifest = images::inspect_raw(registry, repo, tag);
    let digest = images::sha256_digest(&manifest);
    curl(&[
        "-X",
        "DELETE",
        &format!("http://{}/v2/{repo}/manifests/{digest}", registry.host()),
    ]);
}

fn copy_sig(registry: &TestRegistry, from: &str, to: &str, tag: &str) {
    let host = registry.host();
    images::skopeo_copy(
        &format!("docker://{host}/{from}:{tag}"),
        &format!("docker://{host}/{to}:{tag}"),
    );
}

#[test]
fn keys_from_env_and_public_key_and_refusals() {
    let s = Setup::new();
    let (key, public) = s.our_keys("k");
    // Never overwrite.
    tool("os-sign")
        .args(["generate-key-pair", "--output-key-prefix"])
        .arg(s.path("k"))
        .env("COSIGN_PASSWORD", PASSWORD)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("refusing to overwrite"));
    // public-key prints the same PEM generate-key-pair wrote.
    let printed = tool("os-sign")
        .args(["public-key", "--key"])
        .arg(&key)
        .env("COSIGN_PASSWORD", PASSWORD)
        .assert()
        .success();
    assert_eq!(stdout(&printed), std::fs::read_to_string(&public).unwrap());
    // Wrong password: a clear error, the password never echoed.
    let wrong = tool("os-sign")
        .args(["public-key", "--key"])
        .arg(&key)
        .env("COSIGN_PASSWORD", "not-the-password")
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&wrong.get_output().stderr).to_string();
    assert!(
        stderr.contains("wrong password") && !stderr.contains("not-the-password"),
        "{stderr}"
    );
    // env://VAR holding the PEM.
    let (record, _) = s.image("env/app", "env");
    let signed = tool("os-sign")
        .args(["--key", "env://SIGNING_KEY"])
        .env("SIGNING_KEY", std::fs::read_to_string(&key).unwrap())
        .env("COSIGN_PASSWORD", PASSWORD)
        .write_stdin(record)
        .assert()
        .success();
    one(&s.verify(&public, &stdout(&signed), &[]).success());
    // Records without a digest, layouts: error records, not crashes.
    let failed = s.sign(&key, "{\"image\":\"127.0.0.1:1/x\"}\n", &[]).code(1);
    assert_eq!(one(&failed)["error"]["code"], "missing-field");
    let layout = format!(
        "{{\"image\":\"oci:/tmp/x\",\"digest\":\"sha256:{}\"}}\n",
        "a".repeat(64)
    );
    assert_eq!(
        one(&s.sign(&key, &layout, &[]).code(1))["error"]["code"],
        "unsupported"
    );
    // A tag is not something os-verify can check.
    tool("os-verify")
        .arg("--key")
        .arg(&public)
        .arg("127.0.0.1:1/x:1")
        .assert()
        .code(1);
}

/// No Key Vault can run here: a protocol-faithful stand-in (real P-256 key,
/// the documented REST calls and token endpoint) plays it.
#[test]
fn azure_key_vault_signs_and_cosign_verifies_with_the_vaults_public_key() {
    use support::keyvault::{Curve, KeyVaultStandIn};
    let s = Setup::new();
    let vault = KeyVaultStandIn::start(&[("cosign", Curve::P256)]);
    vault.force_leading_zero(true);
    let (record, digest) = s.image("kv/app", "vault");
    let key = format!("azurekms://{}/cosign", vault.host());
    let azure_env = |command: &mut assert_cmd::Command| {
        command
            .env("AZURE_TENANT_ID", vault.tenant_id())
            .env("AZURE_CLIENT_ID", vault.client_id())
            .env("AZURE_CLIENT_SECRET", vault.client_secret())
            .env("AZURE_AUTHORITY_HOST", vault.authority())
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .env_remove("IDENTITY_ENDPOINT");
    };
    let mut sign = tool("os-sign");
    azure_env(&mut sign);
    let signed = sign
        .args([
            "--key",
            &key,
            "--azure-credential",
            "environment",
            "-a",
            "signer=vault",
        ])
        .write_stdin(record)
        .assert()
        .success();
    let signed_record = one(&signed);
    assert_eq!(
        vault.sign_requests(),
        1,
        "the vault signed (the private key never left it)"
    );
    let event = signed_record["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(event["signer"], key.as_str());

    // cosign verifies with the vault's public key, as exported by os-sign.
    let mut export = tool("os-sign");
    azure_env(&mut export);
    let pem = export.args(["public-key", "--key", &key]).assert().success();
    let public = s.path("vault.pub");
    std::fs::write(&public, &pem.get_output().stdout).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&pem.get_output().stdout).trim(),
        vault.public_key_pem("cosign").trim()
    );
    let output = s.cosign_verify(&public, &s.pinned("kv/app", &digest), &["-a", "signer=vault"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // os-verify with the vault key itself: one key fetch, local verification.
    let before = vault.sign_requests();
    let mut verify = tool("os-verify");
    azure_env(&mut verify);
    verify
        .args(["--key", &key])
        .write_stdin(stdout(&signed))
        .assert()
        .success();
    assert_eq!(
        vault.sign_requests(),
        before,
        "verification never calls the vault's sign or verify"
    );

    // Wrong credentials: a clear refusal, the secret never shown.
    let refused = tool("os-sign")
        .args(["--key", &key, "--azure-credential", "environment"])
        .env("AZURE_TENANT_ID", vault.tenant_id())
        .env("AZURE_CLIENT_ID", vault.client_id())
        .env("AZURE_CLIENT_SECRET", "definitely-wrong-secret")
        .env("AZURE_AUTHORITY_HOST", vault.authority())
        .write_stdin("")
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).to_string();
    assert!(!stderr.contains("definitely-wrong-secret"), "{stderr}");
}

/// Found with a Key Vault stand-in: cosign assumes sha256 for every key
/// file, so it refuses a P-384 vault key's ES384 signatures unless told
/// `--signature-digest-algorithm sha384`; `os-sign public-key` says so.
#[test]
fn a_p384_vault_keys_signatures_verify_with_cosign_given_sha384() {
    use support::keyvault::{Curve, KeyVaultStandIn};
    let s = Setup::new();
    let vault = KeyVaultStandIn::start(&[("p384", Curve::P384)]);
    let (record, digest) = s.image("kv/p384", "p384");
    let key = format!("azurekms://{}/p384", vault.host());
    let azure_env = |mut command: assert_cmd::Command| {
        command
            .env("AZURE_TENANT_ID", vault.tenant_id())
            .env("AZURE_CLIENT_ID", vault.client_id())
            .env("AZURE_CLIENT_SECRET", vault.client_secret())
            .env("AZURE_AUTHORITY_HOST", vault.authority());
        command
    };
    azure_env(tool("os-sign"))
        .args(["--key", &key, "--azure-credential", "environment"])
        .write_stdin(record)
        .assert()
        .success();
    let exported = azure_env(tool("os-sign"))
        .args(["public-key", "--key", &key])
        .assert()
        .success();
    let note = String::from_utf8_lossy(&exported.get_output().stderr).to_string();
    assert!(note.contains("--signature-digest-algorithm sha384"), "{note}");
    let public = s.path("p384.pub");
    std::fs::write(&public, &exported.get_output().stdout).unwrap();

    let pinned = s.pinned("kv/p384", &digest);
    let refused = s.cosign_verify(&public, &pinned, &[]);
    assert!(!refused.status.success(), "cosign assumes sha256 for a key file");
    let accepted = s.cosign_verify(&public, &pinned, &["--signature-digest-algorithm", "sha384"]);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}

/// An air-gapped site gets an OCI layout with the signatures: os-verify
/// checks them there, with the registry gone.
#[test]
fn offline_verification_against_an_exported_layout() {
    let s = Setup::new();
    let (record, digest) = s.image("air/app", "airgap");
    let (key, public) = s.our_keys("air");
    let (cosign_key, cosign_public) = s.cosign_keys("aircosign");
    let signed = stdout(&s.sign(&key, &record, &[]).success());
    s.cosign_sign(
        &cosign_key,
        &s.pinned("air/app", &digest),
        &["--registry-referrers-mode=oci-1-1"],
    );
    // Export with the peer (skopeo), tags as they are in the registry.
    let layout = s.path("airgap");
    let host = s.registry.host().to_string();
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    let fallback_tag = digest.replace(':', "-");
    images::skopeo_copy(
        &format!("docker://{host}/air/app:{sig_tag}"),
        &format!("oci:{}:{sig_tag}", layout.display()),
    );
    // skopeo refuses to copy the referrers tag-fallback index ("manifest list
    // must be converted"), so that part is written with our layout code, as
    // os-import will: the index, the referrer manifest and its blobs.
    {
        use os_core::oci::digest::Digest;
        let ours = os_core::oci::layout::Layout::open(&layout).unwrap();
        let get = |path: &str, accept: &str| {
            let output = std::process::Command::new("curl")
                .args(["-sfSL", "-H", &format!("Accept: {accept}")])
                .arg(format!("http://{host}/v2/air/app/{path}"))
                .output()
                .unwrap();
            assert!(output.status.success());
            output.stdout
        };
        let put = |bytes: &[u8]| {
            let digest = Digest::of(bytes);
            ours.write_blob(&digest, bytes).unwrap();
            digest
        };
        let index = get(
            &format!("manifests/{fallback_tag}"),
            "application/vnd.oci.image.index.v1+json",
        );
        let parsed: Value = serde_json::from_slice(&index).unwrap();
        let referrer = parsed["manifests"][0]["digest"].as_str().unwrap();
        let manifest = get(
            &format!("manifests/{referrer}"),
            "application/vnd.oci.image.manifest.v1+json",
        );
        let manifest_value: Value = serde_json::from_slice(&manifest).unwrap();
        put(&get(
            &format!("blobs/{}", manifest_value["config"]["digest"].as_str().unwrap()),
            "*/*",
        ));
        put(&get(
            &format!(
                "blobs/{}",
                manifest_value["layers"][0]["digest"].as_str().unwrap()
            ),
            "*/*",
        ));
        put(&manifest);
        let index_digest = put(&index);
        ours.add_manifest(
            "application/vnd.oci.image.index.v1+json",
            &index_digest,
            index.len() as u64,
            Some(&fallback_tag),
        )
        .unwrap();
    }
    drop(s.registry);

    let offline = |public: &Path, input: &str| {
        tool("os-verify")
            .arg("--key")
            .arg(public)
            .arg("--offline")
            .arg(&layout)
            .write_stdin(input.to_string())
            .assert()
    };
    let verified = one(&offline(&public, &signed).success());
    assert_eq!(
        verified["history"].as_array().unwrap().last().unwrap()["verified"],
        true
    );
    // cosign's OCI 1.1 referrer is found in the layout too.
    one(&offline(&cosign_public, &signed).success());
    // A tampered payload in the layout is caught.
    let sig_manifest: Value = serde_json::from_slice(
        &std::fs::read(layout.join("index.json"))
            .ok()
            .and_then(|index| {
                let index: Value = serde_json::from_slice(&index).ok()?;
                let entry = index["manifests"]
                    .as_array()?
                    .iter()
                    .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == sig_tag.as_str())?
                    .clone();
                let hex = entry["digest"]
                    .as_str()?
                    .trim_start_matches("sha256:")
                    .to_string();
                std::fs::read(layout.join("blobs/sha256").join(hex)).ok()
            })
            .unwrap(),
    )
    .unwrap();
    let payload = sig_manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    std::fs::write(layout.join("blobs/sha256").join(payload), b"{}").unwrap();
    let failed = one(&offline(&public, &signed).code(1));
    assert_eq!(failed["error"]["code"], "malformed-signature");
    // Not a layout: a usage error.
    tool("os-verify")
        .arg("--key")
        .arg(&public)
        .args(["--offline", "/nonexistent"])
        .write_stdin(signed)
        .assert()
        .code(2);
}

/// A trusted root with nothing in it: a key, not Fulcio or a log, is the
/// trust root here, but cosign 2.5 wants one to read bundles.
pub(crate) fn empty_trusted_root(s: &Setup) -> PathBuf {
    let trusted_root = s.path("empty-trusted-root.json");
    std::fs::write(
        &trusted_root,
        r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1","tlogs":[],"certificateAuthorities":[],"ctlogs":[],"timestampAuthorities":[]}"#,
    )
    .unwrap();
    trusted_root
}

/// cosign 2.5 verifies Sigstore bundles only through `verify-attestation
/// --new-bundle-format`, and needs a trusted root even for a key: an empty
/// one, since a key (not Fulcio or a log) is the trust root here.
fn cosign_verify_bundle(s: &Setup, public: &Path, reference: &str) -> std::process::Output {
    let trusted_root = empty_trusted_root(s);
    cosign(
        &[
            "verify-attestation",
            "--new-bundle-format",
            "--trusted-root",
            trusted_root.to_str().unwrap(),
            "--type",
            "https://sigstore.dev/cosign/sign/v1",
            "--key",
            public.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            reference,
        ],
        PASSWORD,
        s.dir.path(),
    )
}

#[test]
fn referrer_bundles_interoperate_with_cosign_both_ways() {
    let s = Setup::new();
    let (record, digest) = s.image("bundle/app", "bundle");
    let reference = s.pinned("bundle/app", &digest);
    let (key, public) = s.our_keys("ours");

    // os-sign --storage referrers: a bundle attached through the tag
    // fallback (distribution 2.8 has no Referrers API).
    let signed = one(&s
        .sign(&key, &record, &["--storage", "referrers", "-a", "team=iam"])
        .success());
    let event = signed["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(event["storage"], "referrers", "{event}");
    assert_eq!(event["referrers"], "tag-fallback", "{event}");
    assert_eq!(event["added"], true);
    let fallback: Value = serde_json::from_slice(&images::inspect_raw(
        &s.registry,
        "bundle/app",
        &digest.replace(':', "-"),
    ))
    .unwrap();
    assert_eq!(
        fallback["manifests"][0]["artifactType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    // No .sig tag was written.
    assert!(
        !s.cosign_verify(&public, &reference, &[]).status.success(),
        "legacy cosign verify must find no .sig"
    );
    // The real cosign accepts our bundle, and refuses it for another key.
    let output = cosign_verify_bundle(&s, &public, &reference);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, stranger) = s.cosign_keys("stranger");
    assert!(!cosign_verify_bundle(&s, &stranger, &reference).status.success());

    // os-verify accepts it (with the annotation), names the referrer, and
    // refuses a wrong key or a missing annotation with their reasons.
    let verified = one(&s
        .verify(&public, &signed.to_string(), &["-a", "team=iam"])
        .success());
    let event = verified["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(event["verified"], true);
    let referrer = fallback["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(
        event["signature"],
        format!("{}/bundle/app@{referrer}", s.registry.host())
    );
    assert_eq!(event["digest"], digest.as_str());
    // os-deploy's gate takes a bundle's verification as it takes a .sig's.
    let manifests = s.path("k8s");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("pod.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\nspec:\n  containers:\n    - name: app\n      image: {}/bundle/app:1\n",
            s.registry.host()
        ),
    )
    .unwrap();
    let rendered = tool("os-deploy")
        .arg("render")
        .arg(&manifests)
        .write_stdin(verified.to_string() + "\n")
        .assert()
        .success();
    assert!(
        String::from_utf8_lossy(&rendered.get_output().stdout)
            .contains(&format!("image: {}/bundle/app@{digest}", s.registry.host())),
        "{rendered:?}"
    );
    assert_eq!(
        one(&s.verify(&stranger, &record, &[]).code(1))["error"]["code"],
        "key-mismatch"
    );
    assert_eq!(
        one(&s.verify(&public, &record, &["-a", "team=payments"]).code(1))["error"]["code"],
        "annotation-mismatch"
    );

    // Signing again with the same key and annotations adds nothing.
    let again = one(&s
        .sign(&key, &record, &["--storage", "referrers", "-a", "team=iam"])
        .success());
    let event = again["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(event["added"], false, "{event}");
    let fallback: Value = serde_json::from_slice(&images::inspect_raw(
        &s.registry,
        "bundle/app",
        &digest.replace(':', "-"),
    ))
    .unwrap();
    assert_eq!(fallback["manifests"].as_array().unwrap().len(), 1);

    // The bundle travels with os-import and verifies at the target.
    let prod = TestRegistry::start();
    let promoted = one(&tool("os-import")
        .args(["--to", prod.host()])
        .write_stdin(signed.to_string() + "\n")
        .assert()
        .success());
    assert!(promoted["image"].as_str().unwrap().starts_with(prod.host()));
    s.verify(&public, &promoted.to_string(), &["-a", "team=iam"])
        .success();

    // The other way: a bundle written by the real cosign 2.5 (`attest
    // --new-bundle-format` with cosign 3's signature predicate type) is
    // accepted by os-verify, though cosign lists it under the empty
    // config's artifact type in its fallback index.
    let (record2, digest2) = s.image("bundle/other", "bundle-other");
    let reference2 = s.pinned("bundle/other", &digest2);
    let (cosign_key, cosign_public) = s.cosign_keys("theirs");
    let predicate = s.path("empty-predicate.json");
    std::fs::write(&predicate, "{}").unwrap();
    let attest = |kind: &str| {
        cosign_ok(
            &[
                "attest",
                "--yes",
                "--new-bundle-format",
                "--key",
                cosign_key.to_str().unwrap(),
                "--tlog-upload=false",
                "--allow-http-registry",
                "--type",
                kind,
                "--predicate",
                predicate.to_str().unwrap(),
                &reference2,
            ],
            PASSWORD,
            s.dir.path(),
        )
    };
    // An attestation of another type is not a signature...
    attest("https://example.com/not-a-signature/v1");
    assert_eq!(
        one(&s.verify(&cosign_public, &record2, &[]).code(1))["error"]["code"],
        "no-signature"
    );
    // ...cosign 3's signature predicate is.
    attest("https://sigstore.dev/cosign/sign/v1");
    let verified = one(&s.verify(&cosign_public, &record2, &[]).success());
    assert_eq!(
        verified["history"].as_array().unwrap().last().unwrap()["verified"],
        true
    );
}

#[test]
fn an_air_gap_export_verifies_offline_straight_from_os_import() {
    let s = Setup::new();
    let (record, digest) = s.image("gap/app", "airgap-pipe");
    let (key, public) = s.our_keys("gap");
    let signed = stdout(&s.sign(&key, &record, &[]).success());
    let layout = s.path("exported");
    let exported = stdout(
        &tool("os-import")
            .arg("--to")
            .arg(format!("oci:{}", layout.display()))
            .write_stdin(signed)
            .assert()
            .success(),
    );
    drop(s.registry);
    let offline = |input: &str| {
        tool("os-verify")
            .arg("--key")
            .arg(&public)
            .arg("--offline")
            .arg(&layout)
            .write_stdin(input.to_string())
            .assert()
    };
    // The exported record names the layout; its signatures name the
    // repository it was imported from, which the import event records.
    let verified = one(&offline(&exported).success());
    let event = verified["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(event["verified"], true);
    assert_eq!(event["image"], format!("oci:{}", layout.display()));
    assert_eq!(event["digest"], digest.as_str());
    // Without the import event there is no signed identity to check against.
    let mut orphan: Value = serde_json::from_str(exported.trim()).unwrap();
    orphan["history"] = serde_json::json!([]);
    let refused = one(&offline(&format!("{orphan}\n")).code(1));
    assert_eq!(refused["error"]["code"], "unsupported");
}
