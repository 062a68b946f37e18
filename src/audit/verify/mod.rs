//! Streaming verification of the chain, checkpoints and head.
//!
//! [`verify_with`] reads the head sidecar and lists the files ([`head`]),
//! streams their lines ([`lines`]) and hands each record to the chain checks
//! ([`chain`]), which report the first finding as a [`VerifyFailure`] (file,
//! line, seq, [`FailureKind`]). A new kind of finding is a [`FailureKind`]
//! variant plus one check method in `chain.rs`.

mod chain;
mod head;
mod lines;

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use chain::{Chain, parse_record};
use head::Source;
use lines::Lines;

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
    /// An `audit.gap` record: on a restart the log did not reach its signed
    /// head; the seqs it names are gone. Reported for ever.
    Gap,
    /// The log is shorter than, or disagrees with, a head the witness holds.
    Witness,
    /// The public key is not the pinned one.
    KeyMismatch,
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
            FailureKind::Gap => "gap",
            FailureKind::Witness => "witness disagreement",
            FailureKind::KeyMismatch => "key mismatch",
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
    /// Further findings (gaps, witness disagreements) found before or
    /// besides this one, in log order.
    pub also: Vec<VerifyFailure>,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.file.display(), self.line)?;
        if let Some(s) = self.seq {
            write!(f, " (seq {s})")?;
        }
        write!(f, ": {}: {}", self.kind, self.detail)?;
        for a in &self.also {
            write!(f, "\n{a}")?;
        }
        Ok(())
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
        also: Vec::new(),
    }
}

/// A signed head a witness holds, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct WitnessHead {
    /// The witness file.
    pub file: PathBuf,
    /// 1-based line in it.
    pub line: u64,
    /// The checkpoint record (its seq and hash must be in the log).
    pub record: crate::audit::AuditRecord,
}

/// [`verify`] with options (e.g. for a live log).
pub fn verify_with(
    paths: &[PathBuf],
    public_key: &VerifyingKey,
    opts: &VerifyOptions,
) -> Result<VerifyReport, VerifyFailure> {
    verify_witnessed(paths, public_key, opts, &[])
}

/// [`verify_with`], and the log must also hold every head in `witness` (each
/// checked for its signature too): a log shorter than, or disagreeing with,
/// any of them fails. Every finding is reported: the first as the error, the
/// others in [`VerifyFailure::also`].
pub fn verify_witnessed(
    paths: &[PathBuf],
    public_key: &VerifyingKey,
    opts: &VerifyOptions,
    witness: &[WitnessHead],
) -> Result<VerifyReport, VerifyFailure> {
    let mut findings = Vec::new();
    for w in witness {
        if let Err(d) = crate::audit::checkpoint::check_checkpoint(&w.record, public_key) {
            findings.push(fail(
                &w.file,
                w.line,
                Some(w.record.seq),
                FailureKind::Witness,
                format!("witness head does not verify with this key: {d}"),
            ));
        }
    }
    let result = verify_inner(paths, public_key, opts, witness, &mut findings);
    match result {
        Err(mut f) => {
            f.also = findings;
            Err(f)
        }
        Ok(report) if findings.is_empty() => Ok(report),
        Ok(_) => {
            let mut first = findings.remove(0);
            first.also = findings;
            Err(first)
        }
    }
}

fn verify_inner(
    paths: &[PathBuf],
    public_key: &VerifyingKey,
    opts: &VerifyOptions,
    witness: &[WitnessHead],
    findings: &mut Vec<VerifyFailure>,
) -> Result<VerifyReport, VerifyFailure> {
    let started = Instant::now();
    let source = Source::open(paths, public_key)?;
    let files = &source.files;
    let bar = progress_bar(opts.progress, source.total_bytes());
    let mut lines = Lines::new(files);
    let mut chain = Chain::new(
        files,
        public_key,
        source.head.as_ref(),
        source.head_path.is_some(),
    );
    chain.witness = witness;
    let mut partial_tail = false;
    let mut shown = 0u64;
    let result = verify_lines(
        &mut chain,
        &mut lines,
        files,
        public_key,
        opts,
        &bar,
        &mut shown,
        &mut partial_tail,
    );
    findings.append(&mut chain.findings);
    result?;
    chain.check_end(source.head_path.as_deref())?;
    chain.check_witness_end(findings);
    bar.finish_and_clear();

    let last_seq = chain.last_seq();
    let first_seq = chain.first_seq;
    Ok(VerifyReport {
        files: files.len(),
        first_seq: first_seq.unwrap_or(0),
        records: last_seq + 1 - first_seq.unwrap_or(1),
        checkpoints: chain.checkpoints,
        bytes: lines.bytes,
        last_seq,
        last_hash: chain.last_hash().to_string(),
        last_checkpoint_seq: chain.last_checkpoint,
        unsigned_tail: last_seq - chain.last_checkpoint.unwrap_or(first_seq.unwrap_or(1) - 1),
        head_checked: source.head.is_some(),
        partial_tail,
        elapsed: started.elapsed(),
    })
}

#[allow(clippy::too_many_arguments)]
fn verify_lines(
    chain: &mut Chain<'_>,
    lines: &mut Lines<'_>,
    files: &[PathBuf],
    public_key: &VerifyingKey,
    opts: &VerifyOptions,
    bar: &ProgressBar,
    shown: &mut u64,
    partial_tail: &mut bool,
) -> Result<(), VerifyFailure> {
    while let Some(item) = lines.next()? {
        if lines.bytes - *shown >= 1 << 20 {
            bar.set_position(lines.bytes);
            *shown = lines.bytes;
        }
        let file = &files[item.file];
        if !item.complete {
            if item.file + 1 == files.len() && opts.allow_partial_tail {
                *partial_tail = true;
                break;
            }
            return Err(fail(
                file,
                item.line,
                Some(chain.expected_seq()),
                FailureKind::Truncated,
                "last line is incomplete (torn or cut)",
            ));
        }
        let rec = parse_record(file, &item, public_key)?;
        chain.check(&rec, &item, lines)?;
        lines.recycle(item);
    }
    Ok(())
}

/// An indicatif bar on stderr when asked for and stderr is a terminal.
fn progress_bar(progress: bool, total: u64) -> ProgressBar {
    let target = if progress && std::io::stderr().is_terminal() {
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
    bar
}
