//! The gateway's record-signing keys, in the certs directory:
//!
//! - `record-signing.key`: the current Ed25519 private key (32-byte seed,
//!   hex, mode 0600), generated on first start; never committed.
//! - `record-signing.jwks.json`: the public keys, current first, then the
//!   previous keys kept for verification. Served at `/.well-known/jwks.json`
//!   and the default key set of `onewindow record verify`.
//!
//! Rotation ([`RecordKeys::rotate`], `onewindow record rotate-key`): a new
//! key becomes current and the old public key stays in the JWKS, so records
//! signed before the rotation keep verifying. Retire an old key by deleting
//! its entry from the JWKS file once no archived record needs it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand::Rng;

use super::error::KeyError;
use super::jws::{Jwk, Jwks, sign_detached};

/// File name of the current record-signing private key under the certs dir.
pub const RECORD_KEY_FILE: &str = "record-signing.key";
/// File name of the record-signing JWK Set under the certs dir.
pub const RECORD_JWKS_FILE: &str = "record-signing.jwks.json";

/// The current signing key and the published key set.
#[derive(Clone)]
pub struct RecordKeys {
    signing: SigningKey,
    kid: String,
    jwks: Jwks,
}

impl std::fmt::Debug for RecordKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordKeys(kid {})", self.kid)
    }
}

impl RecordKeys {
    /// Keys from a seed, with a JWKS of that key alone (tests).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let jwk = Jwk::ed25519(&signing.verifying_key());
        Self {
            kid: jwk.kid.clone().unwrap_or_default(),
            jwks: Jwks { keys: vec![jwk] },
            signing,
        }
    }

    /// Loads the current key from `<certs_dir>/record-signing.key` (generating
    /// it when missing) and the JWKS beside it; the current key is put first
    /// in the JWKS (rewritten when it was not there). Returns the keys and
    /// whether a key was generated.
    pub fn load_or_generate(certs_dir: &Path) -> Result<(Self, bool), KeyError> {
        let key_path = certs_dir.join(RECORD_KEY_FILE);
        let generated = !key_path.exists();
        if generated {
            fs::create_dir_all(certs_dir).map_err(|e| KeyError::io(certs_dir, e))?;
            write_private(&key_path, &random_seed())?;
        }
        let seed = read_private(&key_path)?;
        let jwks_path = certs_dir.join(RECORD_JWKS_FILE);
        let published = match fs::read(&jwks_path) {
            Ok(bytes) => serde_json::from_slice::<Jwks>(&bytes).map_err(|e| {
                KeyError::invalid(
                    &jwks_path,
                    format!("not a JWK Set ({e}); restore it from a backup or move it aside to start a new one"),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Jwks::default(),
            Err(e) => return Err(KeyError::io(&jwks_path, e)),
        };
        let mut keys = Self::from_seed(seed);
        let current = keys.jwks.keys.clone();
        let mut merged = current.clone();
        merged.extend(
            published
                .keys
                .into_iter()
                .filter(|k| k.kid.as_deref() != Some(keys.kid.as_str())),
        );
        keys.jwks = Jwks { keys: merged };
        if fs::read(&jwks_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Jwks>(&b).ok())
            != Some(keys.jwks.clone())
        {
            write_public(&jwks_path, &keys.jwks)?;
        }
        Ok((keys, generated))
    }

    /// Makes a new current key; the previous one stays in the JWKS for
    /// verification. Returns the old and new key ids. A running gateway
    /// signs with the new key after its next start.
    pub fn rotate(certs_dir: &Path) -> Result<(String, String), KeyError> {
        let (old, _) = Self::load_or_generate(certs_dir)?;
        let new = Self::from_seed(random_seed());
        let mut jwks = new.jwks.clone();
        jwks.keys.extend(old.jwks.keys.iter().cloned());
        // Publish the new public key before the private key switches, so a
        // record signed with it is never without its key.
        write_public(&certs_dir.join(RECORD_JWKS_FILE), &jwks)?;
        let key_path = certs_dir.join(RECORD_KEY_FILE);
        let tmp = certs_dir.join(format!("{RECORD_KEY_FILE}.new"));
        let _ = fs::remove_file(&tmp);
        write_private(&tmp, &new.signing.to_bytes())?;
        fs::rename(&tmp, &key_path).map_err(|e| KeyError::io(&key_path, e))?;
        Ok((old.kid, new.kid))
    }

    /// The current key's id (RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The published public keys (current first).
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// A compact detached JWS over `payload` with the current key.
    pub fn sign(&self, payload: &[u8]) -> String {
        sign_detached(&self.signing, &self.kid, payload)
    }
}

/// Reads a JWK Set file (for `onewindow record verify --jwks`).
pub fn read_jwks(path: &Path) -> Result<Jwks, KeyError> {
    let bytes = fs::read(path).map_err(|e| KeyError::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| KeyError::invalid(path, format!("not a JWK Set: {e}")))
}

fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    seed
}

fn read_private(path: &Path) -> Result<[u8; 32], KeyError> {
    let meta = fs::metadata(path).map_err(|e| KeyError::io(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyError::invalid(
            path,
            "readable by group or others; run `chmod 600` on it",
        ));
    }
    let text = fs::read_to_string(path).map_err(|e| KeyError::io(path, e))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| {
        KeyError::invalid(
            path,
            "expected 64 hex characters; restore the key or move it aside to generate a new one",
        )
    })?;
    Ok(seed)
}

fn write_private(path: &Path, seed: &[u8; 32]) -> Result<(), KeyError> {
    let err = |e| KeyError::io(PathBuf::from(path), e);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(format!("{}\n", hex::encode(seed)).as_bytes())
        .map_err(err)?;
    f.sync_all().map_err(err)
}

/// Atomically replaces the JWKS file (write beside, then rename).
fn write_public(path: &Path, jwks: &Jwks) -> Result<(), KeyError> {
    let err = |e| KeyError::io(PathBuf::from(path), e);
    let mut text = serde_json::to_vec_pretty(jwks).map_err(|e| err(std::io::Error::other(e)))?;
    text.push(b'\n');
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&text).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_loaded_and_rotated_with_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, generated) = RecordKeys::load_or_generate(dir.path()).unwrap();
        assert!(generated);
        let mode = fs::metadata(dir.path().join(RECORD_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, generated) = RecordKeys::load_or_generate(dir.path()).unwrap();
        assert!(!generated);
        assert_eq!(again.kid(), k1.kid());

        let (old, new) = RecordKeys::rotate(dir.path()).unwrap();
        assert_eq!(old, k1.kid());
        let (k2, _) = RecordKeys::load_or_generate(dir.path()).unwrap();
        assert_eq!(k2.kid(), new);
        let kids: Vec<_> = k2
            .jwks()
            .keys
            .iter()
            .filter_map(|k| k.kid.clone())
            .collect();
        assert_eq!(
            kids,
            vec![new.clone(), old.clone()],
            "current first, old kept"
        );
        let on_disk = read_jwks(&dir.path().join(RECORD_JWKS_FILE)).unwrap();
        assert_eq!(&on_disk, k2.jwks());
        // The published file holds no private material.
        let text = fs::read_to_string(dir.path().join(RECORD_JWKS_FILE)).unwrap();
        assert!(!text.contains("\"d\""));
    }
}
