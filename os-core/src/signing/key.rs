//! Signing and verification keys, named the way cosign names them: a file
//! path (cosign's encrypted private key PEM, or a PEM public key),
//! `env://VAR` (the PEM in an environment variable), or
//! `azurekms://VAULT_HOST/KEY[/VERSION]` (Azure Key Vault; the private key
//! never leaves the vault).
//!
//! Keys are loaded with the `sigstore` crate. Secret material (PEM bytes,
//! passwords) lives in `Zeroizing` buffers and is wiped when dropped; it is
//! never formatted into an error.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use std::sync::Arc;

use sigstore::crypto::signing_key::{SigStoreKeyPair, SigStoreSigner};

use crate::azure::{CredentialKind, KeyVault, VaultKey};
use sigstore::crypto::{CosignVerificationKey, Signature, SigningScheme};
use zeroize::Zeroizing;

use crate::oci::digest::Digest;

/// The PEM labels cosign's encrypted private keys carry (legacy and current).
const ENCRYPTED_LABELS: [&str; 2] = ["ENCRYPTED COSIGN PRIVATE KEY", "ENCRYPTED SIGSTORE PRIVATE KEY"];

/// Where a key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    File(PathBuf),
    Env(String),
    AzureKms {
        vault: String,
        key: String,
        version: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid key reference {0:?}: {1}")]
    BadReference(String, &'static str),
    #[error("cannot read key file {path}: {detail}")]
    Unreadable { path: PathBuf, detail: String },
    #[error("environment variable {0} (named by env://{0}) is not set")]
    EnvMissing(String),
    #[error("{source_name}: {detail}")]
    Invalid { source_name: String, detail: String },
    #[error("{0}: cannot decrypt the private key: wrong password (COSIGN_PASSWORD), or not a cosign key")]
    Decrypt(String),
    #[error("{0}: the key is encrypted; set COSIGN_PASSWORD (no terminal to ask on)")]
    PasswordNeeded(String),
    #[error("no COSIGN_PASSWORD and no terminal to ask on: set COSIGN_PASSWORD (it may be empty)")]
    NewPasswordNeeded,
    #[error("the passwords differ")]
    PasswordsDiffer,
    #[error("{path} already exists; refusing to overwrite a key")]
    Exists { path: PathBuf },
    #[error("writing {path}: {detail}")]
    Write { path: PathBuf, detail: String },
    #[error(transparent)]
    Azure(#[from] crate::azure::AzureError),
    #[error("signing failed: {0}")]
    Sign(String),
}

impl FromStr for KeyRef {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(name) = text.strip_prefix("env://") {
            if name.is_empty() {
                return Err(KeyError::BadReference(
                    text.into(),
                    "env:// needs a variable name",
                ));
            }
            return Ok(KeyRef::Env(name.to_string()));
        }
        if let Some(rest) = text.strip_prefix("azurekms://") {
            let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
            return match parts.as_slice() {
                [vault, key] if !vault.is_empty() && !key.is_empty() => Ok(KeyRef::AzureKms {
                    vault: vault.to_string(),
                    key: key.to_string(),
                    version: None,
                }),
                [vault, key, version] if !vault.is_empty() && !key.is_empty() && !version.is_empty() => {
                    Ok(KeyRef::AzureKms {
                        vault: vault.to_string(),
                        key: key.to_string(),
                        version: Some(version.to_string()),
                    })
                }
                _ => Err(KeyError::BadReference(
                    text.into(),
                    "expected azurekms://VAULT_HOST/KEY[/VERSION]",
                )),
            };
        }
        if text.contains("://") {
            return Err(KeyError::BadReference(
                text.into(),
                "supported: a file path, env://VAR, azurekms://VAULT_HOST/KEY[/VERSION]",
            ));
        }
        if text.is_empty() {
            return Err(KeyError::BadReference(text.into(), "empty key reference"));
        }
        Ok(KeyRef::File(PathBuf::from(text)))
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::File(path) => write!(f, "{}", path.display()),
            KeyRef::Env(name) => write!(f, "env://{name}"),
            KeyRef::AzureKms { vault, key, version } => {
                write!(f, "azurekms://{vault}/{key}")?;
                if let Some(version) = version {
                    write!(f, "/{version}")?;
                }
                Ok(())
            }
        }
    }
}

