//! Per-record checks: each line parses, keeps its own hash, follows the
//! sequence, links to the record before it, and (for checkpoints and the head)
//! carries a good signature. One method per check; [`Chain::check`] runs them
//! in order, so a new kind of finding is one more method and one more line.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use super::super::checkpoint::{HEAD_FILE, check_checkpoint};
use super::super::record::{
    Action, AuditRecord, Chained, GENESIS_HASH, LineError, RecordView, parse_line_as,
};
use super::lines::{Item, Lines};
use super::{FailureKind, VerifyFailure, fail};

/// Where a finding is: file, line and (when known) sequence number.
pub(super) struct At<'a> {
    file: &'a Path,
    line: u64,
    seq: Option<u64>,
}

impl At<'_> {
    /// A finding of `kind` at this place.
    pub(super) fn fail(&self, kind: FailureKind, detail: impl Into<String>) -> VerifyFailure {
        fail(self.file, self.line, self.seq, kind, detail)
    }
}

/// Parses one complete line and checks its own hash (and, for a checkpoint
/// whose content was touched, its signature, to say so rather than "edited").
pub(super) fn parse_record<'i>(
    file: &Path,
    item: &'i Item,
    key: &VerifyingKey,
) -> Result<RecordView<'i>, VerifyFailure> {
    let at = |seq| At {
        file,
        line: item.line,
        seq,
    };
    match parse_line_as::<RecordView>(&item.bytes) {
        Ok(r) => Ok(r),
        Err(LineError::Garbage(d)) => {
            Err(at(None).fail(FailureKind::Garbage, format!("not an audit record: {d}")))
        }
        Err(LineError::HashMismatch(r)) => {
            if is_checkpoint(&*r)
                && let Err(d) = check_checkpoint(&*r, key)
            {
                return Err(at(Some(r.seq)).fail(FailureKind::BadSignature, d));
            }
            Err(at(Some(r.seq)).fail(FailureKind::Edited, "content does not match its hash"))
        }
    }
}

fn is_checkpoint(rec: &impl Chained) -> bool {
    rec.checkpoint().is_some() || rec.action() == Action::CHECKPOINT.as_str()
}

/// How many recent `(seq, hash)` pairs are kept to tell a duplicate from a
/// reordering.
const RECENT: usize = 1024;

/// Recent `(seq, hash)` pairs.
struct Recent(VecDeque<(u64, [u8; 64])>);

impl Recent {
    fn contains(&self, seq: u64, hash: &str) -> bool {
        self.0
            .iter()
            .any(|(s, h)| *s == seq && h[..] == *hash.as_bytes())
    }

    fn push(&mut self, seq: u64, hash: &str) {
        if self.0.len() == RECENT {
            self.0.pop_front();
        }
        let mut h = [0u8; 64];
        h.copy_from_slice(hash.as_bytes()); // 64 hex, checked by parse_line_as
        self.0.push_back((seq, h));
    }
}

/// The chain state carried from one record to the next.
pub(super) struct Chain<'a> {
    files: &'a [PathBuf],
    key: &'a VerifyingKey,
    /// The head checkpoint the log must reach, if any.
    head: Option<&'a AuditRecord>,
    /// Whether the head was met.
    head_seen: bool,
    /// Given explicit files, the chain may start anywhere: it is anchored on
    /// the first record.
    anchored: bool,
    expected_seq: u64,
    last_hash: String,
    last_prev: String,
    /// File index and line of the last good record.
    last_loc: Option<(usize, u64)>,
    recent: Recent,
    /// Sequence number of the first record.
    pub first_seq: Option<u64>,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// Sequence number of the last good checkpoint.
    pub last_checkpoint: Option<u64>,
    /// Heads a witness holds (checked as the log passes them).
    pub witness: &'a [super::WitnessHead],
    /// Findings that do not stop the walk (gaps, witness disagreements).
    pub findings: Vec<VerifyFailure>,
}

impl<'a> Chain<'a> {
    /// A chain starting at the genesis value (`anchored`) or at its first record.
    pub(super) fn new(
        files: &'a [PathBuf],
        key: &'a VerifyingKey,
        head: Option<&'a AuditRecord>,
        anchored: bool,
    ) -> Self {
        Self {
            files,
            key,
            head,
            head_seen: false,
            anchored,
            expected_seq: 1,
            last_hash: GENESIS_HASH.to_string(),
            last_prev: String::new(),
            last_loc: None,
            recent: Recent(VecDeque::with_capacity(RECENT)),
            first_seq: None,
            checkpoints: 0,
            last_checkpoint: None,
            witness: &[],
            findings: Vec::new(),
        }
    }

