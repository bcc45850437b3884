//! cosign's, sigstore-rs's and containers/image's own test data
//! (`tests/fixtures/interop/cosign`, with `SOURCES.md` naming where each
//! file came from and its licence): every key and key-based signature they
//! accept, we accept; every negative case they reject, we reject.
//!
//! Certificate (keyless, Fulcio) cases are out of scope for `--key`
//! verification and are checked to be exactly the cases without a
//! `pubkey.pem`, so a new key-based vector can never be skipped silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use os_core::oci::digest::Digest;
use os_core::oci::reference::RegistryRef;
use os_core::signing::key::{KeyRef, Password, PublicKey, Signer};
use os_core::steps::verify::{Identity, Reason, Rejection, VerifyPolicy, check_signature};
use serde_json::Value;
use zeroize::Zeroizing;

fn interop() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interop/cosign");
    assert!(
        dir.is_dir(),
        "{} is missing: the interop vectors are part of the test suite",
        dir.display()
    );
    dir
}

fn field(expect: &str, name: &str) -> Option<String> {
    expect.lines().find_map(|line| {
        line.strip_prefix(&format!("{name}: "))
            .map(|v| v.trim().to_string())
    })
}

#[test]
fn every_key_vector_loads_or_is_refused_like_cosign() {
    let keys = interop().join("keys");
    let index: Value = serde_json::from_slice(&std::fs::read(keys.join("keys.json")).unwrap()).unwrap();
    let entries = index["keys"].as_array().unwrap();
    assert!(entries.len() >= 10);
    let mut loaded = 0;
    for entry in entries {
        let file = entry["file"].as_str().unwrap();
        let password = entry["password"].as_str().unwrap_or_default();
        let expect = entry["expect"].as_str().unwrap_or_default();
        let key = KeyRef::File(keys.join(file));
        let result = Signer::load_local(&key, &Password::Given(Zeroizing::new(password.to_string())));
        if expect.starts_with("decrypt+load") {
            let signer = result.unwrap_or_else(|e| panic!("{file}: cosign loads it, we did not: {e}"));
            if let Some(spki) = entry["spki_sha256"].as_str() {
                assert_eq!(signer.key_id(), format!("sha256:{spki}"), "{file}");
            }
            if let Some(derived) = entry["derived_public_key"].as_str() {
                let public =
                    PublicKey::load_local(&KeyRef::File(keys.join(derived)), &Password::EnvOrPrompt).unwrap();
                assert_eq!(public.key_id(), signer.key_id(), "{file}");
                let signature = os_core::pipeline::runtime()
                    .block_on(signer.sign(b"interop"))
                    .unwrap();
                assert!(public.verify(&signature, b"interop"), "{file}: signs verifiably");
            }
            // A wrong password fails the secretbox MAC.
            let wrong = Signer::load_local(
                &key,
                &Password::Given(Zeroizing::new(format!("{password}-wrong"))),
            );
            assert!(wrong.is_err(), "{file}: a wrong password must fail");
            loaded += 1;
        } else {
            assert!(
                result.is_err(),
                "{file}: cosign refuses it ({expect}), we loaded it"
            );
        }
    }
    assert!(loaded >= 8, "only {loaded} keys loaded");
}

/// What one signature vector came to.
enum Judged {
    Checked,
    /// A certificate (keyless) case: out of scope for `--key`.
    Keyless(String),
}

