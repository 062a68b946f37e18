//! Audit keys: the HMAC key for subject references and the Ed25519 checkpoint
//! key. Both are generated on first start (mode 0600) and loaded afterwards.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;

use super::error::AuditError;
use super::record::SubjectRef;

/// File name of the subject HMAC key under `<certs_dir>` (32 bytes, hex).
pub const HMAC_KEY_FILE: &str = "audit-hmac.key";
/// File name of the Ed25519 checkpoint signing key (32-byte seed, hex).
pub const SIGNING_KEY_FILE: &str = "audit-signing.key";
/// File name of the published Ed25519 public key (32 bytes, hex).
pub const SIGNING_PUB_FILE: &str = "audit-signing.pub";

/// The key that turns subject ids into [`SubjectRef`]s.
#[derive(Clone)]
pub struct SubjectKey {
    // Keyed once; cloning the state is cheaper than re-keying per call.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

impl SubjectKey {
    /// A key from raw bytes (tests, key escrow tooling).
    pub fn from_bytes(key: [u8; 32]) -> Self {
        // RFC 2104 zero-pads keys shorter than the block (64 bytes): same MAC as
        // keying with the 32 bytes, without a fallible constructor.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&key);
        Self {
            mac: <Hmac<Sha256> as KeyInit>::new(&block.into()),
        }
    }

    /// Loads `<certs_dir>/audit-hmac.key`, generating it (0600) when missing.
    pub fn load_or_generate(certs_dir: &Path) -> Result<Self, AuditError> {
        let path = certs_dir.join(HMAC_KEY_FILE);
        Ok(Self::from_bytes(load_or_generate_secret(&path)?))
    }

    /// Loads `<certs_dir>/audit-hmac.key`; never generates (query side).
    pub fn load(certs_dir: &Path) -> Result<Self, AuditError> {
        let path = certs_dir.join(HMAC_KEY_FILE);
        Ok(Self::from_bytes(read_secret(&path)?))
    }

    /// HMAC-SHA256(key, subject id), hex.
    pub fn subject_ref(&self, subject_id: &str) -> SubjectRef {
        let mut mac = self.mac.clone();
        mac.update(subject_id.as_bytes());
        SubjectRef(hex::encode(mac.finalize().into_bytes()))
    }
}

/// The checkpoint signing key pair.
#[derive(Clone)]
pub struct SigningKeys {
    pub(crate) signing: SigningKey,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKeys(pub {})",
            hex::encode(self.public().as_bytes())
        )
    }
}

impl SigningKeys {
    /// A key pair from a 32-byte seed (tests).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Loads `<certs_dir>/audit-signing.key` (generating it, 0600, when missing)
    /// and writes `<certs_dir>/audit-signing.pub` when missing. A published key
    /// that does not match the private key is an error (never overwritten).
    pub fn load_or_generate(certs_dir: &Path) -> Result<Self, AuditError> {
        let path = certs_dir.join(SIGNING_KEY_FILE);
        let seed = load_or_generate_secret(&path)?;
        let keys = Self::from_seed(seed);
        let pub_path = certs_dir.join(SIGNING_PUB_FILE);
        let pub_hex = hex::encode(keys.public().as_bytes());
        match fs::read_to_string(&pub_path) {
            Ok(text) if text.trim() == pub_hex => {}
            Ok(_) => {
                return Err(AuditError::Key {
                    path: pub_path,
                    problem: format!(
                        "does not match {SIGNING_KEY_FILE}; restore the matching pair \
                         (or move both aside to start a new key, keeping the old public key for verification)"
                    ),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_new(&pub_path, format!("{pub_hex}\n").as_bytes(), 0o644)?;
            }
            Err(e) => return Err(AuditError::io(pub_path, e)),
        }
        Ok(keys)
    }

    /// The public key auditors verify checkpoints with.
    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }
}

/// The fingerprint that pins a checkpoint key: SHA-256 of its 32 bytes, hex
/// (what `[audit] signing_key_fingerprint` and `--key-fingerprint` hold).
pub fn key_fingerprint(key: &VerifyingKey) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Checks `key` against a pinned fingerprint (hex, case-insensitive); `Err`
/// names the key file and what to do.
pub fn check_fingerprint(key: &VerifyingKey, pinned: &str, path: &Path) -> Result<(), AuditError> {
    let actual = key_fingerprint(key);
    if actual.eq_ignore_ascii_case(pinned.trim()) {
        return Ok(());
    }
    Err(AuditError::Key {
        path: path.to_path_buf(),
        problem: format!(
            "key fingerprint {actual} is not the pinned {}; the key was replaced: \
             verify with the original public key, or investigate who replaced it",
            pinned.trim()
        ),
    })
}

/// Reads a published public key (hex, as in `audit-signing.pub`).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, AuditError> {
    let text = fs::read_to_string(path).map_err(|e| AuditError::io(path, e))?;
    let bytes = decode32(path, text.trim())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| AuditError::Key {
        path: path.to_path_buf(),
        problem: "not a valid Ed25519 public key".into(),
    })
}

fn decode32(path: &Path, text: &str) -> Result<[u8; 32], AuditError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| AuditError::Key {
        path: path.to_path_buf(),
        problem: "expected 64 hex characters".into(),
    })?;
    Ok(out)
}

fn read_secret(path: &Path) -> Result<[u8; 32], AuditError> {
    let meta = fs::metadata(path).map_err(|e| AuditError::io(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(AuditError::Key {
            path: path.to_path_buf(),
            problem: "readable by group or others; run `chmod 600` on it".into(),
        });
    }
    let text = fs::read_to_string(path).map_err(|e| AuditError::io(path, e))?;
    decode32(path, text.trim())
}

fn load_or_generate_secret(path: &Path) -> Result<[u8; 32], AuditError> {
    if path.exists() {
        return read_secret(path);
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| AuditError::io(parent, e))?;
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    write_new(path, format!("{}\n", hex::encode(key)).as_bytes(), 0o600)?;
    Ok(key)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AuditError> {
    let err = |e| AuditError::io(PathBuf::from(path), e);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(())
}
