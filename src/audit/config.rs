//! `[audit]` in gateway.toml: raw serde type and validated settings.

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, ConfigErrors};

/// `[audit]` as written in gateway.toml. Every key is optional.
///
/// ```toml
/// [audit]
/// dir = "audit"                  # under the data dir unless absolute
/// fsync = "always"               # "always" | "interval" | "never"
/// fsync_interval_ms = 50         # only with fsync = "interval"
/// rotate_bytes = 67108864        # 64 MiB
/// checkpoint_every = 1000        # records
/// checkpoint_interval_secs = 60
/// queue_capacity = 8192
/// max_batch = 512
/// deny_summary_threshold = 20    # individual deny records per key and interval
/// deny_summary_interval_secs = 10
/// witness_dir = "/mnt/witness"   # every signed head also appended here
/// signing_key_fingerprint = "<64 hex>"  # SHA-256 of the checkpoint public key
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Directory of the log files; relative paths are under the data dir.
    pub dir: Option<String>,
    /// `always` (fdatasync per batch, default), `interval` or `never`.
    pub fsync: Option<String>,
    /// With `fsync = "interval"`: at most one fdatasync per this many ms (default 50).
    pub fsync_interval_ms: Option<u64>,
    /// Rotate to a new file past this size (default 64 MiB, minimum 4096).
    pub rotate_bytes: Option<u64>,
    /// Signed checkpoint every this many records (default 1000).
    pub checkpoint_every: Option<u64>,
    /// Signed checkpoint at least this often when records were written (default 60).
    pub checkpoint_interval_secs: Option<u64>,
    /// Bounded queue between requests and the writer (default 8192).
    pub queue_capacity: Option<usize>,
    /// Most records per write/fsync (default 512).
    pub max_batch: Option<usize>,
    /// Denies per (client-or-ip, action, reason) and interval written one by
    /// one before the rest are summarised (default 20).
    pub deny_summary_threshold: Option<u64>,
    /// Length of a deny-summary interval in seconds (default 10).
    pub deny_summary_interval_secs: Option<u64>,
    /// A directory outside the data dir where every signed checkpoint is
    /// also appended (`audit-witness.jsonl`); must exist and be writable.
    pub witness_dir: Option<String>,
    /// SHA-256 (hex) of the checkpoint public key: the gateway refuses to
    /// start with another key, and `audit verify` refuses to trust another.
    pub signing_key_fingerprint: Option<String>,
}

/// When the writer calls fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every batch, before acknowledging it (default; the contract's
    /// "written" means durable).
    Always,
    /// At most once per interval; acknowledged records may be lost on power
    /// failure within that window.
    Interval(Duration),
    /// Never (tests, benchmarks, or a journaling store below).
    Never,
}

/// Validated audit settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Log directory; relative paths are joined to the data dir by [`Self::resolve_dir`].
    pub dir: PathBuf,
    /// fsync policy.
    pub fsync: FsyncPolicy,
    /// Rotation size in bytes.
    pub rotate_bytes: NonZeroU64,
    /// Checkpoint every N records.
    pub checkpoint_every: NonZeroU64,
    /// Checkpoint at least this often (when anything was written).
    pub checkpoint_interval: Duration,
    /// Queue capacity.
    pub queue_capacity: NonZeroUsize,
    /// Most records per batch.
    pub max_batch: NonZeroUsize,
    /// Individual deny records per key and interval before summarising.
    pub deny_summary_threshold: u64,
    /// Deny-summary interval.
    pub deny_summary_interval: Duration,
    /// Cluster mode: this node's name, written into every record (not part of
    /// `[audit]`; set from `[cluster]`).
    pub node: Option<String>,
    /// Witness directory (see [`RawAudit::witness_dir`]).
    pub witness_dir: Option<PathBuf>,
    /// Pinned checkpoint key fingerprint (lowercase hex).
    pub signing_key_fingerprint: Option<String>,
}

const MIB: u64 = 1024 * 1024;

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("audit"),
            fsync: FsyncPolicy::Always,
            rotate_bytes: NonZeroU64::MIN.saturating_add(64 * MIB - 1),
            checkpoint_every: NonZeroU64::MIN.saturating_add(999),
            checkpoint_interval: Duration::from_secs(60),
            queue_capacity: NonZeroUsize::MIN.saturating_add(8191),
            max_batch: NonZeroUsize::MIN.saturating_add(511),
            deny_summary_threshold: 20,
            deny_summary_interval: Duration::from_secs(10),
            node: None,
            witness_dir: None,
            signing_key_fingerprint: None,
        }
    }
}

