//! Azure Key Vault signing (`os_core::azure`) against the local stand-in
//! (`support::keyvault`): every credential kind, the public key, signatures
//! verified with ring, and the errors a user sees. The environment is given
//! to `KeyVault::with_env` as a map, so the tests run in parallel and never
//! touch the process environment (nor 169.254.169.254).

use os_testkit as support;

use std::collections::HashMap;
use std::path::Path;

use os_core::azure::{AzureError, CredentialKind, KeyVault, VaultKey, raw_ecdsa_to_der};
use ring::signature::{self, KeyPair, UnparsedPublicKey, VerificationAlgorithm};
use support::keyvault::{Curve, KeyVaultStandIn, VAULT_RESOURCE};

const PAYLOAD: &[u8] =
    br#"{"critical":{"identity":{"docker-reference":"devacr.azurecr.io/app"},"type":"cosign container image signature"}}"#;

type Env = Vec<(&'static str, String)>;

fn env(pairs: Env) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<&str, String> = pairs.into_iter().collect();
    move |name| map.get(name).cloned()
}

fn client_secret_env(kv: &KeyVaultStandIn) -> Env {
    vec![
        ("AZURE_AUTHORITY_HOST", kv.authority()),
        ("AZURE_TENANT_ID", kv.tenant_id().into()),
        ("AZURE_CLIENT_ID", kv.client_id().into()),
        ("AZURE_CLIENT_SECRET", kv.client_secret().into()),
    ]
}

fn verify(kv: &KeyVaultStandIn, name: &str, algorithm: &'static dyn VerificationAlgorithm, signature: &[u8]) {
    UnparsedPublicKey::new(algorithm, kv.public_key_for_ring(name))
        .verify(PAYLOAD, signature)
        .unwrap_or_else(|_| panic!("ring rejects the {name} signature {}", hex::encode(signature)));
    assert!(
        UnparsedPublicKey::new(algorithm, kv.public_key_for_ring(name))
            .verify(b"another payload", signature)
            .is_err()
    );
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn environment_credential_fetches_the_key_and_signs_es256() {
    let kv = KeyVaultStandIn::start(&[("cosign", Curve::P256)]);
    let vault = KeyVault::with_env(CredentialKind::Environment, env(client_secret_env(&kv))).unwrap();
    let key = vault.public_key(kv.host(), "cosign", None).await.unwrap();
    assert_eq!(key.kid, kv.kid("cosign"));
    assert_eq!(key.algorithm, "ES256");
    assert_eq!(key.spki_der, kv.public_key_der("cosign"));
    assert!(
        kv.public_key_pem("cosign")
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    for _ in 0..2 {
        let signature = vault.sign(&key, PAYLOAD).await.unwrap();
        assert_eq!(signature[0], 0x30, "DER SEQUENCE");
        verify(&kv, "cosign", &signature::ECDSA_P256_SHA256_ASN1, &signature);
    }
    assert_eq!(kv.sign_requests(), 2);
    // One token for the GET and both signatures, for the vault scope.
    assert_eq!(kv.token_requests(), 1);
    assert_eq!(kv.token_scopes(), vec![format!("{VAULT_RESOURCE}/.default")]);
}

#[tokio::test]
async fn auto_takes_the_environment_credential_first() {
    let kv = KeyVaultStandIn::start(&[("cosign", Curve::P256)]);
    let mut pairs = client_secret_env(&kv);
    // A managed identity that would fail, and a federated token file that
    // does not exist: Auto must not get that far.
    pairs.push(("IDENTITY_ENDPOINT", kv.identity_endpoint()));
    pairs.push(("IDENTITY_HEADER", "wrong".into()));
    pairs.push(("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/token".into()));
    let vault = KeyVault::with_env(CredentialKind::Auto, env(pairs)).unwrap();
    let key = vault.public_key(kv.host(), "cosign", None).await.unwrap();
    verify(
        &kv,
        "cosign",
        &signature::ECDSA_P256_SHA256_ASN1,
        &vault.sign(&key, PAYLOAD).await.unwrap(),
    );
    assert_eq!(kv.token_scopes(), vec![format!("{VAULT_RESOURCE}/.default")]);
}

#[tokio::test]
async fn workload_identity_signs_es384_with_a_pinned_version() {
    let kv = KeyVaultStandIn::start(&[("cosign", Curve::P256), ("p384", Curve::P384)]);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, format!("{}\n", kv.federated_token())).unwrap();
    let pairs = vec![
        ("AZURE_AUTHORITY_HOST", kv.authority()),
        ("AZURE_TENANT_ID", kv.tenant_id().to_string()),
        ("AZURE_CLIENT_ID", kv.client_id().to_string()),
        ("AZURE_FEDERATED_TOKEN_FILE", token_file.display().to_string()),
    ];
    let vault = KeyVault::with_env(CredentialKind::WorkloadIdentity, env(pairs.clone())).unwrap();
    let version = kv.key_version("p384");
    let key = vault.public_key(kv.host(), "p384", Some(&version)).await.unwrap();
    assert_eq!(key.kid, kv.kid("p384"));
    assert_eq!(key.algorithm, "ES384");
    assert_eq!(key.spki_der, kv.public_key_der("p384"));
    let signature = vault.sign(&key, PAYLOAD).await.unwrap();
    verify(&kv, "p384", &signature::ECDSA_P384_SHA384_ASN1, &signature);

    // Auto finds it too (no client secret set).
    let auto = KeyVault::with_env(CredentialKind::Auto, env(pairs)).unwrap();
    assert_eq!(
        auto.public_key(kv.host(), "cosign", None).await.unwrap().spki_der,
        kv.public_key_der("cosign")
    );

    // A rotated-away token: refused, and the assertion is not shown.
    std::fs::write(&token_file, "eyJ.stale-assertion-value.sig").unwrap();
    let stale = KeyVault::with_env(
        CredentialKind::WorkloadIdentity,
        env(vec![
            ("AZURE_AUTHORITY_HOST", kv.authority()),
            ("AZURE_TENANT_ID", kv.tenant_id().to_string()),
            ("AZURE_CLIENT_ID", kv.client_id().to_string()),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.display().to_string()),
        ]),
    )
    .unwrap();
    let error = stale.public_key(kv.host(), "p384", None).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, AzureError::Token { .. }), "{message}");
    assert!(
        message.contains("workload identity") && message.contains("invalid_client"),
        "{message}"
    );
    assert!(!message.contains("stale-assertion-value"), "{message}");
}

