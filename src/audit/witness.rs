//! Witnesses: every signed checkpoint is also handed to something outside the
//! data dir that remembers it, so that restoring an older `audit-head.json`
//! and cutting the log back to it shows (`audit verify --witness`).
//!
//! [`Witness`] is the seam: [`DirWitness`] appends to a file in a directory
//! (in production a disk mounted from elsewhere); a remote witness (an HTTP
//! service, a transparency log) implements the same two methods.

use std::fs::OpenOptions;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::AuditError;
use super::record::{AuditRecord, LineError, parse_line};

/// The file a [`DirWitness`] appends to, one checkpoint line per line.
pub const WITNESS_FILE: &str = "audit-witness.jsonl";

/// Somewhere signed heads are remembered outside the data dir.
pub trait Witness: Send + Sync + std::fmt::Debug {
    /// Where it is, for operators (a path or a URL).
    fn location(&self) -> String;
    /// Checks that heads can be handed over now (at start, for `/readyz`).
    fn probe(&self) -> io::Result<()>;
    /// Remembers one signed checkpoint line (without its newline); durable
    /// when it returns `Ok`.
    fn append(&self, checkpoint_line: &[u8]) -> io::Result<()>;
    /// The latest checkpoint line it holds, if any (checked on start).
    fn latest(&self) -> io::Result<Option<Vec<u8>>>;
}

/// A witness that appends to `<dir>/audit-witness.jsonl` and fsyncs.
#[derive(Debug, Clone)]
pub struct DirWitness {
    dir: PathBuf,
    /// Cluster mode: several nodes may share the directory; this node's
    /// latest head is the last line carrying its name.
    node: Option<String>,
}

impl DirWitness {
    /// A witness in `dir` (which must exist; it is never created, so that a
    /// witness disk that is not mounted is noticed instead of filled in).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            node: None,
        }
    }

    /// Cluster mode: [`Witness::latest`] answers with this node's heads only
    /// (every node of a cluster may append to one witness directory).
    pub fn with_node(mut self, node: Option<String>) -> Self {
        self.node = node;
        self
    }

    fn open(&self) -> io::Result<std::fs::File> {
        if !self.dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("witness directory {} does not exist", self.dir.display()),
            ));
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(self.dir.join(WITNESS_FILE))
    }
}

impl Witness for DirWitness {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn probe(&self) -> io::Result<()> {
        let f = self.open()?;
        // Opening for append succeeds on a read-only filesystem for root only
        // when writes would; an empty write plus sync reaches the device.
        f.sync_data()
    }

    fn append(&self, checkpoint_line: &[u8]) -> io::Result<()> {
        let mut f = self.open()?;
        let mut line = Vec::with_capacity(checkpoint_line.len() + 1);
        line.extend_from_slice(checkpoint_line);
        line.push(b'\n');
        f.write_all(&line)?;
        f.sync_data()
    }

    fn latest(&self) -> io::Result<Option<Vec<u8>>> {
        let text = match std::fs::read(self.dir.join(WITNESS_FILE)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut lines = text.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        Ok(match &self.node {
            None => lines.next_back(),
            Some(node) => lines.rfind(|l| {
                parse_line(l).is_ok_and(|r| r.event.node.as_deref() == Some(node.as_str()))
            }),
        }
        .map(<[u8]>::to_vec))
    }
}

/// The node named by a chain's first record (`None` for a single-node log or
/// one that cannot be read; verifying it reports why). `paths` are what
/// `audit verify` takes: one directory or segment files in chain order.
pub fn chain_node(paths: &[PathBuf]) -> Option<String> {
    let first = match paths {
        [dir] if dir.is_dir() => super::segment::list_segments(dir)
            .ok()?
            .first()?
            .path
            .clone(),
        _ => paths.first()?.clone(),
    };
    let file = std::fs::File::open(first).ok()?;
    let line = io::BufReader::new(file).split(b'\n').next()?.ok()?;
    parse_line(&line).ok()?.event.node
}

/// The heads a witness directory holds: `(line, record)` in file order.
/// Lines that are not records are errors naming the file and line.
pub fn read_witness(dir: &Path) -> Result<Vec<(u64, AuditRecord)>, AuditError> {
    let path = dir.join(WITNESS_FILE);
    let file = std::fs::File::open(&path).map_err(|e| AuditError::io(&path, e))?;
    let mut out = Vec::new();
    for (i, line) in io::BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| AuditError::io(&path, e))?;
        if line.is_empty() {
            continue;
        }
        let rec = parse_line(&line).map_err(|e| AuditError::Corrupt {
            file: path.clone(),
            line: i as u64 + 1,
            problem: match e {
                LineError::Garbage(d) => format!("not a checkpoint record: {d}"),
                LineError::HashMismatch(_) => "record does not match its hash".into(),
            },
        })?;
        out.push((i as u64 + 1, rec));
    }
    Ok(out)
}