impl AuditSettings {
    /// Validates `[audit]` of `file`; every problem names `audit.<key>`.
    pub fn from_raw(raw: RawAudit, file: &Path) -> Result<Self, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let mut s = Self::default();
        let err = |field: &str, problem: String, fix: &str| {
            ConfigError::new(file, format!("audit.{field}"), problem, fix)
        };
        if let Some(dir) = raw.dir {
            if dir.trim().is_empty() {
                errs.push(err(
                    "dir",
                    "is empty".into(),
                    "give a directory, e.g. \"audit\"",
                ));
            } else {
                s.dir = PathBuf::from(dir);
            }
        }
        let interval_ms = raw.fsync_interval_ms.unwrap_or(50);
        match raw.fsync.as_deref() {
            None | Some("always") => {}
            Some("never") => s.fsync = FsyncPolicy::Never,
            Some("interval") => {
                if interval_ms == 0 || interval_ms > 60_000 {
                    errs.push(err(
                        "fsync_interval_ms",
                        format!("{interval_ms} is out of range"),
                        "use 1..=60000 milliseconds",
                    ));
                }
                s.fsync = FsyncPolicy::Interval(Duration::from_millis(interval_ms));
            }
            Some(other) => errs.push(err(
                "fsync",
                format!("unknown policy `{other}`"),
                "use \"always\", \"interval\" or \"never\"",
            )),
        }
        if raw.fsync_interval_ms.is_some() && raw.fsync.as_deref() != Some("interval") {
            errs.push(err(
                "fsync_interval_ms",
                "is only used with fsync = \"interval\"".into(),
                "remove it or set fsync = \"interval\"",
            ));
        }
        if let Some(v) = raw.rotate_bytes {
            match NonZeroU64::new(v).filter(|v| v.get() >= 4096) {
                Some(v) => s.rotate_bytes = v,
                None => errs.push(err(
                    "rotate_bytes",
                    format!("{v} is too small"),
                    "use at least 4096 (default 67108864)",
                )),
            }
        }
        if let Some(v) = raw.checkpoint_every {
            match NonZeroU64::new(v) {
                Some(v) => s.checkpoint_every = v,
                None => errs.push(err(
                    "checkpoint_every",
                    "must not be 0".into(),
                    "use a positive record count (default 1000)",
                )),
            }
        }
        if let Some(v) = raw.checkpoint_interval_secs {
            if v == 0 {
                errs.push(err(
                    "checkpoint_interval_secs",
                    "must not be 0".into(),
                    "use a positive number of seconds (default 60)",
                ));
            } else {
                s.checkpoint_interval = Duration::from_secs(v);
            }
        }
        if let Some(v) = raw.queue_capacity {
            match NonZeroUsize::new(v).filter(|v| v.get() <= 1 << 24) {
                Some(v) => s.queue_capacity = v,
                None => errs.push(err(
                    "queue_capacity",
                    format!("{v} is out of range"),
                    "use 1..=16777216 (default 8192)",
                )),
            }
        }
        if let Some(v) = raw.max_batch {
            match NonZeroUsize::new(v).filter(|v| v.get() <= 65_536) {
                Some(v) => s.max_batch = v,
                None => errs.push(err(
                    "max_batch",
                    format!("{v} is out of range"),
                    "use 1..=65536 (default 512)",
                )),
            }
        }
        if let Some(v) = raw.deny_summary_threshold {
            s.deny_summary_threshold = v;
        }
        if let Some(v) = raw.deny_summary_interval_secs {
            if v == 0 {
                errs.push(err(
                    "deny_summary_interval_secs",
                    "must not be 0".into(),
                    "use a positive number of seconds (default 10)",
                ));
            } else {
                s.deny_summary_interval = Duration::from_secs(v);
            }
        }
        if let Some(w) = raw.witness_dir {
            if w.trim().is_empty() {
                errs.push(err(
                    "witness_dir",
                    "is empty".into(),
                    "give a directory outside the data dir, or remove the key",
                ));
            } else {
                s.witness_dir = Some(PathBuf::from(w));
            }
        }
        if let Some(f) = raw.signing_key_fingerprint {
            let f = f.trim().to_ascii_lowercase();
            if f.len() == 64 && f.bytes().all(|c| c.is_ascii_hexdigit()) {
                s.signing_key_fingerprint = Some(f);
            } else {
                errs.push(err(
                    "signing_key_fingerprint",
                    "is not 64 hex characters".into(),
                    "use the value `onewindow audit verify` prints as `key fingerprint`",
                ));
            }
        }
        errs.into_result(s)
    }

    /// The log directory: `dir` if absolute, else `data_dir/dir`.
    pub fn resolve_dir(&self, data_dir: &Path) -> PathBuf {
        if self.dir.is_absolute() {
            self.dir.clone()
        } else {
            data_dir.join(&self.dir)
        }
    }
}
