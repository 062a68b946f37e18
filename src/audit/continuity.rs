//! Continuity across restarts: before the writer continues a log it checks the
//! log against the signed head (`audit-head.json`). A log that ends before the
//! head, or whose record at the head's seq has another hash, is not silently
//! continued: the writer notes an `audit.gap` record (naming the missing seqs)
//! followed by a signed checkpoint, and `audit verify` reports that gap for
//! ever.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::checkpoint::HEAD_FILE;
use super::error::AuditError;
use super::record::{Action, AuditEvent, AuditRecord, Decision, parse_line};
use super::segment::list_segments;

/// A break between the log and its signed head, found on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gap {
    /// The seq the gap record must carry (the head's seq + 1 when records
    /// are missing, so that no seq a witness remembers is reused).
    pub next_seq: u64,
    /// What is wrong, for the `audit.gap` record and the operator's log.
    pub reason: String,
}

impl Gap {
    /// The `audit.gap` event.
    pub fn event(&self) -> AuditEvent {
        let mut ev = AuditEvent::new(Action::AUDIT_GAP, Decision::Error);
        ev.client = Some("onewindow".into());
        ev.reason = Some(self.reason.clone());
        ev
    }
}

/// Compares the log in `dir` (whose last valid record is `last`) with its
/// head, or with the witness's latest head (`witness`: where, and the
/// record, signature checked) when that one is further on.
pub(crate) fn check(
    dir: &Path,
    last: Option<&AuditRecord>,
    witness: Option<(String, AuditRecord)>,
) -> Result<Option<Gap>, AuditError> {
    let head_path = dir.join(HEAD_FILE);
    let last_seq = last.map_or(0, |r| r.seq);
    let file_head = match std::fs::read(&head_path) {
        Ok(bytes) => {
            let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            match parse_line(line) {
                Ok(h) => Some(h),
                Err(_) => {
                    return Ok(Some(Gap {
                        next_seq: last_seq + 1,
                        reason: format!(
                            "{HEAD_FILE} is not a valid checkpoint record; the log after seq {last_seq} cannot be checked against it"
                        ),
                    }));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(AuditError::io(&head_path, e)),
    };
    let (head, source) = match (file_head, witness) {
        (Some(h), Some((loc, w))) if w.seq > h.seq => (w, format!("the witness ({loc})")),
        (None, Some((loc, w))) => (w, format!("the witness ({loc})")),
        (Some(h), _) => (h, format!("the signed head ({HEAD_FILE})")),
        (None, None) => return Ok(None),
    };
    if last_seq < head.seq {
        return Ok(Some(Gap {
            next_seq: head.seq + 1,
            reason: format!(
                "seqs {}..={} missing: the log ended at seq {last_seq} but {source} holds a signed head at seq {}",
                last_seq + 1,
                head.seq,
                head.seq
            ),
        }));
    }
    let found = if last.is_some_and(|r| r.seq == head.seq) {
        last.map(|r| r.hash.clone())
    } else {
        find_hash(dir, head.seq)?
    };
    match found {
        Some(h) if h == head.hash => Ok(None),
        Some(_) => Ok(Some(Gap {
            next_seq: last_seq + 1,
            reason: format!(
                "seq {} differs from {source}: records up to it were replaced",
                head.seq
            ),
        })),
        None => Ok(Some(Gap {
            next_seq: last_seq + 1,
            reason: format!(
                "seq {} of {source} is missing from the log (records were cut from the middle)",
                head.seq
            ),
        })),
    }
}

/// The hash of the record with `seq`, if the log holds it.
fn find_hash(dir: &Path, seq: u64) -> Result<Option<String>, AuditError> {
    let segs = list_segments(dir)?;
    for seg in segs.iter().rev() {
        let file = File::open(&seg.path).map_err(|e| AuditError::io(&seg.path, e))?;
        let mut first_seq = None;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| AuditError::io(&seg.path, e))?;
            let Ok(rec) = parse_line(&line) else { continue };
            first_seq.get_or_insert(rec.seq);
            if rec.seq == seq {
                return Ok(Some(rec.hash));
            }
        }
        if first_seq.is_some_and(|f| f <= seq) {
            return Ok(None);
        }
    }
    Ok(None)
}
