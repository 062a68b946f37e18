//! Streaming verification of the chain, checkpoints and head.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::checkpoint::{HEAD_FILE, check_checkpoint};
use super::record::{Action, GENESIS_HASH, LineError, RecordView, parse_line, parse_line_as};
use super::segment::list_segments;

/// How to verify.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Show an indicatif progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Tolerate an incomplete last line in the last file (a live log being
    /// written). Off for `onewindow audit verify`.
    pub allow_partial_tail: bool,
}

/// An intact log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files read.
    pub files: usize,
    /// Sequence number of the first record checked (1 for a whole log; the
    /// chain is anchored on the first record when files are given explicitly).
    pub first_seq: u64,
    /// Records checked.
    pub records: u64,
    /// Checkpoint records whose signature verified.
    pub checkpoints: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Sequence number of the last record (0 for an empty log).
    pub last_seq: u64,
    /// Hash of the last record ([`crate::audit::GENESIS_HASH`] for an empty log).
    pub last_hash: String,
    /// Sequence number of the last signed checkpoint, if any.
    pub last_checkpoint_seq: Option<u64>,
    /// Records after the last checkpoint (covered by the chain, not yet signed).
    pub unsigned_tail: u64,
    /// Whether `audit-head.json` was found and matched.
    pub head_checked: bool,
    /// An incomplete last line was skipped (only with `allow_partial_tail`).
    pub partial_tail: bool,
    /// Wall time spent.
    pub elapsed: Duration,
}

/// What kind of damage was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A record's content no longer matches its hash, or the next record's `prev`.
    Edited,
    /// Records are missing (sequence gap; e.g. a deleted line or file).
    Deleted,
    /// A record was added: two records claim one sequence number and one `prev`.
    Inserted,
    /// Records are out of order.
    Reordered,
    /// A record appears twice.
    Duplicated,
    /// The log ends before its last signed checkpoint, or its last line is cut.
    Truncated,
    /// A checkpoint signature does not verify.
    BadSignature,
    /// A line that is not an audit record.
    Garbage,
    /// A file could not be read.
    Unreadable,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Edited => "edited",
            FailureKind::Deleted => "deleted",
            FailureKind::Inserted => "inserted",
            FailureKind::Reordered => "reordered",
            FailureKind::Duplicated => "duplicated",
            FailureKind::Truncated => "truncated",
            FailureKind::BadSignature => "bad signature",
            FailureKind::Garbage => "garbage",
            FailureKind::Unreadable => "unreadable",
        })
    }
}

/// The first broken place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The file.
    pub file: PathBuf,
    /// 1-based line in that file (0 when the file as a whole is concerned).
    pub line: u64,
    /// The sequence number concerned, when known.
    pub seq: Option<u64>,
    /// The kind of damage.
    pub kind: FailureKind,
    /// Details for the auditor.
    pub detail: String,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.file.display(), self.line)?;
        if let Some(s) = self.seq {
            write!(f, " (seq {s})")?;
        }
        write!(f, ": {}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for VerifyFailure {}

/// Verifies a log strictly: `paths` is one directory (all its segments, in
/// order, plus the `audit-head.json` truncation check) or a list of segment
/// files in chain order.
pub fn verify(
    paths: &[PathBuf],
    public_key: &VerifyingKey,
    progress: bool,
) -> Result<VerifyReport, VerifyFailure> {
    verify_with(
        paths,
        public_key,
        &VerifyOptions {
            progress,
            allow_partial_tail: false,
        },
    )
}

struct Item {
    file: usize,
    line: u64,
    bytes: Vec<u8>,
    complete: bool,
}

/// Lines across files, with one line of lookahead.
struct Lines<'a> {
    files: &'a [PathBuf],
    idx: usize,
    reader: Option<BufReader<File>>,
    line: u64,
    peeked: Option<Item>,
    bytes: u64,
    /// A line buffer handed back for reuse.
    spare: Vec<u8>,
}

impl Lines<'_> {
    fn read(&mut self) -> Result<Option<Item>, VerifyFailure> {
        loop {
            if self.reader.is_none() {
                if self.idx >= self.files.len() {
                    return Ok(None);
                }
                let path = &self.files[self.idx];
                let f = File::open(path)
                    .map_err(|e| fail(path, 0, None, FailureKind::Unreadable, e.to_string()))?;
                self.reader = Some(BufReader::with_capacity(1 << 20, f));
                self.line = 0;
            }
            let Some(r) = self.reader.as_mut() else {
                continue;
            };
            let mut bytes = std::mem::take(&mut self.spare);
            bytes.clear();
            let n = r.read_until(b'\n', &mut bytes).map_err(|e| {
                fail(
                    &self.files[self.idx],
                    self.line + 1,
                    None,
                    FailureKind::Unreadable,
                    e.to_string(),
                )
            })?;
            if n == 0 {
                self.reader = None;
                self.idx += 1;
                continue;
            }
            self.line += 1;
            self.bytes += n as u64;
            let complete = bytes.last() == Some(&b'\n');
            if complete {
                bytes.pop();
            }
            return Ok(Some(Item {
                file: self.idx,
                line: self.line,
                bytes,
                complete,
            }));
        }
    }

    fn next(&mut self) -> Result<Option<Item>, VerifyFailure> {
        match self.peeked.take() {
            Some(i) => Ok(Some(i)),
            None => self.read(),
        }
    }

    fn peek(&mut self) -> Result<Option<&Item>, VerifyFailure> {
        if self.peeked.is_none() {
            self.peeked = self.read()?;
        }
        Ok(self.peeked.as_ref())
    }
}

