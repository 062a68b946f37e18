//! The typed audit record, its canonical form and its hash.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::time::now_rfc3339;

/// `prev` of the first record of a log: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What was decided about; an enum-like string so that logs written by newer
/// versions still parse. Use the associated constants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Action(Cow<'static, str>);

impl Action {
    /// `GET /v1/datasets/{dataset}/{subject}`.
    pub const DATASET_READ: Action = Action::new("dataset.read");
    /// `POST /v1/scenarios/{scenario}` (the whole scenario).
    pub const SCENARIO_RUN: Action = Action::new("scenario.run");
    /// One part of a scenario.
    pub const SCENARIO_PART: Action = Action::new("scenario.part");
    /// Pass-through proxy call.
    pub const PROXY: Action = Action::new("proxy");
    /// `PUT /admin/adapters/{department}`.
    pub const ADMIN_ADAPTER_PUT: Action = Action::new("admin.adapter.put");
    /// `DELETE /admin/adapters/{department}`.
    pub const ADMIN_ADAPTER_DELETE: Action = Action::new("admin.adapter.delete");
    /// `POST /admin/cache/invalidate`.
    pub const ADMIN_CACHE_INVALIDATE: Action = Action::new("admin.cache.invalidate");
    /// `POST /admin/reload` or SIGHUP.
    pub const ADMIN_RELOAD: Action = Action::new("admin.reload");
    /// Authentication refused (401).
    pub const AUTH_DENIED: Action = Action::new("auth.denied");
    /// Rate limit hit (429).
    pub const RATE_LIMITED: Action = Action::new("rate.limited");
    /// Signed checkpoint (written by the audit writer only).
    pub const CHECKPOINT: Action = Action::new("checkpoint");
    /// A torn tail found on open was moved aside (audit writer only).
    pub const AUDIT_TORN_TAIL: Action = Action::new("audit.torn_tail");
    /// The log could not be written for a while (audit writer only).
    pub const AUDIT_OUTAGE: Action = Action::new("audit.outage");

    /// An action from a static name.
    pub const fn new(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    /// An action from a runtime name (e.g. a new admin operation).
    pub fn from_name(name: impl Into<String>) -> Self {
        Self(Cow::Owned(name.into()))
    }

    /// The action's name as written in the log.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The decision recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Served (or admin change applied).
    Allow,
    /// Refused by policy (401/403/429...).
    Deny,
    /// Failed (department error, timeout...).
    Error,
}

impl Decision {
    /// `allow`, `deny` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Error => "error",
        }
    }
}

/// A keyed reference to a subject id (HMAC-SHA256, hex). Only
/// [`crate::audit::SubjectKey::subject_ref`] builds one from a plain id, so a raw
/// subject id cannot end up in the log by mistake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubjectRef(pub(crate) String);

impl SubjectRef {
    /// The hex reference.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the caller knows about one decision; the writer adds `seq`, `prev`
/// and `hash`. Strings from callers (headers, paths) are escaped by serde_json,
/// so they can neither break the line nor forge a field.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Decision time, RFC 3339 UTC (see [`crate::audit::now_rfc3339`]).
    pub time: String,
    /// The request id also returned in problem+json.
    pub request_id: Option<String>,
    /// The authenticated client (token `sub`), or the peer IP when unauthenticated.
    pub client: Option<String>,
    /// `X-End-User` (who at the window), when given.
    pub end_user: Option<String>,
    /// `X-Purpose`.
    pub purpose: Option<String>,
    /// `X-Case-Id`.
    pub case_id: Option<String>,
    /// The approval a conditionally shared dataset's read rests on.
    pub approval: Option<String>,
    /// What was attempted.
    pub action: Action,
    /// Department concerned.
    pub department: Option<String>,
    /// Dataset concerned.
    pub dataset: Option<String>,
    /// Scenario concerned.
    pub scenario: Option<String>,
    /// Keyed reference of the subject id (never the id itself).
    pub subject_ref: Option<SubjectRef>,
    /// allow / deny / error.
    pub decision: Decision,
    /// Why (policy rule, error kind); never a token or secret.
    pub reason: Option<String>,
    /// HTTP status returned to the caller.
    pub status: Option<u16>,
    /// `hit`, `miss` or `stale`.
    pub cache: Option<String>,
    /// The department's HTTP status, when called.
    pub upstream_status: Option<u16>,
    /// Time spent on the request in microseconds.
    pub latency_us: Option<u64>,
}