    /// Sequence number of the last good record (0 when none).
    pub(super) fn last_seq(&self) -> u64 {
        self.expected_seq - 1
    }

    /// Hash of the last good record.
    pub(super) fn last_hash(&self) -> &str {
        &self.last_hash
    }

    /// The sequence number the next record must carry.
    pub(super) fn expected_seq(&self) -> u64 {
        self.expected_seq
    }

    /// Runs every per-record check, then moves the chain forward. `lines` is
    /// only peeked at (to tell a swap from a deletion).
    pub(super) fn check(
        &mut self,
        rec: &RecordView<'_>,
        item: &Item,
        lines: &mut Lines<'_>,
    ) -> Result<(), VerifyFailure> {
        self.anchor(rec);
        let files = self.files;
        let at = At {
            file: &files[item.file],
            line: item.line,
            seq: Some(rec.seq),
        };
        if rec.action() == Action::AUDIT_GAP.as_str() {
            self.findings.push(
                at.fail(
                    FailureKind::Gap,
                    rec.reason
                        .as_deref()
                        .unwrap_or("records are missing")
                        .to_string(),
                ),
            );
            // The gap record skips the seqs it names, so that no seq a
            // witness remembers is reused.
            if rec.seq > self.expected_seq {
                self.expected_seq = rec.seq;
            }
        }
        if rec.seq > self.expected_seq {
            return Err(self.ahead(rec, item, lines, &at));
        }
        if rec.seq < self.expected_seq {
            return Err(self.behind(rec, &at));
        }
        self.check_link(rec, &at)?;
        self.check_checkpoint(rec, &at)?;
        self.check_head(rec, &at)?;
        self.check_witness(rec, &at);
        self.advance(rec, item);
        Ok(())
    }

    fn anchor(&mut self, rec: &RecordView<'_>) {
        if !self.anchored {
            self.anchored = true;
            self.expected_seq = rec.seq;
            self.last_hash.clear();
            self.last_hash.push_str(&rec.prev);
        }
        self.first_seq.get_or_insert(rec.seq);
    }

    /// A record further on than expected: the expected one follows (reordered)
    /// or records are missing (deleted).
    fn ahead(
        &self,
        rec: &RecordView<'_>,
        item: &Item,
        lines: &mut Lines<'_>,
        at: &At<'_>,
    ) -> VerifyFailure {
        let expected = self.expected_seq;
        let next = match lines.peek() {
            Ok(n) => n,
            Err(unreadable) => return unreadable,
        };
        let next_is_expected = next.is_some_and(|n| {
            n.complete && parse_line_as::<RecordView>(&n.bytes).is_ok_and(|n| n.seq == expected)
        });
        if next_is_expected {
            return at.fail(
                FailureKind::Reordered,
                format!("seq {} comes before seq {expected}", rec.seq),
            );
        }
        let where_ = if item.line == 1 && item.file > 0 {
            " (a whole file may be missing)"
        } else {
            ""
        };
        at.fail(
            FailureKind::Deleted,
            format!(
                "expected seq {expected}, found {}: {} record(s) missing{where_}",
                rec.seq,
                rec.seq - expected
            ),
        )
    }

    /// A record already passed: a repeat (duplicated), a second record after
    /// the same one (inserted), or out of order (reordered).
    fn behind(&self, rec: &RecordView<'_>, at: &At<'_>) -> VerifyFailure {
        let just_before = rec.seq + 1 == self.expected_seq;
        if just_before && rec.hash == self.last_hash {
            return at.fail(FailureKind::Duplicated, "same record as the line before");
        }
        if self.recent.contains(rec.seq, &rec.hash) {
            return at.fail(
                FailureKind::Duplicated,
                format!("seq {} already appeared earlier", rec.seq),
            );
        }
        if just_before && rec.prev == self.last_prev {
            let other = self.last_loc.map_or(String::new(), |(f, l)| {
                format!(" ({} line {l})", self.files[f].display())
            });
            return at.fail(
                FailureKind::Inserted,
                format!(
                    "two records claim seq {} after the same record{other}; one was inserted",
                    rec.seq
                ),
            );
        }
        at.fail(
            FailureKind::Reordered,
            format!("seq {} comes after seq {}", rec.seq, self.expected_seq - 1),
        )
    }