#[tokio::test]
async fn managed_identity_through_identity_endpoint() {
    let kv = KeyVaultStandIn::start(&[("cosign", Curve::P256)]);
    let pairs = vec![
        ("IDENTITY_ENDPOINT", kv.identity_endpoint()),
        ("IDENTITY_HEADER", kv.identity_header().to_string()),
    ];
    for kind in [CredentialKind::ManagedIdentity, CredentialKind::Auto] {
        let vault = KeyVault::with_env(kind, env(pairs.clone())).unwrap();
        let key = vault.public_key(kv.host(), "cosign", None).await.unwrap();
        assert_eq!(key.spki_der, kv.public_key_der("cosign"));
        let signature = vault.sign(&key, PAYLOAD).await.unwrap();
        verify(&kv, "cosign", &signature::ECDSA_P256_SHA256_ASN1, &signature);
    }
    assert_eq!(kv.token_scopes(), vec![VAULT_RESOURCE.to_string(); 2]);

    let wrong = KeyVault::with_env(
        CredentialKind::ManagedIdentity,
        env(vec![
            ("IDENTITY_ENDPOINT", kv.identity_endpoint()),
            ("IDENTITY_HEADER", "not-the-header".into()),
        ]),
    )
    .unwrap();
    let message = wrong
        .public_key(kv.host(), "cosign", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("managed identity") && message.contains("401"),
        "{message}"
    );
    assert!(!message.contains("not-the-header"), "{message}");
}