impl KeyRef {
    /// The PEM text a file or env key holds.
    fn read_pem(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        match self {
            KeyRef::File(path) => std::fs::read(path)
                .map(Zeroizing::new)
                .map_err(|e| KeyError::Unreadable {
                    path: path.clone(),
                    detail: e.to_string(),
                }),
            KeyRef::Env(name) => std::env::var(name)
                .map(|v| Zeroizing::new(v.into_bytes()))
                .map_err(|_| KeyError::EnvMissing(name.clone())),
            KeyRef::AzureKms { .. } => unreachable!("vault keys are never read as PEM"),
        }
    }
}

/// `sha256:<hex>` of a public key's SubjectPublicKeyInfo DER: how records
/// and events name a key without carrying it.
pub fn key_id(spki_der: &[u8]) -> String {
    Digest::of(spki_der).to_string()
}

/// How a key's password is obtained.
pub enum Password {
    /// `COSIGN_PASSWORD` if set (empty is a valid password, as in cosign),
    /// else a prompt on the terminal if there is one.
    EnvOrPrompt,
    Given(Zeroizing<String>),
}

impl Password {
    fn get(&self, what: &str) -> Result<Zeroizing<String>, KeyError> {
        match self {
            Password::Given(password) => Ok(password.clone()),
            Password::EnvOrPrompt => {
                if let Ok(password) = std::env::var("COSIGN_PASSWORD") {
                    return Ok(Zeroizing::new(password));
                }
                rpassword::prompt_password(format!("Enter password for private key {what}: "))
                    .map(Zeroizing::new)
                    .map_err(|_| KeyError::PasswordNeeded(what.to_string()))
            }
        }
    }
}

/// The password for a new key: `COSIGN_PASSWORD` (empty is a valid
/// password, as in cosign), else asked twice on the terminal.
pub fn new_key_password() -> Result<Zeroizing<String>, KeyError> {
    if let Ok(password) = std::env::var("COSIGN_PASSWORD") {
        return Ok(Zeroizing::new(password));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|_| KeyError::NewPasswordNeeded)
    };
    let first = ask("Enter password for private key: ")?;
    let again = ask("Enter password for private key again: ")?;
    if first != again {
        return Err(KeyError::PasswordsDiffer);
    }
    Ok(first)
}

/// Where signing happens.
enum Backend {
    Local(SigStoreSigner),
    /// Azure Key Vault's sign operation; the private key never leaves it.
    Vault {
        vault: Arc<KeyVault>,
        key: VaultKey,
    },
}

/// A loaded private key (or vault key), ready to sign.
pub struct Signer {
    backend: Backend,
    spki_der: Vec<u8>,
    verifier: CosignVerificationKey,
    reference: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}, {})", self.reference, self.key_id())
    }
}

impl Signer {
    /// Loads a key: a PEM file or `env://` locally, a vault key by fetching
    /// its public key once (with the given Azure credential).
    pub async fn load(key: &KeyRef, password: &Password, azure: CredentialKind) -> Result<Signer, KeyError> {
        if let KeyRef::AzureKms {
            vault,
            key: name,
            version,
        } = key
        {
            let client = Arc::new(KeyVault::new(azure)?);
            let vault_key = client.public_key(vault, name, version.as_deref()).await?;
            let spki_der = vault_key.spki_der.clone();
            let verifier = CosignVerificationKey::try_from_der(&spki_der).map_err(|e| KeyError::Invalid {
                source_name: key.to_string(),
                detail: e.to_string(),
            })?;
            return Ok(Signer {
                backend: Backend::Vault {
                    vault: client,
                    key: vault_key,
                },
                spki_der,
                verifier,
                reference: key.to_string(),
            });
        }
        Signer::load_local(key, password)
    }

    /// Loads a PEM private key from a file or `env://`.
    pub fn load_local(key: &KeyRef, password: &Password) -> Result<Signer, KeyError> {
        let pem = key.read_pem()?;
        let name = key.to_string();
        let label = pem_label(&pem).ok_or_else(|| KeyError::Invalid {
            source_name: name.clone(),
            detail: "not a PEM private key".into(),
        })?;
        let pair = if ENCRYPTED_LABELS.contains(&label.as_str()) {
            let password = password.get(&name)?;
            SigStoreKeyPair::from_encrypted_pem(&pem, password.as_bytes())
                .map_err(|_| KeyError::Decrypt(name.clone()))?
        } else if label == "PRIVATE KEY" {
            SigStoreKeyPair::from_pem(&pem).map_err(|e| KeyError::Invalid {
                source_name: name.clone(),
                detail: e.to_string(),
            })?
        } else {
            return Err(KeyError::Invalid {
                source_name: name,
                detail: format!("a {label:?} PEM is not a cosign private key"),
            });
        };
        Signer::from_pair(pair, name)
    }