    /// `prev` must be the hash of the record before. When it is not, the
    /// record before is the one that changed: the finding points at it.
    fn check_link(&self, rec: &RecordView<'_>, at: &At<'_>) -> Result<(), VerifyFailure> {
        if rec.prev == self.last_hash {
            return Ok(());
        }
        Err(match self.last_loc {
            Some((f, l)) => fail(
                &self.files[f],
                l,
                Some(rec.seq - 1),
                FailureKind::Edited,
                format!(
                    "its hash is not the `prev` of seq {} (record changed and re-hashed, or replaced)",
                    rec.seq
                ),
            ),
            None => at.fail(
                FailureKind::Edited,
                "first record does not link to the genesis value",
            ),
        })
    }

    /// A checkpoint's signature must verify.
    fn check_checkpoint(&mut self, rec: &RecordView<'_>, at: &At<'_>) -> Result<(), VerifyFailure> {
        if !is_checkpoint(rec) {
            return Ok(());
        }
        check_checkpoint(rec, self.key).map_err(|d| at.fail(FailureKind::BadSignature, d))?;
        self.checkpoints += 1;
        self.last_checkpoint = Some(rec.seq);
        Ok(())
    }

    /// The record the head names must be the head.
    fn check_head(&mut self, rec: &RecordView<'_>, at: &At<'_>) -> Result<(), VerifyFailure> {
        let Some(h) = self.head.filter(|h| h.seq == rec.seq) else {
            return Ok(());
        };
        if h.hash != rec.hash {
            return Err(at.fail(
                FailureKind::Edited,
                format!("differs from the signed checkpoint in {HEAD_FILE}"),
            ));
        }
        self.head_seen = true;
        Ok(())
    }

    /// A record at a seq the witness holds must be that head.
    fn check_witness(&mut self, rec: &RecordView<'_>, at: &At<'_>) {
        for w in self.witness.iter().filter(|w| w.record.seq == rec.seq) {
            if w.record.hash != rec.hash {
                self.findings.push(at.fail(
                    FailureKind::Witness,
                    format!(
                        "differs from the signed head the witness holds ({} line {}): history was rewritten",
                        w.file.display(),
                        w.line
                    ),
                ));
            }
        }
    }

    /// After the last line: every head the witness holds must be reached.
    pub(super) fn check_witness_end(&self, findings: &mut Vec<VerifyFailure>) {
        let last = self.last_seq();
        for w in self.witness.iter().filter(|w| w.record.seq > last) {
            findings.push(fail(
                &w.file,
                w.line,
                Some(w.record.seq),
                FailureKind::Witness,
                format!(
                    "the log ends at seq {last} but the witness holds a signed head at seq {}: the log was cut back (an older {HEAD_FILE} restored?)",
                    w.record.seq
                ),
            ));
        }
    }

    fn advance(&mut self, rec: &RecordView<'_>, item: &Item) {
        self.recent.push(rec.seq, &rec.hash);
        self.expected_seq += 1;
        self.last_prev.clear();
        self.last_prev.push_str(&rec.prev);
        self.last_hash.clear();
        self.last_hash.push_str(&rec.hash);
        self.last_loc = Some((item.file, item.line));
    }

    /// After the last line: the log must reach its head, and a directory whose
    /// log holds checkpoints must still have its head sidecar. `head_path` is
    /// `Some` when a directory was verified.
    pub(super) fn check_end(&self, head_path: Option<&Path>) -> Result<(), VerifyFailure> {
        let last_seq = self.last_seq();
        let end_file = self
            .files
            .last()
            .map(PathBuf::as_path)
            .or(head_path)
            .unwrap_or(Path::new(""));
        let end_line = self.last_loc.map_or(0, |(_, l)| l + 1);
        if let Some(h) = self.head {
            if !self.head_seen {
                return Err(fail(
                    end_file,
                    end_line,
                    Some(last_seq + 1),
                    FailureKind::Truncated,
                    format!(
                        "log ends at seq {last_seq} but the last signed checkpoint ({HEAD_FILE}) is seq {}",
                        h.seq
                    ),
                ));
            }
        } else if head_path.is_some() && self.checkpoints > 0 {
            return Err(fail(
                end_file,
                end_line,
                None,
                FailureKind::Truncated,
                format!(
                    "{HEAD_FILE} is missing although the log holds checkpoints; it may have been cut"
                ),
            ));
        }
        Ok(())
    }
}