fn judge_vector(case: &Path) -> Judged {
    let name = case.file_name().unwrap().to_string_lossy().to_string();
    let expect = std::fs::read_to_string(case.join("expect.txt")).unwrap();
    let outcome = field(&expect, "outcome").unwrap();
    if !case.join("pubkey.pem").exists() {
        return Judged::Keyless(name);
    }
    let public = PublicKey::load_local(&KeyRef::File(case.join("pubkey.pem")), &Password::EnvOrPrompt)
        .unwrap_or_else(|e| panic!("{name}: pubkey.pem: {e}"));
    let payload = std::fs::read(case.join("payload.json")).unwrap();
    let signature = std::fs::read_to_string(case.join("signature.b64")).unwrap();
    let media_type = std::fs::read_to_string(case.join("media-type.txt"))
        .unwrap()
        .trim()
        .to_string();
    // The image being verified: the manifest's own digest where the case
    // ships it, else the digest the payload claims.
    let digest: Digest = if case.join("image-manifest.json").exists() {
        Digest::of(&std::fs::read(case.join("image-manifest.json")).unwrap())
    } else {
        let claimed: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
        claimed
            .pointer("/critical/image/docker-manifest-digest")
            .and_then(Value::as_str)
            .unwrap_or("sha256:0000000000000000000000000000000000000000000000000000000000000000")
            .parse()
            .unwrap()
    };
    let policy = VerifyPolicy {
        keys: vec![public],
        identity: Identity::Any,
        remaps: Vec::new(),
        annotations: BTreeMap::new(),
        source: os_core::steps::verify::SignatureSource::Registry,
        attestations: Vec::new(),
        vuln: Default::default(),
        provenance_builder: None,
    };
    let image: RegistryRef = "registry.example.com/any".parse().unwrap();
    let judged = check_signature(&policy, &image, &digest, &media_type, &payload, Some(&signature));
    match outcome.as_str() {
        "ACCEPT" => {
            let accepted = judged.unwrap_or_else(|Rejection { reason, message }| {
                panic!("{name}: cosign accepts; we said {reason:?}: {message}")
            });
            assert_eq!(accepted.payload_digest, Digest::of(&payload), "{name}");
            if let Some(reference) = field(&expect, "docker-reference") {
                assert_eq!(accepted.identity, reference, "{name}");
            }
        }
        "REJECT" => {
            let Rejection { reason, .. } = judged
                .err()
                .unwrap_or_else(|| panic!("{name}: cosign rejects it; we accepted"));
            let expected = match name.as_str() {
                // Valid base64 of bytes that are no signature: it
                // simply does not verify with the key.
                "neg-cimage-garbage-signature" => Reason::KeyMismatch,
                "neg-cimage-modified-manifest" => Reason::DigestMismatch,
                "neg-cimage-other-attachment" => Reason::NoSignature,
                _ => Reason::KeyMismatch,
            };
            assert_eq!(reason, expected, "{name}");
        }
        other => panic!("{name}: unknown outcome {other}"),
    }
    Judged::Checked
}

#[test]
fn every_key_based_signature_vector_is_judged_like_cosign() {
    let signatures = interop().join("signatures");
    let mut checked = 0;
    let mut keyless = Vec::new();
    let mut cases: Vec<_> = std::fs::read_dir(&signatures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    // Every vector is judged, and every one that is judged wrongly is
    // named: the first failure does not hide the rest.
    let mut wrong = Vec::new();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        match std::panic::catch_unwind(|| judge_vector(&case)) {
            Ok(Judged::Checked) => checked += 1,
            Ok(Judged::Keyless(name)) => keyless.push(name),
            Err(_) => wrong.push(name),
        }
    }
    assert!(
        wrong.is_empty(),
        "judged unlike cosign (see the panics above): {wrong:?}"
    );
    assert!(checked >= 12, "only {checked} key-based cases checked");
    assert_eq!(
        keyless,
        [
            "cimage-fulcio-rekor",
            "cimage-pki-rsa",
            "srs-cert-pod-privileged",
            "srs-fulcio-cert-nodeport"
        ],
        "only certificate (keyless) cases may be out of scope"
    );
}

#[test]
fn payload_vectors_are_built_and_parsed_like_cosign() {
    let payloads = interop().join("payloads");
    let marshal: Value =
        serde_json::from_slice(&std::fs::read(payloads.join("marshal-vectors.json")).unwrap()).unwrap();
    let mut built = 0;
    for vector in marshal.as_array().unwrap() {
        // cosign's own writer: image + annotations → exact bytes. (The
        // containers/image writer vectors, which write "optional":{} and
        // are never produced by cosign, are parse-only.)
        let (Some(image), None) = (vector["image"].as_str(), vector["claimed_identity"].as_str()) else {
            continue;
        };
        let (repository, digest) = image.split_once('@').unwrap();
        let reference: RegistryRef = repository.parse().unwrap();
        let annotations: BTreeMap<String, String> = match &vector["annotations"] {
            Value::Object(map) if map.values().all(Value::is_string) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            Value::Null => BTreeMap::new(),
            // -a only ever gives strings; vectors with numbers or nested
            // claims come from the library, not the CLI.
            _ => continue,
        };
        let bytes = os_core::signing::simple_signing::payload(
            &os_core::signing::simple_signing::docker_reference(&reference),
            &digest.parse().unwrap(),
            &annotations,
        );
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            vector["expected"].as_str().unwrap(),
            "{}",
            vector["desc"]
        );
        built += 1;
    }
    assert!(built >= 2, "only {built} marshal vectors built");
    let unmarshal: Value =
        serde_json::from_slice(&std::fs::read(payloads.join("unmarshal-vectors.json")).unwrap()).unwrap();
    for vector in unmarshal.as_array().unwrap() {
        let parsed =
            os_core::signing::simple_signing::parse_payload(vector["payload"].as_str().unwrap().as_bytes());
        match vector["expect"].as_str().unwrap() {
            "accept" => {
                parsed.unwrap_or_else(|e| panic!("{}: {e}", vector["desc"]));
            }
            _ => assert!(parsed.is_err(), "{}", vector["desc"]),
        }
    }
}
