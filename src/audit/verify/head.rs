//! The `audit-head.json` sidecar: the latest signed checkpoint, read before the
//! segments so that a log cut before it is found.

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use super::super::checkpoint::{HEAD_FILE, check_checkpoint};
use super::super::record::{AuditRecord, LineError, parse_line};
use super::super::segment::list_segments;
use super::{FailureKind, VerifyFailure, fail};

/// What is verified: the files in chain order and, for a directory, its head.
pub(super) struct Source {
    /// Segment files in chain order.
    pub files: Vec<PathBuf>,
    /// `Some` when a directory was given: where its head sidecar lives.
    pub head_path: Option<PathBuf>,
    /// The head checkpoint, when the sidecar exists (signature checked).
    pub head: Option<AuditRecord>,
}

impl Source {
    /// One directory (its segments and head) or explicit files in chain order.
    pub(super) fn open(paths: &[PathBuf], key: &VerifyingKey) -> Result<Self, VerifyFailure> {
        let [dir] = paths else {
            return Ok(Self::files(paths));
        };
        if !dir.is_dir() {
            return Ok(Self::files(paths));
        }
        // Read the head before listing and reading the files: a live writer only
        // ever moves the head forward, so the files then hold at least the head.
        let head_path = dir.join(HEAD_FILE);
        let head = read_head(&head_path, key)?;
        let files = list_segments(dir)
            .map_err(|e| fail(dir, 0, None, FailureKind::Unreadable, e.to_string()))?
            .into_iter()
            .map(|s| s.path)
            .collect();
        Ok(Self {
            files,
            head_path: Some(head_path),
            head,
        })
    }

    fn files(paths: &[PathBuf]) -> Self {
        Self {
            files: paths.to_vec(),
            head_path: None,
            head: None,
        }
    }

    /// Total size of the files, for the progress bar.
    pub(super) fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Reads and checks the head sidecar; `None` when it does not exist.
fn read_head(path: &Path, key: &VerifyingKey) -> Result<Option<AuditRecord>, VerifyFailure> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(path, 0, None, FailureKind::Unreadable, e.to_string())),
    };
    let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let rec = match parse_line(line) {
        Ok(r) => r,
        Err(LineError::Garbage(d)) => return Err(fail(path, 1, None, FailureKind::Garbage, d)),
        Err(LineError::HashMismatch(r)) => {
            return Err(fail(
                path,
                1,
                Some(r.seq),
                FailureKind::Edited,
                "head checkpoint does not match its hash",
            ));
        }
    };
    check_checkpoint(&rec, key)
        .map_err(|d| fail(path, 1, Some(rec.seq), FailureKind::BadSignature, d))?;
    Ok(Some(rec))
}
