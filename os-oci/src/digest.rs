//! Content digests (`sha256:<64 lowercase hex>`): parsing, computing and
//! comparing. A [`Digest`] is always well formed, so code holding one never
//! re-validates it.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated `sha256:` content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("malformed digest {value:?}: expected sha256: followed by 64 lowercase hex digits")]
    Malformed { value: String },
    #[error("unsupported digest algorithm in {value:?}: only sha256 is supported")]
    UnsupportedAlgorithm { value: String },
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The tag cosign derives from a digest (`sha256-<hex>`), before its
    /// `.sig`/`.att`/`.sbom` suffix.
    pub fn tag_form(&self) -> String {
        format!("sha256-{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let Some((algorithm, hex)) = value.split_once(':') else {
            return Err(DigestError::Malformed {
                value: value.to_string(),
            });
        };
        if algorithm != "sha256" {
            // sha512 is legal OCI but no registry we promote between uses it;
            // saying so beats a generic "malformed".
            return Err(
                if algorithm.chars().all(|c| c.is_ascii_alphanumeric()) && !algorithm.is_empty() {
                    DigestError::UnsupportedAlgorithm {
                        value: value.to_string(),
                    }
                } else {
                    DigestError::Malformed {
                        value: value.to_string(),
                    }
                },
            );
        }
        let well_formed = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Err(DigestError::Malformed {
                value: value.to_string(),
            });
        }
        Ok(Digest { hex: hex.to_string() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        value.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 for streamed content, so large blobs are hashed
/// while they pass through and never held whole.
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Digest {
        Digest {
            hex: hex::encode(self.0.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_sha256() {
        let text = format!("sha256:{}", "ab".repeat(32));
        let digest: Digest = text.parse().unwrap();
        assert_eq!(digest.to_string(), text);
        assert_eq!(digest.tag_form(), format!("sha256-{}", "ab".repeat(32)));
    }

    #[test]
    fn rejects_uppercase_short_and_other_algorithms() {
        assert!(matches!(
            format!("sha256:{}", "AB".repeat(32)).parse::<Digest>(),
            Err(DigestError::Malformed { .. })
        ));
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestError::Malformed { .. })
        ));
        assert!(matches!(
            format!("sha512:{}", "ab".repeat(64)).parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm { .. })
        ));
        assert!(matches!(
            "nonsense".parse::<Digest>(),
            Err(DigestError::Malformed { .. })
        ));
    }

    #[test]
    fn streamed_hash_equals_one_shot_hash() {
        let mut hasher = Hasher::default();
        hasher.update(b"hello ");
        hasher.update(b"world");
        assert_eq!(hasher.finish(), Digest::of(b"hello world"));
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
