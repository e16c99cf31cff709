//! The access keys `botmeter receive` accepts in `X-Amz-Firehose-Access-Key`. The file holds their
//! SHA-256 digests, never the keys (the key itself is configured in Firehose):
//!
//! ```toml
//! [[keys]]
//! name = "firehose-2026-12"   # shown in logs; never the key
//! sha256 = "…"                # printf %s "$KEY" | sha256sum
//! ```
//!
//! Several keys may be live at once, for rotation: add the new one, switch the Firehose stream,
//! then remove the old one. A presented key is hashed and compared with every stored digest in
//! constant time (`subtle`), so neither timing nor the key's length tells which digest is close.

use std::path::Path;

use anyhow::{bail, Context as _};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The keys file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    /// At least one key; each digest once.
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

/// One key of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    /// Who holds the key (a Firehose stream), for logs.
    name: String,
    /// The key's SHA-256 digest, 64 hex digits.
    sha256: String,
}

/// The validated keys.
#[derive(Clone)]
pub struct AccessKeys {
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(name, _)| name))
            .finish()
    }
}

impl AccessKeys {
    /// Reads and checks the keys file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the access keys file {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Checks keys file text (no IO): at least one key, names and digests unique.
    pub fn parse(path: &Path, text: &str) -> anyhow::Result<Self> {
        let file: KeysFile = toml::from_str(text)
            .with_context(|| format!("invalid access keys file {}", path.display()))?;
        if file.keys.is_empty() {
            bail!(
                "access keys file {}: field keys: the file has no keys (receive refuses to run open)",
                path.display()
            );
        }
        let mut keys: Vec<(String, [u8; 32])> = Vec::with_capacity(file.keys.len());
        for (i, entry) in file.keys.into_iter().enumerate() {
            let field = |name: &str| {
                format!(
                    "access keys file {}: field keys[{i}].{name}",
                    path.display()
                )
            };
            if entry.name.trim().is_empty() {
                bail!("{}: must not be empty", field("name"));
            }
            if keys.iter().any(|(name, _)| *name == entry.name) {
                bail!("{}: {:?} is used twice", field("name"), entry.name);
            }
            let digest = hex::decode(&entry.sha256)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .with_context(|| {
                    format!(
                        "{}: expected 64 hex digits (the SHA-256 of the key, not the key), found {} characters",
                        field("sha256"),
                        entry.sha256.len()
                    )
                })?;
            if let Some((other, _)) = keys.iter().find(|(_, d)| *d == digest) {
                bail!(
                    "{}: digest {} is also the digest of {other:?}: each key must be unique",
                    field("sha256"),
                    hex::encode(digest)
                );
            }
            keys.push((entry.name, digest));
        }
        Ok(Self { keys })
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The name of the key `presented` is, compared with every digest in constant time.
    pub fn check(&self, presented: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (name, stored) in &self.keys {
            if bool::from(stored.ct_eq(&digest)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// The SHA-256 digest of `key`, as the keys file holds it (tests and docs).
pub fn digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_live_key_is_accepted_and_nothing_else() {
        let text = format!(
            "[[keys]]\nname = \"old\"\nsha256 = \"{}\"\n[[keys]]\nname = \"new\"\nsha256 = \"{}\"\n",
            digest_hex("old-key"),
            digest_hex("new-key").to_uppercase()
        );
        let keys = AccessKeys::parse(Path::new("k.toml"), &text).unwrap();
        assert_eq!(keys.check("old-key"), Some("old"));
        assert_eq!(keys.check("new-key"), Some("new"));
        assert_eq!(keys.check("new-key "), None);
        assert_eq!(keys.check(""), None);
        // The debug form names keys, never digests.
        assert_eq!(format!("{keys:?}"), r#"["old", "new"]"#);
    }

    #[test]
    fn a_bad_file_names_the_field() {
        let cases = [
            ("", "field keys: the file has no keys"),
            ("[[keys]]\nname = \"a\"\nsha256 = \"secret\"", "keys[0].sha256: expected 64 hex digits"),
            (
                &format!(
                    "[[keys]]\nname = \"a\"\nsha256 = \"{0}\"\n[[keys]]\nname = \"b\"\nsha256 = \"{0}\"",
                    digest_hex("k")
                ),
                "keys[1].sha256: digest",
            ),
            ("[[keys]]\nname = \"\"\nsha256 = \"00\"", "keys[0].name: must not be empty"),
            ("[[keys]]\nname = \"a\"\nkey = \"x\"", "unknown field"),
        ];
        for (text, expected) in cases {
            let err = format!(
                "{:#}",
                AccessKeys::parse(Path::new("k.toml"), text).unwrap_err()
            );
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