    fn from_pair(pair: SigStoreKeyPair, reference: String) -> Result<Signer, KeyError> {
        let invalid = |e: sigstore::errors::SigstoreError| KeyError::Invalid {
            source_name: reference.clone(),
            detail: e.to_string(),
        };
        let spki_der = pair.public_key_to_der().map_err(invalid)?;
        let signer = match &pair {
            SigStoreKeyPair::ECDSA(keys) => keys.to_sigstore_signer(),
            SigStoreKeyPair::ED25519(_) => pair.to_sigstore_signer(&SigningScheme::ED25519),
            SigStoreKeyPair::RSA(_) => pair.to_sigstore_signer(&SigningScheme::RSA_PKCS1_SHA256(0)),
        }
        .map_err(invalid)?;
        let verifier = signer.to_verification_key().map_err(invalid)?;
        Ok(Signer {
            backend: Backend::Local(signer),
            spki_der,
            verifier,
            reference,
        })
    }

    /// Signs `payload` (cosign signs the payload bytes; a vault signs their
    /// digest, which verifies the same).
    pub async fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.backend {
            Backend::Local(signer) => signer.sign(payload).map_err(|e| KeyError::Sign(e.to_string())),
            Backend::Vault { vault, key } => Ok(vault.sign(key, payload).await?),
        }
    }

    pub fn key_id(&self) -> String {
        key_id(&self.spki_der)
    }

    /// The key reference as the user gave it (`cosign.key`, `env://…`).
    pub fn reference(&self) -> &str {
        &self.reference
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key: self.verifier.clone(),
            spki_der: self.spki_der.clone(),
            reference: self.reference.clone(),
        }
    }
}

/// A public key, for verification.
#[derive(Clone)]
pub struct PublicKey {
    key: CosignVerificationKey,
    spki_der: Vec<u8>,
    reference: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}, {})", self.reference, self.key_id())
    }
}

impl PublicKey {
    /// Loads a PEM public key (`-----BEGIN PUBLIC KEY-----`), derives it
    /// from a private key, or fetches a vault key's public key once (then
    /// verification is local: no remote verify call per signature).
    pub async fn load(
        key: &KeyRef,
        password: &Password,
        azure: CredentialKind,
    ) -> Result<PublicKey, KeyError> {
        if matches!(key, KeyRef::AzureKms { .. }) {
            return Ok(Signer::load(key, password, azure).await?.public_key());
        }
        PublicKey::load_local(key, password)
    }

    /// [`PublicKey::load`] for PEM files and `env://` only.
    pub fn load_local(key: &KeyRef, password: &Password) -> Result<PublicKey, KeyError> {
        let pem = key.read_pem()?;
        let name = key.to_string();
        match pem_label(&pem).as_deref() {
            Some("PUBLIC KEY") => {
                let spki_der = pem_contents(&pem).ok_or_else(|| KeyError::Invalid {
                    source_name: name.clone(),
                    detail: "malformed PEM".into(),
                })?;
                let key = CosignVerificationKey::try_from_der(&spki_der).map_err(|e| KeyError::Invalid {
                    source_name: name.clone(),
                    detail: e.to_string(),
                })?;
                Ok(PublicKey {
                    key,
                    spki_der,
                    reference: name,
                })
            }
            _ => Ok(Signer::load_local(key, password)?.public_key()),
        }
    }

    pub fn verify(&self, signature: &[u8], payload: &[u8]) -> bool {
        self.key
            .verify_signature(Signature::Raw(signature), payload)
            .is_ok()
    }

