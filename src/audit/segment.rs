//! Segment files: names, listing, and tail recovery on open.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::AuditError;
use super::record::{AuditRecord, parse_line};

/// How far back from the end the tail scan looks for the last valid record.
const TAIL_WINDOW: u64 = 1024 * 1024;

/// The longest line a reader takes as one record. Records are a few hundred
/// bytes; a longer "line" is damage (or a segment that is not a file, such as
/// a link to /dev/zero) and is reported instead of read into memory.
pub(crate) const MAX_LINE_BYTES: u64 = 1024 * 1024;

/// Reads one line (with its `\n`) into `buf`, at most [`MAX_LINE_BYTES`]:
/// a line that does not end within the bound is cut there, so callers see an
/// incomplete or unparsable line rather than exhausting memory.
pub(crate) fn read_line_bounded<R: std::io::BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    std::io::BufRead::read_until(&mut Read::take(reader.by_ref(), MAX_LINE_BYTES), b'\n', buf)
}

/// One `audit-NNNNNN.jsonl` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub index: u32,
    pub path: PathBuf,
}

pub(crate) fn segment_name(index: u32) -> String {
    format!("audit-{index:06}.jsonl")
}

pub(crate) fn parse_segment_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() >= 6 && digits.bytes().all(|c| c.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// The segments of `dir`, oldest first.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<Segment>, AuditError> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| AuditError::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| AuditError::io(dir, e))?;
        let name = entry.file_name();
        if let Some(index) = name.to_str().and_then(parse_segment_name) {
            out.push(Segment {
                index,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|s| s.index);
    Ok(out)
}

/// What the end of a segment looks like.
#[derive(Debug)]
pub(crate) struct Tail {
    /// The last valid record, if any.
    pub last: Option<AuditRecord>,
    /// Offset just past the last valid record.
    pub good_len: u64,
    /// Bytes after `good_len` (torn or invalid tail), if any.
    pub torn: Vec<u8>,
}

/// Scans the end of `path` for its last valid record (parses, own hash
/// matches, links to the valid record before it when that one is in view).
pub(crate) fn scan_tail(path: &Path) -> Result<Tail, AuditError> {
    let ioe = |e| AuditError::io(path, e);
    let mut f = fs::File::open(path).map_err(ioe)?;
    let len = f.metadata().map_err(ioe)?.len();
    let start = len.saturating_sub(TAIL_WINDOW);
    f.seek(SeekFrom::Start(start)).map_err(ioe)?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf).map_err(ioe)?;
    // Start at a line boundary when the window does not begin the file.
    let mut base = 0usize;
    if start > 0 {
        match buf.iter().position(|&b| b == b'\n') {
            Some(p) => base = p + 1,
            None => {
                return Err(corrupt(path, 0, "no line end in the last MiB"));
            }
        }
    }
    // Complete lines as (offset, end) within buf; end excludes the '\n'.
    let mut lines = Vec::new();
    let mut off = base;
    while let Some(p) = buf[off..].iter().position(|&b| b == b'\n') {
        lines.push((off, off + p));
        off += p + 1;
    }
    for i in (0..lines.len()).rev() {
        let (s, e) = lines[i];
        let Ok(rec) = parse_line(&buf[s..e]) else {
            continue;
        };
        if i > 0 {
            let (ps, pe) = lines[i - 1];
            match parse_line(&buf[ps..pe]) {
                Ok(p) if p.seq + 1 == rec.seq && p.hash == rec.prev => {}
                _ => {
                    return Err(corrupt(
                        path,
                        0,
                        &format!(
                            "record seq {} does not link to the line before it; run `onewindow audit verify`",
                            rec.seq
                        ),
                    ));
                }
            }
        }
        return Ok(Tail {
            last: Some(rec),
            good_len: start + e as u64 + 1,
            torn: buf[e + 1..].to_vec(),
        });
    }
    if start > 0 {
        return Err(corrupt(path, 0, "no valid record in the last MiB"));
    }
    Ok(Tail {
        last: None,
        good_len: 0,
        torn: buf,
    })
}

fn corrupt(path: &Path, line: u64, problem: &str) -> AuditError {
    AuditError::Corrupt {
        file: path.to_path_buf(),
        line,
        problem: problem.to_string(),
    }
}

/// Copies the torn bytes to `<path>.torn-<unix secs>` (fsynced), then cuts
/// `path` back to `good_len`. Returns the name of the file the bytes went to.
pub(crate) fn set_aside(
    path: &Path,
    good_len: u64,
    torn: &[u8],
    now_secs: u64,
) -> Result<PathBuf, AuditError> {
    let mut n = 0u32;
    let aside = loop {
        let name = match n {
            0 => format!("{}.torn-{now_secs}", path.display()),
            _ => format!("{}.torn-{now_secs}-{n}", path.display()),
        };
        let p = PathBuf::from(name);
        match fs::OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(mut f) => {
                f.write_all(torn).map_err(|e| AuditError::io(&p, e))?;
                f.sync_all().map_err(|e| AuditError::io(&p, e))?;
                break p;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(AuditError::io(&p, e)),
        }
    };
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| AuditError::io(path, e))?;
    f.set_len(good_len).map_err(|e| AuditError::io(path, e))?;
    f.sync_all().map_err(|e| AuditError::io(path, e))?;
    Ok(aside)
}