fn fake_az(dir: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("az");
    std::fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn azure_cli_token_signs_rs256() {
    let kv = KeyVaultStandIn::start(&[("rsa", Curve::Rsa2048)]);
    let dir = tempfile::tempdir().unwrap();
    let args = dir.path().join("args");
    let token = kv.issue_token(VAULT_RESOURCE);
    fake_az(
        dir.path(),
        &format!(
            "echo \"$@\" > '{}'\ncat <<EOF\n{{\"accessToken\": \"{token}\", \"expiresOn\": \"2099-01-01 00:00:00.000000\", \"expires_on\": 4070908800, \"tokenType\": \"Bearer\"}}\nEOF\n",
            args.display()
        ),
    );
    let vault = KeyVault::with_env(
        CredentialKind::AzureCli,
        env(vec![("PATH", format!("/nonexistent:{}", dir.path().display()))]),
    )
    .unwrap();
    let key = vault.public_key(kv.host(), "rsa", None).await.unwrap();
    assert_eq!(key.algorithm, "RS256");
    assert_eq!(key.spki_der, kv.public_key_der("rsa"));
    let signature = vault.sign(&key, PAYLOAD).await.unwrap();
    assert_eq!(signature.len(), 256);
    verify(&kv, "rsa", &signature::RSA_PKCS1_2048_8192_SHA256, &signature);
    assert_eq!(
        std::fs::read_to_string(&args).unwrap().trim(),
        format!("account get-access-token --resource {VAULT_RESOURCE} -o json")
    );

    // Not logged in: az's own message.
    let other = tempfile::tempdir().unwrap();
    fake_az(
        other.path(),
        "echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n",
    );
    let vault = KeyVault::with_env(
        CredentialKind::AzureCli,
        env(vec![("PATH", other.path().display().to_string())]),
    )
    .unwrap();
    let message = vault
        .public_key(kv.host(), "rsa", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("Azure CLI") && message.contains("az login"),
        "{message}"
    );
}

#[test]
fn explicit_kinds_name_the_missing_variables() {
    let missing = |kind, pairs: Env| match KeyVault::with_env(kind, env(pairs)) {
        Err(error @ AzureError::MissingVariables { .. }) => error.to_string(),
        other => panic!("{kind}: expected missing variables, got {other:?}"),
    };
    let message = missing(
        CredentialKind::Environment,
        vec![
            ("AZURE_TENANT_ID", "t".into()),
            ("AZURE_CLIENT_SECRET", "".into()),
        ],
    );
    assert!(message.contains("--azure-credential environment"), "{message}");
    assert!(
        message.contains("AZURE_CLIENT_ID") && message.contains("AZURE_CLIENT_SECRET"),
        "{message}"
    );
    assert!(!message.contains("AZURE_TENANT_ID"), "{message}");

    let message = missing(CredentialKind::WorkloadIdentity, vec![]);
    for name in ["AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"] {
        assert!(message.contains(name), "{message}");
    }
    let message = missing(
        CredentialKind::ManagedIdentity,
        vec![("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token".into())],
    );
    assert!(
        message.contains("needs IDENTITY_HEADER, which is not set"),
        "{message}"
    );

    let empty = tempfile::tempdir().unwrap();
    let error = KeyVault::with_env(
        CredentialKind::AzureCli,
        env(vec![("PATH", empty.path().display().to_string())]),
    )
    .unwrap_err();
    assert!(matches!(error, AzureError::AzureCliNotFound), "{error}");

    // A client secret is never sent to a non-loopback authority over HTTP.
    let error = KeyVault::with_env(
        CredentialKind::Environment,
        env(vec![
            ("AZURE_TENANT_ID", "t".into()),
            ("AZURE_CLIENT_ID", "c".into()),
            ("AZURE_CLIENT_SECRET", "s".into()),
            ("AZURE_AUTHORITY_HOST", "http://login.example.com".into()),
        ]),
    )
    .unwrap_err();
    assert!(error.to_string().contains("AZURE_AUTHORITY_HOST"), "{error}");
}

#[tokio::test]
async fn auto_with_nothing_configured_says_what_it_looked_for() {
    let empty = tempfile::tempdir().unwrap();
    // The metadata service is redirected (as AZURE_POD_IDENTITY_AUTHORITY_HOST
    // does) to a closed loopback port: tests never contact 169.254.169.254.
    let vault = KeyVault::with_env(
        CredentialKind::Auto,
        env(vec![
            (
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                format!("http://127.0.0.1:{}", closed_port()),
            ),
            ("AZURE_CLIENT_ID", "only-a-client-id".into()),
            ("PATH", empty.path().display().to_string()),
        ]),
    )
    .unwrap();
    let error = vault.public_key("127.0.0.1:1", "cosign", None).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, AzureError::NoCredential { .. }), "{message}");
    for expected in [
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "IDENTITY_ENDPOINT",
        "instance metadata service",
        "not reachable",
        "`az` on PATH",
        "--azure-credential",
    ] {
        assert!(message.contains(expected), "{expected:?} not in: {message}");
    }
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused_without_showing_it() {
    let kv = KeyVaultStandIn::start(&[("cosign", Curve::P256)]);
    let mut pairs = client_secret_env(&kv);
    pairs.retain(|(name, _)| *name != "AZURE_CLIENT_SECRET");
    pairs.push(("AZURE_CLIENT_SECRET", "Wrong~Secret~Value~123".into()));
    let vault = KeyVault::with_env(CredentialKind::Environment, env(pairs)).unwrap();
    let error = vault.public_key(kv.host(), "cosign", None).await.unwrap_err();
    let (message, debug) = (error.to_string(), format!("{error:?} {vault:?}"));
    assert!(matches!(error, AzureError::Token { .. }), "{message}");
    assert!(
        message.contains("environment") && message.contains("401") && message.contains("invalid_client"),
        "{message}"
    );
    // The stand-in echoes the secret it got; the client must scrub it.
    for text in [&message, &debug] {
        assert!(!text.contains("Wrong~Secret~Value~123"), "{text}");
        assert!(!text.contains(kv.client_secret()), "{text}");
    }
    assert_eq!(kv.sign_requests(), 0);
}

