//! Tamper-evident audit log (phase 8 of a request, see docs/ARCHITECTURE.md).
//!
//! One record per decision is appended to a hash chain of JSON Lines files
//! under `<data_dir>/audit/` by a single group-commit writer task:
//!
//! - **Record and chain** ([`AuditRecord`]): every record carries `prev`, the
//!   `hash` of the record before it (the first record of a log links to
//!   [`GENESIS_HASH`]), and its own `hash` = SHA-256 over its *canonical form*:
//!   the compact serde_json serialisation with the fields in the documented
//!   order and `hash` left out. On disk the line is exactly the canonical form
//!   with `,"hash":"<64 hex>"` inserted before the closing `}`, so a verifier in
//!   any language hashes the line's bytes up to that member plus `}`.
//! - **Subjects** are never stored in clear: `subject_ref` is
//!   HMAC-SHA256(`<certs_dir>/audit-hmac.key`, subject id) in hex
//!   ([`SubjectKey`]); auditors query by the plain id.
//! - **Checkpoints** are records too (`action = "checkpoint"`): they carry a
//!   `checkpoint` object with the covered head (`covers_seq`, `covers_hash`,
//!   i.e. the previous record) and an Ed25519 `signature` over
//!   [`checkpoint_message`]. They are written every `checkpoint_every` records,
//!   every `checkpoint_interval_secs` and at shutdown. The latest checkpoint line
//!   is also kept in `audit-head.json` (atomically replaced), so a log cut before
//!   its last checkpoint is reported as truncated.
//! - **Files** `audit-000001.jsonl`, ... rotate by size; a file's first record
//!   links to the previous file's last hash. On open the writer resumes from the
//!   last valid record; a torn tail is moved aside to
//!   `audit-NNNNNN.jsonl.torn-<unix secs>` and noted in an `audit.torn_tail`
//!   record.
//! - **Failure**: if a batch cannot be written its waiters get
//!   [`AuditError::Unavailable`], the file is cut back to the last good offset,
//!   [`AuditLog::is_healthy`] turns false, and the writer keeps retrying; the
//!   chain then continues from the last record actually written and an
//!   `audit.outage` record says how many appends were refused.

mod aggregate;
mod checkpoint;
mod config;
mod continuity;
mod error;
mod keys;
mod merge;
mod query;
mod record;
mod segment;
pub mod time;
mod verify;
mod witness;
mod writer;

#[cfg(test)]
mod tests;

pub use aggregate::{AggregateDecision, DenyAggregator};
pub use checkpoint::{HEAD_FILE, checkpoint_message};
pub use config::{AuditSettings, FsyncPolicy, RawAudit};
pub use error::AuditError;
pub use keys::{
    HMAC_KEY_FILE, SIGNING_KEY_FILE, SIGNING_PUB_FILE, SigningKeys, SubjectKey, check_fingerprint,
    key_fingerprint, load_public_key,
};
pub use merge::MergeByTime;
pub use query::{Filter, QueryFilter, QueryIter, QueryPage, query};
pub use record::{Action, AuditEvent, AuditRecord, Checkpoint, Decision, GENESIS_HASH, SubjectRef};
pub use time::{now_rfc3339, parse_rfc3339_micros};
pub use verify::{
    FailureKind, VerifyFailure, VerifyOptions, VerifyReport, WitnessHead, verify, verify_with,
    verify_witnessed,
};
pub use witness::{DirWitness, WITNESS_FILE, Witness, chain_node, read_witness};
pub use writer::{Appended, AuditLog, AuditStats, RecordSink, WriterHandle};
