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
    /// On start the log did not reach its signed head (records cut or
    /// replaced); names the missing seqs. `audit verify` fails on it for ever.
    pub const AUDIT_GAP: Action = Action::new("audit.gap");
    /// A pre-authentication refusal (unknown route, bad method, limits).
    pub const REQUEST_REFUSED: Action = Action::new(Self::REQUEST_REFUSED_NAME);
    /// The name of [`Action::REQUEST_REFUSED`].
    pub const REQUEST_REFUSED_NAME: &'static str = "request.refused";
    /// The name of [`Action::AUTH_DENIED`].
    pub const AUTH_DENIED_NAME: &'static str = "auth.denied";

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
/// and `hash` to make an [`AuditRecord`]. Strings from callers (headers,
/// paths) are escaped by serde_json, so they can neither break the line nor
/// forge a field. Field order here is the order in the log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The approval a conditionally shared dataset's read rests on. Omitted
    /// (not `null`) when absent, so records written before the field existed
    /// keep their canonical form and hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// Cluster mode: the node that wrote the record (set by the writer).
    /// Absent, not null, outside cluster mode, so lines written before it
    /// existed keep their canonical form and hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
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
            node: None,
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

/// One line of the log, as stored: `seq`, the event's fields, then
/// `checkpoint`, `prev` and `hash`. Field order here is the canonical order;
/// the event is flattened, so the line is one flat JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// 1-based, contiguous across files.
    pub seq: u64,
    /// What was decided (`time` ... `latency_us`).
    #[serde(flatten)]
    pub event: AuditEvent,
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
    pub(crate) fn from_event(event: AuditEvent, seq: u64, prev: String) -> Self {
        Self {
            seq,
            event,
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
/// An event serialised on the caller's task, ready for the writer to chain
/// (its JSON object, whose inside appears as is in the record line).
#[derive(Debug, Clone)]
pub(crate) struct EventFields(Vec<u8>);

impl EventFields {
    /// Serialises `event` (the record's own field order and spelling).
    pub(crate) fn of(event: &AuditEvent) -> Result<Self, serde_json::Error> {
        let mut v = Vec::with_capacity(384);
        serde_json::to_writer(&mut v, event)?;
        Ok(Self(v))
    }

    /// The object's inside, without its braces: the record flattens the
    /// event between `seq` and `checkpoint`, so these bytes appear there.
    fn inner(&self) -> &[u8] {
        self.0
            .get(1..self.0.len().saturating_sub(1))
            .unwrap_or_default()
    }
}

impl AuditRecord {
    /// The record line of an event serialised by [`EventFields::of`]: the
    /// same bytes and hash as [`AuditRecord::seal`] gives for the record
    /// `{seq, event, checkpoint: None, prev}`, built without serialising the
    /// event again. Returns the line (with `\n`) and the hash.
    pub(crate) fn seal_fields(seq: u64, fields: &EventFields, prev: &str) -> (Vec<u8>, String) {
        let mut line = Vec::with_capacity(fields.0.len() + 200);
        line.extend_from_slice(b"{\"seq\":");
        let _ = std::io::Write::write_fmt(&mut line, format_args!("{seq}"));
        if !fields.inner().is_empty() {
            line.push(b',');
            line.extend_from_slice(fields.inner());
        }
        line.extend_from_slice(b",\"checkpoint\":null,\"prev\":");
        // Hex in practice; escaped like serde would in any case.
        let _ = serde_json::to_writer(&mut line, prev);
        line.push(b'}');
        let hash = hex::encode(Sha256::digest(&line));
        line.pop();
        line.extend_from_slice(br#","hash":""#);
        line.extend_from_slice(hash.as_bytes());
        line.extend_from_slice(b"\"}\n");
        (line, hash)
    }
}

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
        self.event.action.as_str()
    }
    fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }
}