#[tokio::test]
async fn leading_zero_bytes_give_minimal_der_that_ring_accepts() {
    let kv = KeyVaultStandIn::start(&[("cosign", Curve::P256), ("p384", Curve::P384)]);
    kv.force_leading_zero(true);
    let vault = KeyVault::with_env(CredentialKind::Environment, env(client_secret_env(&kv))).unwrap();
    for (name, width, algorithm) in [
        ("cosign", 32, &signature::ECDSA_P256_SHA256_ASN1),
        ("p384", 48, &signature::ECDSA_P384_SHA384_ASN1),
    ] {
        let key = vault.public_key(kv.host(), name, None).await.unwrap();
        for _ in 0..3 {
            let der = vault.sign(&key, PAYLOAD).await.unwrap();
            let raw = kv.last_raw_signature().unwrap();
            assert_eq!(raw.len(), 2 * width);
            assert!(raw[0] == 0 || raw[width] == 0, "{}", hex::encode(&raw));
            assert_eq!(der, raw_ecdsa_to_der(&raw).unwrap());
            // ring parses DER strictly: a non-minimal integer fails here.
            verify(&kv, name, algorithm, &der);
        }
    }
}

#[tokio::test]
async fn vault_errors_are_explained() {
    let kv = KeyVaultStandIn::start(&[("cosign", Curve::P256), ("locked", Curve::P256)]);
    let vault = KeyVault::with_env(CredentialKind::Environment, env(client_secret_env(&kv))).unwrap();

    let error = vault.public_key(kv.host(), "missing", None).await.unwrap_err();
    assert!(matches!(error, AzureError::NotFound { .. }), "{error}");
    assert!(error.to_string().contains("KeyNotFound"), "{error}");
    let error = vault
        .public_key(kv.host(), "cosign", Some("0123456789abcdef0123456789abcdef"))
        .await
        .unwrap_err();
    assert!(matches!(error, AzureError::NotFound { .. }), "{error}");

    kv.deny("locked");
    let error = vault.public_key(kv.host(), "locked", None).await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, AzureError::Unauthorized { status: 403, .. }),
        "{message}"
    );
    assert!(
        message.contains("environment")
            && message.contains("--azure-credential")
            && message.contains("Forbidden"),
        "{message}"
    );

    // Throttling is retried (Retry-After: 0).
    kv.throttle_next(2);
    let key = vault.public_key(kv.host(), "cosign", None).await.unwrap();

    // An algorithm the key does not sign: Key Vault's BadParameter.
    let wrong = VaultKey {
        algorithm: "ES384".into(),
        ..key.clone()
    };
    let error = vault.sign(&wrong, PAYLOAD).await.unwrap_err();
    assert!(
        matches!(error, AzureError::Status { status: 400, .. }) && error.to_string().contains("BadParameter"),
        "{error}"
    );

    // Key ids that are not this kind of URL are refused before any request.
    for kid in [
        format!("https://{}/keys/cosign/{}", kv.host(), kv.key_version("cosign")),
        format!("{}/secrets/cosign/v", kv.authority()),
        "not a url".to_string(),
    ] {
        let bad = VaultKey {
            kid: kid.clone(),
            ..key.clone()
        };
        assert!(vault.sign(&bad, PAYLOAD).await.is_err(), "{kid}");
    }
    assert!(vault.public_key(kv.host(), "../secrets/x", None).await.is_err());
    assert!(
        vault
            .public_key("kv.vault.azure.net/x", "cosign", None)
            .await
            .is_err()
    );
    assert_eq!(kv.sign_requests(), 0);
}

