//! Signing in to an Azure Container Registry with only `AZURE_*` settings:
//! the tools trade an Entra token (from the Entra stand-in in
//! `os_testkit::keyvault`) at the registry's `/oauth2/exchange` for a
//! refresh token, then get access tokens at its `/oauth2/token`, as ACR's
//! token service does (`TestRegistry::start_acr_token`: a real distribution
//! registry with token auth behind that exchange).

use os_testkit as support;

use serde_json::Value;
use support::bins::tool;
use support::images;
use support::keyvault::{Curve, KeyVaultStandIn};
use support::registry::TestRegistry;
use support::schema::{one, stdout};

const ARM_RESOURCE: &str = "https://management.azure.com";
const PASSWORD: &str = "acr-sign-in";

struct SignIn {
    entra: KeyVaultStandIn,
    acr: TestRegistry,
    image: images::TestImage,
    dir: tempfile::TempDir,
}

impl SignIn {
    fn new() -> SignIn {
        let entra = KeyVaultStandIn::start(&[("unused", Curve::P256)]);
        let acr = TestRegistry::start_acr_token("admin", "admin-only-for-the-test-push");
        let server = acr
            .token_server()
            .expect("an ACR-like registry has a token server");
        server.accept_entra(entra.tenant_id(), entra.token_check(ARM_RESOURCE));
        let dir = tempfile::tempdir().unwrap();
        let image = images::single_arch(&dir.path().join("l"), "1.0", "acr-sign-in");
        images::push(&image, &acr, "onestream/iam", "1.0");
        SignIn {
            entra,
            acr,
            image,
            dir,
        }
    }

    /// A tool with the environment credential's variables, and nothing else
    /// that could sign in (no docker config: `tool` points it nowhere).
    fn tool(&self, name: &str) -> assert_cmd::Command {
        let mut command = tool(name);
        command
            .env("AZURE_AUTHORITY_HOST", self.entra.authority())
            .env("AZURE_TENANT_ID", self.entra.tenant_id())
            .env("AZURE_CLIENT_ID", self.entra.client_id())
            .env("AZURE_CLIENT_SECRET", self.entra.client_secret());
        command
    }

    fn reference(&self) -> String {
        format!("{}/onestream/iam:1.0", self.acr.host())
    }
}

#[test]
fn digest_sign_and_verify_reach_an_acr_with_only_azure_variables() {
    let s = SignIn::new();
    let record = one(&s.tool("os-digest").arg(s.reference()).assert().success());
    assert_eq!(record["digest"], s.image.digest.as_str());
    assert!(
        s.entra
            .token_scopes()
            .iter()
            .any(|scope| scope == "https://management.azure.com/.default"),
        "{:?}",
        s.entra.token_scopes()
    );

    let prefix = s.dir.path().join("k");
    tool("os-sign")
        .args(["generate-key-pair", "--output-key-prefix"])
        .arg(&prefix)
        .env("COSIGN_PASSWORD", PASSWORD)
        .assert()
        .success();
    let signed = s
        .tool("os-sign")
        .arg("--key")
        .arg(prefix.with_extension("key"))
        .env("COSIGN_PASSWORD", PASSWORD)
        .write_stdin(record.to_string() + "\n")
        .assert()
        .success();
    let verified = one(&s
        .tool("os-verify")
        .arg("--key")
        .arg(prefix.with_extension("pub"))
        .write_stdin(stdout(&signed))
        .assert()
        .success());
    let last = verified["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["step"], "verify", "{last}");
    // The registry's tokens were bought with the exchanged refresh token:
    // the only identity the token server knows.
    let issued = s.acr.token_server().unwrap().issued_tokens();
    assert!(
        issued
            .iter()
            .any(|t| t.subject == "admin" && t.access.iter().any(|a| a.ends_with(":pull,push")))
    );
}

fn refusal(output: &assert_cmd::assert::Assert) -> (Value, String) {
    let record = one(output);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.get_output().stdout),
        String::from_utf8_lossy(&output.get_output().stderr)
    );
    (record, printed)
}

#[test]
fn a_wrong_client_secret_is_a_clear_error_that_keeps_the_secret() {
    let s = SignIn::new();
    let output = s
        .tool("os-digest")
        .env("AZURE_CLIENT_SECRET", "wrong-secret-5b1d")
        .arg(s.reference())
        .assert()
        .code(1);
    let (record, printed) = refusal(&output);
    assert_eq!(record["error"]["code"], "unauthorized", "{record}");
    let message = record["error"]["message"].as_str().unwrap();
    assert!(message.contains("Entra ID"), "{message}");
    assert!(!printed.contains("wrong-secret-5b1d"), "{printed}");
}

#[test]
fn a_token_from_another_tenant_is_refused_by_the_exchange() {
    let s = SignIn::new();
    let server = s.acr.token_server().unwrap();
    server.accept_entra("another-tenant", s.entra.token_check(ARM_RESOURCE));
    let output = s.tool("os-digest").arg(s.reference()).assert().code(1);
    let (record, _) = refusal(&output);
    assert_eq!(record["error"]["code"], "unauthorized", "{record}");
    let message = record["error"]["message"].as_str().unwrap();
    assert!(message.contains("ACR refused the Entra ID token"), "{message}");
    assert!(message.contains("AcrPull"), "names the role: {message}");
}

#[test]
fn a_docker_credential_still_wins_over_the_entra_sign_in() {
    let s = SignIn::new();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("admin:admin-only-for-the-test-push");
    std::fs::write(
        s.dir.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, s.acr.host()),
    )
    .unwrap();
    let before = s.entra.token_requests();
    s.tool("os-digest")
        .env("DOCKER_CONFIG", s.dir.path())
        .arg(s.reference())
        .assert()
        .success();
    assert_eq!(s.entra.token_requests(), before, "no Entra token was asked for");
}