/// A record borrowed from its line (no allocation unless a string has
/// escapes): what `verify` parses, with the same schema as [`AuditRecord`]
/// (a unit test keeps the two in step). Kept flat rather than flattened:
/// serde's `flatten` buffers every field, which would slow `verify` down.
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
    #[serde(borrow, default)]
    pub node: Option<Cow<'a, str>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A dataset read with every field set, as an earlier version wrote it
    /// (one flat object; the hash pins the canonical form).
    const READ_LINE: &str = r#"{"seq":1,"time":"2026-01-02T03:04:05.678901Z","request_id":"req-1","client":"tax-office","end_user":"clerk-7","purpose":"benefit-check","case_id":"case-42","action":"dataset.read","department":"population","dataset":"person","scenario":null,"subject_ref":"abababababababababababababababababababababababababababababababab","decision":"allow","reason":"grant g1","status":200,"cache":"miss","upstream_status":200,"latency_us":1234,"checkpoint":null,"prev":"0000000000000000000000000000000000000000000000000000000000000000","hash":"959427713555652c96ce6b64928bb483285aaf03a88a2fa2fa224f681ce9a7de"}"#;
    /// A checkpoint record following it.
    const CHECKPOINT_LINE: &str = r#"{"seq":2,"time":"2026-01-02T03:04:06Z","request_id":null,"client":"onewindow","end_user":null,"purpose":null,"case_id":null,"action":"checkpoint","department":null,"dataset":null,"scenario":null,"subject_ref":null,"decision":"allow","reason":null,"status":null,"cache":null,"upstream_status":null,"latency_us":null,"checkpoint":{"covers_seq":1,"covers_hash":"959427713555652c96ce6b64928bb483285aaf03a88a2fa2fa224f681ce9a7de","signature":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"},"prev":"959427713555652c96ce6b64928bb483285aaf03a88a2fa2fa224f681ce9a7de","hash":"8651f28aa88399a8b7a85d115f779997436f2303e13ee162ce519fae2230e844"}"#;

    fn read_event() -> AuditEvent {
        let mut ev = AuditEvent::new(Action::DATASET_READ, Decision::Allow);
        ev.time = "2026-01-02T03:04:05.678901Z".into();
        ev.request_id = Some("req-1".into());
        ev.client = Some("tax-office".into());
        ev.end_user = Some("clerk-7".into());
        ev.purpose = Some("benefit-check".into());
        ev.case_id = Some("case-42".into());
        ev.department = Some("population".into());
        ev.dataset = Some("person".into());
        ev.subject_ref = Some(SubjectRef("ab".repeat(32)));
        ev.reason = Some("grant g1".into());
        ev.status = Some(200);
        ev.cache = Some("miss".into());
        ev.upstream_status = Some(200);
        ev.latency_us = Some(1234);
        ev
    }

    fn checkpoint_record(prev: &str) -> AuditRecord {
        let mut ev = AuditEvent::new(Action::CHECKPOINT, Decision::Allow);
        ev.time = "2026-01-02T03:04:06Z".into();
        ev.client = Some("onewindow".into());
        let mut rec = AuditRecord::from_event(ev, 2, prev.to_string());
        rec.checkpoint = Some(Checkpoint {
            covers_seq: 1,
            covers_hash: prev.to_string(),
            signature: "cd".repeat(64),
        });
        rec
    }

    #[test]
    fn sealed_lines_are_byte_identical_to_the_pinned_format() {
        let mut read = AuditRecord::from_event(read_event(), 1, GENESIS_HASH.to_string());
        let line = read.seal().unwrap();
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            format!("{READ_LINE}\n")
        );
        assert_eq!(
            read.hash,
            "959427713555652c96ce6b64928bb483285aaf03a88a2fa2fa224f681ce9a7de"
        );
        let mut cp = checkpoint_record(&read.hash);
        let line = cp.seal().unwrap();
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            format!("{CHECKPOINT_LINE}\n")
        );
    }

    #[test]
    fn events_serialised_by_the_caller_seal_to_the_same_line_and_hash() {
        let mut with_approval = read_event();
        with_approval.approval = Some("审批 \"quoted\"\n".into());
        with_approval.node = Some("node-a".into());
        let bare = AuditEvent::new(Action::AUTH_DENIED, Decision::Deny);
        for (i, ev) in [read_event(), with_approval, bare].into_iter().enumerate() {
            let prev = if i == 0 {
                GENESIS_HASH.to_string()
            } else {
                "ab".repeat(32)
            };
            let fields = EventFields::of(&ev).unwrap();
            let (line, hash) = AuditRecord::seal_fields(7 + i as u64, &fields, &prev);
            let mut rec = AuditRecord::from_event(ev, 7 + i as u64, prev);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                String::from_utf8(rec.seal().unwrap()).unwrap()
            );
            assert_eq!(hash, rec.hash);
        }
    }

    #[test]
    fn approval_is_written_only_when_present() {
        let mut ev = read_event();
        ev.approval = Some("APPROVAL-1".into());
        let mut rec = AuditRecord::from_event(ev.clone(), 1, GENESIS_HASH.to_string());
        let line = rec.seal().unwrap();
        let text = std::str::from_utf8(&line).unwrap();
        assert!(
            text.contains(r#""case_id":"case-42","approval":"APPROVAL-1","action""#),
            "{text}"
        );
        let back = parse_line(text.trim_end().as_bytes()).unwrap();
        assert_eq!(back.event, ev);
        parse_line_as::<RecordView>(text.trim_end().as_bytes()).unwrap();
        // Without it, the pinned format (and so old records' hashes) is unchanged:
        // see sealed_lines_are_byte_identical_to_the_pinned_format.
        assert!(!READ_LINE.contains("approval"));
    }

    #[test]
    fn pinned_lines_parse_back_to_the_same_records() {
        let read = parse_line(READ_LINE.as_bytes()).unwrap();
        assert_eq!(read.seq, 1);
        assert_eq!(read.event, read_event());
        assert_eq!(
            read.hash,
            &READ_LINE[READ_LINE.len() - 66..READ_LINE.len() - 2]
        );
        let cp = parse_line(CHECKPOINT_LINE.as_bytes()).unwrap();
        let mut want = checkpoint_record(&read.hash);
        want.hash = cp.hash.clone();
        assert_eq!(cp, want);
    }

    #[test]
    fn the_borrowed_view_has_the_same_schema() {
        // Every field is present in READ_LINE and CHECKPOINT_LINE, and both
        // shapes refuse unknown fields: a field added to one but not the
        // other fails here.
        for line in [READ_LINE, CHECKPOINT_LINE] {
            let view = parse_line_as::<RecordView>(line.as_bytes()).unwrap();
            let rec = parse_line(line.as_bytes()).unwrap();
            assert_eq!(view.seq, rec.seq);
            assert_eq!(view.action, rec.event.action.as_str());
            assert_eq!(view.hash, rec.hash);
        }
        let value: serde_json::Value = serde_json::from_str(READ_LINE).unwrap();
        let fields = value.as_object().unwrap().len();
        assert_eq!(fields, 21, "seq + 17 event fields + checkpoint, prev, hash");
    }

    #[test]
    fn unknown_and_missing_fields_are_garbage() {
        let extra = READ_LINE.replacen(r#""seq":1,"#, r#""seq":1,"extra":1,"#, 1);
        assert!(matches!(
            parse_line(extra.as_bytes()),
            Err(LineError::Garbage(_))
        ));
        assert!(matches!(
            parse_line_as::<RecordView>(extra.as_bytes()),
            Err(LineError::Garbage(_))
        ));
        let no_time = READ_LINE.replacen(r#""time":"2026-01-02T03:04:05.678901Z","#, "", 1);
        assert!(matches!(
            parse_line(no_time.as_bytes()),
            Err(LineError::Garbage(_))
        ));
    }
}