#[test]
fn raw_ecdsa_to_der_encodes_minimal_integers() {
    // Plain: no high bit, no leading zero.
    let raw = [[0x11u8; 32], [0x22u8; 32]].concat();
    let der = raw_ecdsa_to_der(&raw).unwrap();
    assert_eq!(&der[..4], &[0x30, 68, 0x02, 32]);
    assert_eq!(&der[36..38], &[0x02, 32]);

    // High bit set: a 0x00 keeps the integer positive.
    let raw = [[0x80u8; 32], [0xffu8; 32]].concat();
    let der = raw_ecdsa_to_der(&raw).unwrap();
    assert_eq!(&der[..5], &[0x30, 70, 0x02, 33, 0x00]);
    assert_eq!(&der[37..40], &[0x02, 33, 0x00]);

    // Leading zeros are stripped, then 0x00 added back if the next byte has
    // its high bit set.
    let mut r = [0x33u8; 32];
    r[..3].copy_from_slice(&[0, 0, 0x05]);
    let mut s = [0x44u8; 32];
    s[..2].copy_from_slice(&[0, 0x90]);
    let der = raw_ecdsa_to_der(&[r, s].concat()).unwrap();
    let expected = [
        &[0x30, 2 + 30 + 2 + 32][..],
        &[0x02, 30],
        &r[2..],
        &[0x02, 32, 0x00],
        &s[1..],
    ]
    .concat();
    assert_eq!(der, expected);

    // All but the last byte zero.
    let mut r = [0u8; 48];
    r[47] = 0x7f;
    let mut s = [0u8; 48];
    s[47] = 0x80;
    assert_eq!(
        raw_ecdsa_to_der(&[r, s].concat()).unwrap(),
        vec![0x30, 7, 0x02, 1, 0x7f, 0x02, 2, 0x00, 0x80]
    );

    // Not signatures.
    assert!(raw_ecdsa_to_der(&[]).is_err());
    assert!(raw_ecdsa_to_der(&[1; 63]).is_err());
    assert!(raw_ecdsa_to_der(&[[0u8; 32], [1u8; 32]].concat()).is_err());
    assert!(raw_ecdsa_to_der(&[[1u8; 32], [0u8; 32]].concat()).is_err());
}

#[test]
fn raw_ecdsa_to_der_agrees_with_ring() {
    // ring signs fixed r‖s and verifies ASN.1 DER: 200 signatures hit high
    // bits and leading zeros alike.
    let rng = ring::rand::SystemRandom::new();
    for (signing, verifying) in [
        (
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &signature::ECDSA_P256_SHA256_ASN1,
        ),
        (
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &signature::ECDSA_P384_SHA384_ASN1,
        ),
    ] {
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap();
        let public = UnparsedPublicKey::new(verifying, pair.public_key().as_ref().to_vec());
        for _ in 0..100 {
            let raw = pair.sign(&rng, PAYLOAD).unwrap();
            let der = raw_ecdsa_to_der(raw.as_ref()).unwrap();
            public.verify(PAYLOAD, &der).unwrap();
        }
    }
}