impl AuditEvent {
    /// An event stamped now, with every optional field empty.
    pub fn new(action: Action, decision: Decision) -> Self {
        Self {
            time: now_rfc3339(),
            request_id: None,
            client: None,
            end_user: None,
            purpose: None,
            case_id: None,
            approval: None,
            action,
            department: None,
            dataset: None,
            scenario: None,
            subject_ref: None,
            decision,
            reason: None,
            status: None,
            cache: None,
            upstream_status: None,
            latency_us: None,
        }
    }
}

/// The signed part of a checkpoint record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Sequence number of the head covered (the record just before the checkpoint).
    pub covers_seq: u64,
    /// Hash of that record (equal to the checkpoint record's `prev`).
    pub covers_hash: String,
    /// Ed25519 signature over [`crate::audit::checkpoint_message`], hex (128 chars).
    pub signature: String,
}

/// One line of the log, as stored. Field order here is the canonical order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// 1-based, contiguous across files.
    pub seq: u64,
    /// See [`AuditEvent::time`].
    pub time: String,
    /// See [`AuditEvent`].
    pub request_id: Option<String>,
    /// See [`AuditEvent`].
    pub client: Option<String>,
    /// See [`AuditEvent`].
    pub end_user: Option<String>,
    /// See [`AuditEvent`].
    pub purpose: Option<String>,
    /// See [`AuditEvent`].
    pub case_id: Option<String>,
    /// See [`AuditEvent::approval`]. Omitted (not `null`) when absent, so
    /// records written before the field existed keep their canonical form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// See [`AuditEvent`].
    pub action: Action,
    /// See [`AuditEvent`].
    pub department: Option<String>,
    /// See [`AuditEvent`].
    pub dataset: Option<String>,
    /// See [`AuditEvent`].
    pub scenario: Option<String>,
    /// See [`AuditEvent`].
    pub subject_ref: Option<SubjectRef>,
    /// See [`AuditEvent`].
    pub decision: Decision,
    /// See [`AuditEvent`].
    pub reason: Option<String>,
    /// See [`AuditEvent`].
    pub status: Option<u16>,
    /// See [`AuditEvent`].
    pub cache: Option<String>,
    /// See [`AuditEvent`].
    pub upstream_status: Option<u16>,
    /// See [`AuditEvent`].
    pub latency_us: Option<u64>,
    /// Present on checkpoint records only.
    pub checkpoint: Option<Checkpoint>,
    /// Hash of the previous record ([`GENESIS_HASH`] for the first).
    pub prev: String,
    /// SHA-256 of the canonical form, hex.
    pub hash: String,
}

/// Length of the `,"hash":"<64 hex>"}` suffix of every line.
pub(crate) const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

impl AuditRecord {
    /// Builds a record from an event; `hash` is filled by [`Self::to_line`].
    pub(crate) fn from_event(ev: AuditEvent, seq: u64, prev: String) -> Self {
        Self {
            seq,
            time: ev.time,
            request_id: ev.request_id,
            client: ev.client,
            end_user: ev.end_user,
            purpose: ev.purpose,
            case_id: ev.case_id,
            approval: ev.approval,
            action: ev.action,
            department: ev.department,
            dataset: ev.dataset,
            scenario: ev.scenario,
            subject_ref: ev.subject_ref,
            decision: ev.decision,
            reason: ev.reason,
            status: ev.status,
            cache: ev.cache,
            upstream_status: ev.upstream_status,
            latency_us: ev.latency_us,
            checkpoint: None,
            prev,
            hash: String::new(),
        }
    }

