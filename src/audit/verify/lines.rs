//! Lines across the log's files, with one line of lookahead.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use super::{FailureKind, VerifyFailure, fail};

/// One line of one file, without its `\n`.
pub(super) struct Item {
    /// Index into the file list.
    pub file: usize,
    /// 1-based line number in that file.
    pub line: u64,
    /// The line's bytes.
    pub bytes: Vec<u8>,
    /// Whether the line ended with `\n`.
    pub complete: bool,
}

/// Reads the files in order, line by line.
pub(super) struct Lines<'a> {
    files: &'a [PathBuf],
    idx: usize,
    reader: Option<BufReader<File>>,
    line: u64,
    peeked: Option<Item>,
    /// Bytes read so far.
    pub bytes: u64,
    /// A line buffer handed back for reuse.
    spare: Vec<u8>,
}

impl<'a> Lines<'a> {
    pub(super) fn new(files: &'a [PathBuf]) -> Self {
        Self {
            files,
            idx: 0,
            reader: None,
            line: 0,
            peeked: None,
            bytes: 0,
            spare: Vec::with_capacity(1024),
        }
    }

    /// Hands a line's buffer back for reuse by the next read.
    pub(super) fn recycle(&mut self, item: Item) {
        self.spare = item.bytes;
    }

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
            let n = crate::audit::segment::read_line_bounded(r, &mut bytes).map_err(|e| {
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

    /// The next line, or `None` after the last file.
    pub(super) fn next(&mut self) -> Result<Option<Item>, VerifyFailure> {
        match self.peeked.take() {
            Some(i) => Ok(Some(i)),
            None => self.read(),
        }
    }

    /// The line [`Self::next`] will return, without consuming it.
    pub(super) fn peek(&mut self) -> Result<Option<&Item>, VerifyFailure> {
        if self.peeked.is_none() {
            self.peeked = self.read()?;
        }
        Ok(self.peeked.as_ref())
    }
}
