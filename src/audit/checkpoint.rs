//! Signed checkpoints: the message signed, and the `audit-head.json` sidecar
//! that remembers the latest checkpoint so truncation before it is detected.

use std::fs;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};

use super::keys::SigningKeys;
use super::record::{Action, AuditEvent, AuditRecord, Chained, Checkpoint, Decision};

/// Name of the sidecar holding the latest checkpoint line, in the log directory.
pub const HEAD_FILE: &str = "audit-head.json";

/// The bytes an Ed25519 checkpoint signature covers:
/// `onewindow-audit-checkpoint-v1\n<covers_seq>\n<covers_hash>`.
pub fn checkpoint_message(covers_seq: u64, covers_hash: &str) -> Vec<u8> {
    format!("onewindow-audit-checkpoint-v1\n{covers_seq}\n{covers_hash}").into_bytes()
}

/// Builds the (unsealed) checkpoint record for the head `(seq - 1, prev)`.
pub(crate) fn checkpoint_record(
    keys: &SigningKeys,
    seq: u64,
    prev: &str,
    time: String,
) -> AuditRecord {
    let covers_seq = seq - 1;
    let sig = keys.signing.sign(&checkpoint_message(covers_seq, prev));
    let mut ev = AuditEvent::new(Action::CHECKPOINT, Decision::Allow);
    ev.time = time;
    ev.client = Some("onewindow".into());
    let mut rec = AuditRecord::from_event(ev, seq, prev.to_string());
    rec.checkpoint = Some(Checkpoint {
        covers_seq,
        covers_hash: prev.to_string(),
        signature: hex::encode(sig.to_bytes()),
    });
    rec
}

/// Checks a checkpoint record's fields and signature; `Err` says what is wrong.
pub(crate) fn check_checkpoint(rec: &impl Chained, key: &VerifyingKey) -> Result<(), String> {
    let Some(cp) = rec.checkpoint() else {
        return Err("checkpoint record without `checkpoint` object".into());
    };
    if rec.action() != Action::CHECKPOINT.as_str() {
        return Err(format!(
            "`checkpoint` object on a `{}` record",
            rec.action()
        ));
    }
    if cp.covers_seq + 1 != rec.seq() || cp.covers_hash != rec.prev() {
        return Err("checkpoint does not cover the record before it".into());
    }
    let mut sig = [0u8; 64];
    hex::decode_to_slice(&cp.signature, &mut sig)
        .map_err(|_| "signature is not 128 hex characters".to_string())?;
    key.verify(
        &checkpoint_message(cp.covers_seq, &cp.covers_hash),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| "Ed25519 signature does not verify with the given public key".to_string())
}

/// Atomically replaces the head sidecar with `line` (write temp, fsync, rename, fsync dir).
pub(crate) fn write_head(dir: &Path, line: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(line)?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join(HEAD_FILE))?;
    fs::File::open(dir)?.sync_all()
}