    /// Sets `hash` from the canonical form and returns the full line
    /// (with its trailing `\n`).
    pub(crate) fn seal(&mut self) -> Result<Vec<u8>, serde_json::Error> {
        self.hash = String::new();
        let mut line = serde_json::to_vec(self)?;
        // `hash` is the last field and serialised as `,"hash":""}`: drop it to get
        // the canonical form, hash that, and write the hash back in.
        let empty_suffix = br#","hash":""}"#;
        line.truncate(line.len() - empty_suffix.len());
        line.push(b'}');
        let digest = Sha256::digest(&line);
        self.hash = hex::encode(digest);
        line.pop();
        line.extend_from_slice(br#","hash":""#);
        line.extend_from_slice(self.hash.as_bytes());
        line.extend_from_slice(b"\"}\n");
        Ok(line)
    }
}

/// The chain-relevant fields of a parsed line (owned or borrowed record).
pub(crate) trait Chained {
    fn seq(&self) -> u64;
    fn prev(&self) -> &str;
    fn hash(&self) -> &str;
    fn action(&self) -> &str;
    fn checkpoint(&self) -> Option<&Checkpoint>;
}

impl Chained for AuditRecord {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn prev(&self) -> &str {
        &self.prev
    }
    fn hash(&self) -> &str {
        &self.hash
    }
    fn action(&self) -> &str {
        self.action.as_str()
    }
    fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }
}

/// A record borrowed from its line (no allocation unless a string has
/// escapes): what `verify` parses, with the same schema as [`AuditRecord`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // fields are parsed to validate the schema
pub(crate) struct RecordView<'a> {
    pub seq: u64,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    #[serde(borrow)]
    pub request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub client: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub end_user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub purpose: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub case_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub approval: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(borrow)]
    pub department: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub dataset: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub scenario: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub subject_ref: Option<Cow<'a, str>>,
    pub decision: Decision,
    #[serde(borrow)]
    pub reason: Option<Cow<'a, str>>,
    pub status: Option<u16>,
    #[serde(borrow)]
    pub cache: Option<Cow<'a, str>>,
    pub upstream_status: Option<u16>,
    pub latency_us: Option<u64>,
    pub checkpoint: Option<Checkpoint>,
    #[serde(borrow)]
    pub prev: Cow<'a, str>,
    #[serde(borrow)]
    pub hash: Cow<'a, str>,
}

impl Chained for RecordView<'_> {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn prev(&self) -> &str {
        &self.prev
    }
    fn hash(&self) -> &str {
        &self.hash
    }
    fn action(&self) -> &str {
        &self.action
    }
    fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }
}

/// Why one line is not a valid record.
#[derive(Debug)]
pub(crate) enum LineError<T> {
    /// Not a record at all (not JSON, unknown fields, not canonical).
    Garbage(String),
    /// A record whose stored hash does not match its content.
    HashMismatch(Box<T>),
}

/// Parses one line (without its `\n`) and checks its own hash.
pub(crate) fn parse_line(line: &[u8]) -> Result<AuditRecord, LineError<AuditRecord>> {
    parse_line_as(line)
}

/// [`parse_line`] into any record shape.
pub(crate) fn parse_line_as<'a, T: Deserialize<'a> + Chained>(
    line: &'a [u8],
) -> Result<T, LineError<T>> {
    let rec: T = serde_json::from_slice(line).map_err(|e| LineError::Garbage(e.to_string()))?;
    if line.len() < HASH_SUFFIX_LEN + 2 {
        return Err(LineError::Garbage("line too short".into()));
    }
    let split = line.len() - HASH_SUFFIX_LEN;
    let (body, suffix) = line.split_at(split);
    let hash = rec.hash().as_bytes();
    let well_formed = suffix.starts_with(br#","hash":""#)
        && suffix.ends_with(b"\"}")
        && &suffix[9..9 + 64] == hash
        && hash.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let mut stored = [0u8; 32];
    if !well_formed || hex::decode_to_slice(hash, &mut stored).is_err() {
        return Err(LineError::Garbage(
            "`hash` is not the last member in canonical form".into(),
        ));
    }
    let mut h = Sha256::new();
    h.update(body);
    h.update(b"}");
    if h.finalize().as_slice() != stored {
        return Err(LineError::HashMismatch(Box::new(rec)));
    }
    Ok(rec)
}