fn fail(
    file: &Path,
    line: u64,
    seq: Option<u64>,
    kind: FailureKind,
    detail: impl Into<String>,
) -> VerifyFailure {
    VerifyFailure {
        file: file.to_path_buf(),
        line,
        seq,
        kind,
        detail: detail.into(),
    }
}

/// [`verify`] with options (e.g. for a live log).
pub fn verify_with(
    paths: &[PathBuf],
    public_key: &VerifyingKey,
    opts: &VerifyOptions,
) -> Result<VerifyReport, VerifyFailure> {
    let started = Instant::now();
    let dir = match paths {
        [dir] if dir.is_dir() => Some(dir),
        _ => None,
    };
    // Read the head before listing and reading the files: a live writer only
    // ever moves the head forward, so the files then hold at least the head.
    let head_path = dir.map(|d| d.join(HEAD_FILE));
    let head = match &head_path {
        Some(p) => match std::fs::read(p) {
            Ok(bytes) => {
                let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
                let rec = match parse_line(line) {
                    Ok(r) => r,
                    Err(LineError::Garbage(d)) => {
                        return Err(fail(p, 1, None, FailureKind::Garbage, d));
                    }
                    Err(LineError::HashMismatch(r)) => {
                        return Err(fail(
                            p,
                            1,
                            Some(r.seq),
                            FailureKind::Edited,
                            "head checkpoint does not match its hash",
                        ));
                    }
                };
                check_checkpoint(&rec, public_key)
                    .map_err(|d| fail(p, 1, Some(rec.seq), FailureKind::BadSignature, d))?;
                Some(rec)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(fail(p, 0, None, FailureKind::Unreadable, e.to_string())),
        },
        None => None,
    };
    let files = match dir {
        Some(dir) => list_segments(dir)
            .map_err(|e| fail(dir, 0, None, FailureKind::Unreadable, e.to_string()))?
            .into_iter()
            .map(|s| s.path)
            .collect::<Vec<_>>(),
        None => paths.to_vec(),
    };

    let total: u64 = files
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum();
    let target = if opts.progress && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}")
    {
        bar.set_style(style);
    }

    let mut lines = Lines {
        files: &files,
        idx: 0,
        reader: None,
        line: 0,
        peeked: None,
        bytes: 0,
        spare: Vec::with_capacity(1024),
    };
    let mut expected_seq = 1u64;
    let mut last_hash = GENESIS_HASH.to_string();
    // Given explicit files, the chain may start anywhere: anchor on the first record.
    let mut anchored = head_path.is_some();
    let mut first_seq = None;
    let mut last_prev = String::new();
    let mut last_loc: Option<(usize, u64)> = None;
    // Recent (seq, hash) pairs, to tell a duplicate from a reordering.
    let mut recent: VecDeque<(u64, [u8; 64])> = VecDeque::with_capacity(1024);
    let mut checkpoints = 0u64;
    let mut last_cp: Option<u64> = None;
    let mut head_seen = false;
    let mut partial_tail = false;
    let mut shown = 0u64;

    while let Some(item) = lines.next()? {
        let file = &files[item.file];
        if lines.bytes - shown >= 1 << 20 {
            bar.set_position(lines.bytes);
            shown = lines.bytes;
        }
        if !item.complete {
            let last_file = item.file + 1 == files.len();
            if last_file && opts.allow_partial_tail {
                partial_tail = true;
                break;
            }
            return Err(fail(
                file,
                item.line,
                Some(expected_seq),
                FailureKind::Truncated,
                "last line is incomplete (torn or cut)",
            ));
        }
        let rec = match parse_line_as::<RecordView>(&item.bytes) {
            Ok(r) => r,
            Err(LineError::Garbage(d)) => {
                return Err(fail(
                    file,
                    item.line,
                    None,
                    FailureKind::Garbage,
                    format!("not an audit record: {d}"),
                ));
            }
            Err(LineError::HashMismatch(r)) => {
                // A checkpoint whose signature was touched: say so, not just "edited".
                if (r.checkpoint.is_some() || r.action == Action::CHECKPOINT.as_str())
                    && let Err(d) = check_checkpoint(&*r, public_key)
                {
                    return Err(fail(
                        file,
                        item.line,
                        Some(r.seq),
                        FailureKind::BadSignature,
                        d,
                    ));
                }
                return Err(fail(
                    file,
                    item.line,
                    Some(r.seq),
                    FailureKind::Edited,
                    "content does not match its hash",
                ));
            }
        };
        if !anchored {
            anchored = true;
            expected_seq = rec.seq;
            last_hash.clear();
            last_hash.push_str(&rec.prev);
        }
        first_seq.get_or_insert(rec.seq);
        let at = |kind, detail: String| fail(file, item.line, Some(rec.seq), kind, detail);
        if rec.seq > expected_seq {
            let next_is_expected = match lines.peek()? {
                Some(n) => {
                    n.complete
                        && parse_line_as::<RecordView>(&n.bytes)
                            .is_ok_and(|n| n.seq == expected_seq)
                }
                None => false,
            };
            if next_is_expected {
                return Err(at(
                    FailureKind::Reordered,
                    format!("seq {} comes before seq {expected_seq}", rec.seq),
                ));
            }
            let where_ = if item.line == 1 && item.file > 0 {
                " (a whole file may be missing)"
            } else {
                ""
            };
            return Err(at(
                FailureKind::Deleted,
                format!(
                    "expected seq {expected_seq}, found {}: {} record(s) missing{where_}",
                    rec.seq,
                    rec.seq - expected_seq
                ),
            ));
        }
        if rec.seq < expected_seq {
            if rec.seq + 1 == expected_seq && rec.hash == last_hash {
                return Err(at(
                    FailureKind::Duplicated,
                    "same record as the line before".into(),
                ));
            }
            if recent
                .iter()
                .any(|(s, h)| *s == rec.seq && h[..] == *rec.hash.as_bytes())
            {
                return Err(at(
                    FailureKind::Duplicated,
                    format!("seq {} already appeared earlier", rec.seq),
                ));
            }
            if rec.seq + 1 == expected_seq && rec.prev == last_prev {
                let other = last_loc.map_or(String::new(), |(f, l)| {
                    format!(" ({} line {l})", files[f].display())
                });
                return Err(at(
                    FailureKind::Inserted,
                    format!(
                        "two records claim seq {} after the same record{other}; one was inserted",
                        rec.seq
                    ),
                ));
            }
            return Err(at(
                FailureKind::Reordered,
                format!("seq {} comes after seq {}", rec.seq, expected_seq - 1),
            ));
        }
        if rec.prev != last_hash {
            return Err(match last_loc {
                Some((f, l)) => fail(
                    &files[f],
                    l,
                    Some(rec.seq - 1),
                    FailureKind::Edited,
                    format!(
                        "its hash is not the `prev` of seq {} (record changed and re-hashed, or replaced)",
                        rec.seq
                    ),
                ),
                None => at(
                    FailureKind::Edited,
                    "first record does not link to the genesis value".into(),
                ),
            });
        }
        if rec.checkpoint.is_some() || rec.action == Action::CHECKPOINT.as_str() {
            check_checkpoint(&rec, public_key).map_err(|d| at(FailureKind::BadSignature, d))?;
            checkpoints += 1;
            last_cp = Some(rec.seq);
        }
        if let Some(h) = &head
            && h.seq == rec.seq
        {
            if h.hash != rec.hash {
                return Err(at(
                    FailureKind::Edited,
                    format!("differs from the signed checkpoint in {HEAD_FILE}"),
                ));
            }
            head_seen = true;
        }
        if recent.len() == 1024 {
            recent.pop_front();
        }
        let mut h = [0u8; 64];
        h.copy_from_slice(rec.hash.as_bytes()); // 64 hex, checked by parse_line_as
        recent.push_back((rec.seq, h));
        expected_seq += 1;
        last_prev.clear();
        last_prev.push_str(&rec.prev);
        last_hash.clear();
        last_hash.push_str(&rec.hash);
        last_loc = Some((item.file, item.line));
        lines.spare = item.bytes;
    }
    bar.finish_and_clear();
    let last_seq = expected_seq - 1;
    let end_file = files
        .last()
        .cloned()
        .or_else(|| head_path.clone())
        .unwrap_or_default();
    let end_line = last_loc.map_or(0, |(_, l)| l + 1);
    if let Some(h) = &head {
        if !head_seen {
            return Err(fail(
                &end_file,
                end_line,
                Some(last_seq + 1),
                FailureKind::Truncated,
                format!(
                    "log ends at seq {last_seq} but the last signed checkpoint ({HEAD_FILE}) is seq {}",
                    h.seq
                ),
            ));
        }
    } else if head_path.is_some() && checkpoints > 0 {
        return Err(fail(
            &end_file,
            end_line,
            None,
            FailureKind::Truncated,
            format!(
                "{HEAD_FILE} is missing although the log holds checkpoints; it may have been cut"
            ),
        ));
    }
    Ok(VerifyReport {
        files: files.len(),
        first_seq: first_seq.unwrap_or(0),
        records: last_seq + 1 - first_seq.unwrap_or(1),
        checkpoints,
        bytes: lines.bytes,
        last_seq,
        last_hash,
        last_checkpoint_seq: last_cp,
        unsigned_tail: last_seq - last_cp.unwrap_or(first_seq.unwrap_or(1) - 1),
        head_checked: head.is_some(),
        partial_tail,
        elapsed: started.elapsed(),
    })
}