    pub fn key_id(&self) -> String {
        key_id(&self.spki_der)
    }

    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// What `cosign verify --key` must be told to accept this key's
    /// signatures: cosign assumes sha256 for every key file, but a P-384
    /// key (an ES384 vault key) signs a sha384 digest.
    pub fn cosign_verify_flags(&self) -> Option<&'static str> {
        matches!(self.key, CosignVerificationKey::ECDSA_P384_SHA384_ASN1(_))
            .then_some("--signature-digest-algorithm sha384")
    }

    /// PEM `PUBLIC KEY`, as cosign writes `cosign.pub`.
    pub fn to_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.spki_der)
    }
}

/// Generates an ECDSA P-256 key pair in cosign's format: the private key
/// PKCS#8, encrypted with scrypt + NaCl secretbox under `password`, labelled
/// `ENCRYPTED SIGSTORE PRIVATE KEY` (what current cosign writes), mode 0600;
/// the public key as PEM. Refuses to overwrite either file.
pub fn generate_key_pair(
    private_path: &Path,
    public_path: &Path,
    password: &[u8],
) -> Result<String, KeyError> {
    for path in [private_path, public_path] {
        if path.exists() {
            return Err(KeyError::Exists {
                path: path.to_path_buf(),
            });
        }
    }
    let keys = sigstore::crypto::signing_key::ecdsa::ECDSAKeys::new(
        sigstore::crypto::signing_key::ecdsa::EllipticCurve::P256,
    )
    .map_err(|e| KeyError::Sign(e.to_string()))?;
    let pair = SigStoreKeyPair::ECDSA(keys);
    let encrypted = pair
        .private_key_to_encrypted_pem(password)
        .map_err(|e| KeyError::Sign(e.to_string()))?;
    // The pem crate writes CRLF line ends; cosign writes LF.
    let encrypted = Zeroizing::new(encrypted.replace("\r\n", "\n"));
    let spki_der = pair
        .public_key_to_der()
        .map_err(|e| KeyError::Sign(e.to_string()))?;
    let public = pem_encode("PUBLIC KEY", &spki_der);
    write_new(private_path, encrypted.as_bytes(), 0o600)?;
    if let Err(error) = write_new(public_path, public.as_bytes(), 0o644) {
        // Never leave half a key pair behind.
        let _ = std::fs::remove_file(private_path);
        return Err(error);
    }
    Ok(key_id(&spki_der))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let error = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            KeyError::Write {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)
}

fn pem_label(pem: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let end = text[start..].find("-----")?;
    Some(text[start..start + end].to_string())
}

fn pem_contents(pem: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body.trim()).ok()
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references() {
        assert_eq!(
            "cosign.key".parse::<KeyRef>().unwrap(),
            KeyRef::File("cosign.key".into())
        );
        assert_eq!("env://K".parse::<KeyRef>().unwrap(), KeyRef::Env("K".into()));
        assert_eq!(
            "azurekms://kv.vault.azure.net/cosign/abc"
                .parse::<KeyRef>()
                .unwrap(),
            KeyRef::AzureKms {
                vault: "kv.vault.azure.net".into(),
                key: "cosign".into(),
                version: Some("abc".into())
            }
        );
        assert!("azurekms://kv".parse::<KeyRef>().is_err());
        assert!("gcpkms://x/y".parse::<KeyRef>().is_err());
        assert!("env://".parse::<KeyRef>().is_err());
    }

    #[test]
    fn generated_pairs_sign_and_verify_and_refuse_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        let id = generate_key_pair(&private, &public, b"pw").unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            std::fs::read_to_string(&private)
                .unwrap()
                .starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
        );
        let signer = Signer::load_local(
            &KeyRef::File(private.clone()),
            &Password::Given(Zeroizing::new("pw".into())),
        )
        .unwrap();
        assert_eq!(signer.key_id(), id);
        let verifier = PublicKey::load_local(&KeyRef::File(public.clone()), &Password::EnvOrPrompt).unwrap();
        assert_eq!(verifier.key_id(), id);
        let signature = futures::executor::block_on(signer.sign(b"payload")).unwrap();
        assert!(verifier.verify(&signature, b"payload"));
        assert!(!verifier.verify(&signature, b"payloaD"));
        let wrong = Signer::load_local(
            &KeyRef::File(private.clone()),
            &Password::Given(Zeroizing::new("nope".into())),
        );
        assert!(matches!(wrong, Err(KeyError::Decrypt(_))));
        assert!(matches!(
            generate_key_pair(&private, &dir.path().join("other.pub"), b"pw"),
            Err(KeyError::Exists { .. })
        ));
    }
}
