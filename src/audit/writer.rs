//! The single writer task with group commit, and the [`AuditLog`] handle.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::VerifyingKey;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::checkpoint::{checkpoint_record, write_head};
use super::config::{AuditSettings, FsyncPolicy, WriterPlacement};
use super::continuity;
use super::error::AuditError;
use super::keys::{SIGNING_PUB_FILE, SigningKeys, SubjectKey, check_fingerprint};
use super::query::{QueryFilter, QueryPage, query};
use super::record::{
    Action, AuditEvent, AuditRecord, Decision, EventFields, GENESIS_HASH, SubjectRef,
};
use super::segment::{list_segments, scan_tail, segment_name, set_aside};
use super::time::now_rfc3339;
use super::verify::{VerifyFailure, VerifyOptions, VerifyReport, verify_with};
use super::witness::{DirWitness, Witness};

/// What [`AuditLog::append`] returns once the record is written (and, with
/// `fsync = "always"`, durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The record's sequence number.
    pub seq: u64,
    /// The record's hash (hex).
    pub hash: String,
}

/// Test hook: given a batch's byte length, `Some((k, err))` makes the writer
/// write only the first `k` bytes and then fail with `err`.
pub(crate) type WriteFault = Arc<dyn Fn(usize) -> Option<(usize, io::Error)> + Send + Sync>;

type Ack = oneshot::Sender<Result<Appended, AuditError>>;

/// Called with every batch of records once it is written, in log order (on
/// the writer's blocking thread: it must not block; hand the records on).
/// The subject index is fed this way ([`AuditLog::set_sink`]).
pub type RecordSink = Arc<dyn Fn(&[AuditRecord]) + Send + Sync>;

// Appends are the hot variant: boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// An event, already serialised on the caller's task, and who waits for it.
    Append(AuditEvent, EventFields, Option<Ack>),
    Checkpoint(oneshot::Sender<Result<(), AuditError>>),
}

struct Shared {
    sink: arc_swap::ArcSwapOption<RecordSink>,
    healthy: AtomicBool,
    /// False while the witness could not take the latest signed head.
    witness_ok: Arc<AtomicBool>,
    /// Where the witness is, when one is configured.
    witness: Option<String>,
    stats: StatCounters,
    subject_key: SubjectKey,
    public: VerifyingKey,
    dir: PathBuf,
    /// Cluster mode: this node's name, written into every record.
    node: Option<String>,
}

/// Cheap, cloneable handle to the audit log; every request path holds one.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.shared.dir)
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

/// Owns the writer task; [`WriterHandle::shutdown`] flushes and signs.
/// Dropping it without calling `shutdown` leaves the writer running until every
/// [`AuditLog`] clone is gone.
pub struct WriterHandle {
    stop: CancellationToken,
    done: oneshot::Receiver<()>,
}

impl WriterHandle {
    /// Stops accepting records, writes what is queued, writes a final signed
    /// checkpoint and fsyncs. Appends after this return [`AuditError::Unavailable`].
    pub async fn shutdown(self) -> Result<(), AuditError> {
        self.stop.cancel();
        self.done.await.map_err(|_| AuditError::Unavailable)
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `settings.resolve_dir(data_dir)`, loads or
    /// generates the keys in `certs_dir`, resumes the chain (setting a torn tail
    /// aside and noting it) and starts the writer task on the current runtime.
    pub async fn open(
        settings: AuditSettings,
        data_dir: &Path,
        certs_dir: &Path,
    ) -> Result<(AuditLog, WriterHandle), AuditError> {
        Self::open_with(settings, data_dir, certs_dir, None).await
    }

    pub(crate) async fn open_with(
        settings: AuditSettings,
        data_dir: &Path,
        certs_dir: &Path,
        fault: Option<WriteFault>,
    ) -> Result<(AuditLog, WriterHandle), AuditError> {
        let dir = settings.resolve_dir(data_dir);
        let certs_dir = certs_dir.to_path_buf();
        let (state, subject_key) = tokio::task::spawn_blocking(move || -> Result<_, AuditError> {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(&dir)
                .map_err(|e| AuditError::io(&dir, e))?;
            let subject_key = SubjectKey::load_or_generate(&certs_dir)?;
            let keys = SigningKeys::load_or_generate(&certs_dir)?;
            if let Some(pinned) = &settings.signing_key_fingerprint {
                check_fingerprint(&keys.public(), pinned, &certs_dir.join(SIGNING_PUB_FILE))?;
            }
            let witness: Option<Arc<dyn Witness>> = settings
                .witness_dir
                .as_ref()
                .map(|d| {
                    Arc::new(DirWitness::new(d).with_node(settings.node.clone())) as Arc<dyn Witness>
                });
            if let Some(w) = &witness {
                w.probe().map_err(|e| AuditError::Io {
                    path: PathBuf::from(w.location()),
                    source: io::Error::new(
                        e.kind(),
                        format!(
                            "audit witness not writable ({e}); mount or create it and make it writable \
                             (`[audit] witness_dir` / `--audit-witness`), or remove the setting"
                        ),
                    ),
                })?;
            }
            let state = State::resume(dir, settings, keys, fault, witness)?;
            Ok((state, subject_key))
        })
        .await
        .map_err(|_| AuditError::Unavailable)??;
        let shared = Arc::new(Shared {
            sink: arc_swap::ArcSwapOption::empty(),
            healthy: AtomicBool::new(true),
            witness_ok: state.witness_ok.clone(),
            witness: state.witness.as_ref().map(|w| w.location()),
            stats: StatCounters::default(),
            subject_key,
            public: state.keys.public(),
            dir: state.dir.clone(),
            node: state.settings.node.clone(),
        });
        let (tx, rx) = mpsc::channel(state.settings.queue_capacity.get());
        let stop = CancellationToken::new();
        let (finished, done) = oneshot::channel();
        let placement = state.settings.writer;
        let writer = run(state, rx, stop.clone(), shared.clone());
        if placement == WriterPlacement::Runtime {
            tokio::spawn(async move {
                writer.await;
                let _ = finished.send(());
            });
            return Ok((AuditLog { tx, shared }, WriterHandle { stop, done }));
        }
        // The writer has a thread of its own: it blocks in write and fsync
        // without taking a request worker, and without a hop through the
        // blocking pool per batch. A request's record wakes it at most once
        // per batch (when it is idle); the records it finds meanwhile join the
        // same batch.
        std::thread::Builder::new()
            .name("onewindow-audit".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(writer),
                    Err(e) => tracing::error!(error = %e, "audit: cannot start the writer"),
                }
                let _ = finished.send(());
            })
            .map_err(|e| AuditError::io(&shared.dir, e))?;
        Ok((AuditLog { tx, shared }, WriterHandle { stop, done }))
    }

    /// Stamps this node's name and serialises the event on the caller's
    /// task, so the writer only chains, writes and syncs.
    fn prepare(&self, ev: &mut AuditEvent) -> Result<EventFields, AuditError> {
        ev.node.clone_from(&self.shared.node);
        EventFields::of(ev).map_err(|e| {
            tracing::error!(error = %e, "audit: an event could not be serialised");
            AuditError::Unavailable
        })
    }

    /// Appends one record and waits until it is written (per the fsync policy).
    /// The caller releases its reply only after `Ok`; on `Err` it fails closed.
    pub async fn append(&self, mut ev: AuditEvent) -> Result<Appended, AuditError> {
        let fields = self.prepare(&mut ev)?;
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Append(ev, fields, Some(ack)))
            .await
            .map_err(|_| AuditError::Unavailable)?;
        rx.await.map_err(|_| AuditError::Unavailable)?
    }

    /// Queues a record without waiting for it (deny floods, summaries): `Err`
    /// when the queue is full or the writer is gone; a later write failure is
    /// not reported to this caller.
    pub fn try_append(&self, ev: AuditEvent) -> Result<(), AuditError> {
        let mut ev = ev;
        let fields = self.prepare(&mut ev)?;
        self.tx
            .try_send(Cmd::Append(ev, fields, None))
            .map_err(|_| AuditError::Unavailable)
    }

    /// Writes a signed checkpoint now (if anything was written since the last
    /// one) and waits for it; what the `checkpoint_interval_secs` timer does.
    pub async fn checkpoint_now(&self) -> Result<(), AuditError> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Checkpoint(ack))
            .await
            .map_err(|_| AuditError::Unavailable)?;
        rx.await.map_err(|_| AuditError::Unavailable)?
    }

    /// Writer counters and the current queue depth (for `/metrics`).
    pub fn stats(&self) -> AuditStats {
        let s = &self.shared.stats;
        AuditStats {
            queued: self.tx.max_capacity() - self.tx.capacity(),
            batches: s.batches.load(Ordering::Relaxed),
            records: s.records.load(Ordering::Relaxed),
            write_failures: s.failures.load(Ordering::Relaxed),
            write_seconds: s.write_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            last_batch: s.last_batch.load(Ordering::Relaxed),
        }
    }

    /// False while the last write failed (`/readyz` turns red and the data plane
    /// answers data requests 503); true again after a successful write.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
            && self.shared.witness_ok.load(Ordering::Acquire)
    }

    /// The configured witness and whether it took the latest signed head
    /// (`None` without a witness).
    pub fn witness_status(&self) -> Option<(String, bool)> {
        self.shared
            .witness
            .clone()
            .map(|w| (w, self.shared.witness_ok.load(Ordering::Acquire)))
    }

    /// Hands every batch written from now on to `sink` (see [`RecordSink`]).
    pub fn set_sink(&self, sink: RecordSink) {
        self.shared.sink.store(Some(Arc::new(sink)));
    }

    /// The keyed reference for a subject id (what goes in `subject_ref`).
    pub fn subject_ref(&self, subject_id: &str) -> SubjectRef {
        self.shared.subject_key.subject_ref(subject_id)
    }

    /// The subject key (to compile query filters).
    pub fn subject_key(&self) -> &SubjectKey {
        &self.shared.subject_key
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The checkpoint public key.
    pub fn public_key(&self) -> VerifyingKey {
        self.shared.public
    }

    /// One page of records (on a blocking thread); see [`crate::audit::query`].
    pub async fn query(
        &self,
        filter: QueryFilter,
        cursor: Option<String>,
        limit: Option<usize>,
    ) -> Result<QueryPage, AuditError> {
        let dir = self.shared.dir.clone();
        tokio::task::spawn_blocking(move || query(&dir, &filter, cursor.as_deref(), limit))
            .await
            .map_err(|_| AuditError::Unavailable)?
    }

    /// Verifies the live log now (for `GET /admin/audit/verify`); a line being
    /// written at the very end is tolerated.
    pub async fn verify(&self) -> Result<Result<VerifyReport, VerifyFailure>, AuditError> {
        let dir = self.shared.dir.clone();
        let key = self.shared.public;
        let opts = VerifyOptions {
            progress: false,
            allow_partial_tail: true,
        };
        tokio::task::spawn_blocking(move || verify_with(&[dir], &key, &opts))
            .await
            .map_err(|_| AuditError::Unavailable)
    }
}

/// What the writer thread owns.
struct State {
    dir: PathBuf,
    settings: AuditSettings,
    keys: SigningKeys,
    seg_index: u32,
    file: File,
    /// Offset just past the last record known written.
    file_len: u64,
    next_seq: u64,
    last_hash: String,
    since_checkpoint: u64,
    /// A write failed: reopen the segment by path and cut it back to
    /// `file_len` before the next write (the old handle may be unusable, e.g.
    /// after the file was replaced or the filesystem remounted).
    reopen: bool,
    unsynced: bool,
    last_sync: Instant,
    /// Appends refused since the last successful write, and since when.
    outage: Option<(u64, String)>,
    fault: Option<WriteFault>,
    /// Where signed heads are also remembered.
    witness: Option<Arc<dyn Witness>>,
    /// Shared with [`Shared::witness_ok`].
    witness_ok: Arc<AtomicBool>,
    /// A signed head the witness has not taken yet (retried).
    witness_pending: Option<Vec<u8>>,
}

fn open_segment(dir: &Path, index: u32) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(dir.join(segment_name(index)))
}

impl State {
    fn resume(
        dir: PathBuf,
        settings: AuditSettings,
        keys: SigningKeys,
        fault: Option<WriteFault>,
        witness: Option<Arc<dyn Witness>>,
    ) -> Result<State, AuditError> {
        let segs = list_segments(&dir)?;
        let mut notes = Vec::new();
        let (seg_index, file_len, last) = match segs.last() {
            None => (1, 0, None),
            Some(newest) => {
                let tail = scan_tail(&newest.path)?;
                if !tail.torn.is_empty() {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let aside = set_aside(&newest.path, tail.good_len, &tail.torn, now)?;
                    let mut ev = AuditEvent::new(Action::AUDIT_TORN_TAIL, Decision::Error);
                    ev.client = Some("onewindow".into());
                    ev.reason = Some(format!(
                        "{} bytes after seq {} in {} were not a complete record; moved to {}",
                        tail.torn.len(),
                        tail.last.as_ref().map_or(0, |r| r.seq),
                        segment_name(newest.index),
                        aside
                            .file_name()
                            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                    ));
                    tracing::warn!(file = %newest.path.display(), bytes = tail.torn.len(), "audit: torn tail set aside");
                    notes.push(ev);
                }
                let last = match tail.last {
                    Some(r) => Some(r),
                    None if segs.len() >= 2 => {
                        let prev = &segs[segs.len() - 2];
                        let pt = scan_tail(&prev.path)?;
                        if !pt.torn.is_empty() || pt.last.is_none() {
                            return Err(AuditError::Corrupt {
                                file: prev.path.clone(),
                                line: 0,
                                problem: "an older segment does not end with a valid record; run `onewindow audit verify`".into(),
                            });
                        }
                        pt.last
                    }
                    None => None,
                };
                (newest.index, tail.good_len, last)
            }
        };
        let file = open_segment(&dir, seg_index).map_err(|e| AuditError::io(&dir, e))?;
        let (next_seq, last_hash, since_checkpoint) = match &last {
            None => (1, GENESIS_HASH.to_string(), 0),
            Some(r) => (
                r.seq + 1,
                r.hash.clone(),
                u64::from(r.event.action != Action::CHECKPOINT),
            ),
        };
        let mut st = State {
            dir,
            settings,
            keys,
            seg_index,
            file,
            file_len,
            next_seq,
            last_hash,
            since_checkpoint,
            reopen: false,
            unsynced: false,
            last_sync: Instant::now(),
            outage: None,
            fault: None,
            witness,
            witness_ok: Arc::new(AtomicBool::new(true)),
            witness_pending: None,
        };
        let witness_head = st.witness_head();
        let gap = continuity::check(&st.dir, last.as_ref(), witness_head)?;
        if let Some(gap) = &gap {
            tracing::error!(dir = %st.dir.display(), problem = %gap.reason, "audit: the log does not reach its signed head; writing an audit.gap record");
            st.next_seq = gap.next_seq;
            notes.push(gap.event());
        }
        if !notes.is_empty() {
            st.write_batch(notes, gap.is_some())
                .map_err(|e| AuditError::io(st.dir.join(segment_name(st.seg_index)), e))?;
        }
        st.fault = fault;
        Ok(st)
    }

    /// Serialises, writes and syncs one batch; on error nothing of it counts
    /// and the file is cut back to the last good offset.
    fn write_batch(
        &mut self,
        events: Vec<AuditEvent>,
        force_checkpoint: bool,
    ) -> io::Result<Vec<Appended>> {
        let events = events.into_iter().map(|e| (e, None)).collect();
        self.write_batch_with(events, force_checkpoint, None)
    }

    /// [`Self::write_batch`], also handing the written records to `sink`.
    fn write_batch_with(
        &mut self,
        events: Vec<(AuditEvent, Option<EventFields>)>,
        force_checkpoint: bool,
        sink: Option<&RecordSink>,
    ) -> io::Result<Vec<Appended>> {
        if self.witness_pending.is_some() {
            self.hand_to_witness();
            if self.witness_pending.is_some() {
                // The gateway does not run without the witness it was told to
                // keep: nothing is acknowledged until it takes the head.
                return Err(io::Error::other(
                    "the audit witness has not taken the last signed head",
                ));
            }
        }
        if self.reopen {
            let f = open_segment(&self.dir, self.seg_index)?;
            let len = f.metadata()?.len();
            if len < self.file_len {
                return Err(io::Error::other(format!(
                    "{} is shorter than the records already written to it",
                    segment_name(self.seg_index)
                )));
            }
            if len > self.file_len {
                f.set_len(self.file_len)?;
            }
            self.file = f;
            self.reopen = false;
        }
        let every = self.settings.checkpoint_every.get();
        let mut buf = Vec::with_capacity(events.len() * 400);
        let mut seq = self.next_seq;
        let mut prev = self.last_hash.clone();
        let mut since = self.since_checkpoint;
        let mut head_line: Option<Vec<u8>> = None;
        let mut out = Vec::with_capacity(events.len());
        let node = self.settings.node.clone();
        let mut written: Vec<AuditRecord> = Vec::new();
        let push = |mut rec: AuditRecord,
                    buf: &mut Vec<u8>,
                    prev: &mut String,
                    seq: &mut u64,
                    written: &mut Vec<AuditRecord>|
         -> io::Result<Vec<u8>> {
            rec.event.node.clone_from(&node);
            let line = rec.seal().map_err(io::Error::other)?;
            buf.extend_from_slice(&line);
            prev.clone_from(&rec.hash);
            *seq += 1;
            if sink.is_some() {
                written.push(rec);
            }
            Ok(line)
        };
        let note = self.outage.as_ref().map(|(n, since_time)| {
            let mut ev = AuditEvent::new(Action::AUDIT_OUTAGE, Decision::Error);
            ev.client = Some("onewindow".into());
            ev.reason = Some(format!(
                "audit log could not be written since {since_time}; {n} records refused"
            ));
            ev
        });
        let n_internal = usize::from(note.is_some());
        for (i, (ev, fields)) in note
            .map(|n| (n, None))
            .into_iter()
            .chain(events)
            .enumerate()
        {
            let this_seq = seq;
            match fields {
                // The caller serialised it: chain the bytes as they are.
                Some(fields) => {
                    let (line, hash) = AuditRecord::seal_fields(seq, &fields, &prev);
                    buf.extend_from_slice(&line);
                    let before = std::mem::replace(&mut prev, hash);
                    seq += 1;
                    if sink.is_some() {
                        let mut rec = AuditRecord::from_event(ev, this_seq, before);
                        rec.hash.clone_from(&prev);
                        written.push(rec);
                    }
                }
                None => {
                    let rec = AuditRecord::from_event(ev, seq, prev.clone());
                    push(rec, &mut buf, &mut prev, &mut seq, &mut written)?;
                }
            }
            if i >= n_internal {
                out.push(Appended {
                    seq: this_seq,
                    hash: prev.clone(),
                });
            }
            since += 1;
            if since >= every {
                let cp = checkpoint_record(&self.keys, seq, &prev, now_rfc3339());
                head_line = Some(push(cp, &mut buf, &mut prev, &mut seq, &mut written)?);
                since = 0;
            }
        }
        if force_checkpoint && since > 0 {
            let cp = checkpoint_record(&self.keys, seq, &prev, now_rfc3339());
            head_line = Some(push(cp, &mut buf, &mut prev, &mut seq, &mut written)?);
            since = 0;
        }
        if buf.is_empty() {
            return Ok(out);
        }
        if self.file_len > 0 && self.file_len + buf.len() as u64 > self.settings.rotate_bytes.get()
        {
            self.rotate()?;
        }
        if let Err(e) = self.write_and_sync(&buf) {
            // Never leave a partial batch behind: later records must link to the
            // last record actually written.
            // Cut back right away; reopen before the next write in any case.
            let _ = self.file.set_len(self.file_len);
            self.reopen = true;
            return Err(e);
        }
        self.file_len += buf.len() as u64;
        self.next_seq = seq;
        self.last_hash = prev;
        self.since_checkpoint = since;
        self.outage = None;
        if let Some(line) = head_line {
            if let Err(e) = write_head(&self.dir, &line) {
                tracing::warn!(error = %e, "audit: could not update the checkpoint head file");
            }
            if self.witness.is_some() {
                self.witness_pending = Some(line);
                self.hand_to_witness();
            }
        }
        if let Some(sink) = sink {
            sink(&written);
        }
        Ok(out)
    }

    /// The witness's latest head when its signature verifies with our key
    /// (a line that does not is ignored here and reported by `audit verify`).
    fn witness_head(&self) -> Option<(String, AuditRecord)> {
        let w = self.witness.as_ref()?;
        let line = match w.latest() {
            Ok(l) => l?,
            Err(e) => {
                tracing::warn!(witness = %w.location(), error = %e, "audit: witness unreadable on start");
                return None;
            }
        };
        let rec = super::record::parse_line(&line).ok()?;
        super::checkpoint::check_checkpoint(&rec, &self.keys.public()).ok()?;
        Some((w.location(), rec))
    }

    /// Hands the pending signed head to the witness; on failure the log
    /// turns unhealthy (data requests fail closed) until a retry succeeds.
    fn hand_to_witness(&mut self) {
        let (Some(w), Some(line)) = (&self.witness, &self.witness_pending) else {
            return;
        };
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        match w.append(line) {
            Ok(()) => {
                self.witness_pending = None;
                self.witness_ok.store(true, Ordering::Release);
            }
            Err(e) => {
                if self.witness_ok.swap(false, Ordering::AcqRel) {
                    tracing::error!(witness = %w.location(), error = %e, "audit: witness did not take the signed head; failing closed until it does");
                }
            }
        }
    }

    fn write_and_sync(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some((k, err)) = self.fault.as_ref().and_then(|f| f(buf.len())) {
            self.file.write_all(&buf[..k.min(buf.len())])?;
            return Err(err);
        }
        self.file.write_all(buf)?;
        match self.settings.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval(d) => {
                if self.last_sync.elapsed() >= d {
                    self.sync()?;
                } else {
                    self.unsynced = true;
                }
            }
            FsyncPolicy::Never => {}
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let next = self.seg_index + 1;
        let file = open_segment(&self.dir, next)?;
        if file.metadata()?.len() != 0 {
            return Err(io::Error::other(format!(
                "{} already exists and is not empty",
                segment_name(next)
            )));
        }
        File::open(&self.dir)?.sync_all()?;
        self.file = file;
        self.seg_index = next;
        self.file_len = 0;
        Ok(())
    }
}

enum Op {
    Batch(Vec<Cmd>, bool),
    Sync,
}

/// Runs one operation where the writer's placement says (its own thread:
/// right here; the runtime: on the blocking pool).
async fn exec(state: State, op: Op, shared: &Arc<Shared>) -> Option<State> {
    match state.settings.writer {
        WriterPlacement::OwnThread => exec_here(state, op, shared),
        WriterPlacement::Runtime => {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || exec_here(state, op, &shared))
                .await
                .unwrap_or(None)
        }
    }
}

/// Runs one operation on this thread; returns the state (None if it
/// panicked, which stops the writer).
fn exec_here(state: State, op: Op, shared: &Shared) -> Option<State> {
    let started = std::time::Instant::now();
    let sink = shared.sink.load_full();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut st = state;
        match op {
            Op::Batch(cmds, force) => {
                let mut events = Vec::with_capacity(cmds.len());
                let mut acks = Vec::with_capacity(cmds.len());
                let mut cp_acks = Vec::new();
                for c in cmds {
                    match c {
                        Cmd::Append(ev, fields, ack) => {
                            events.push((ev, Some(fields)));
                            acks.push(ack);
                        }
                        Cmd::Checkpoint(ack) => cp_acks.push(ack),
                    }
                }
                let force = force || !cp_acks.is_empty();
                let r = st.write_batch_with(events, force, sink.as_deref());
                (st, Some((r, acks, cp_acks)))
            }
            Op::Sync => {
                if st.unsynced
                    && let Err(e) = st.sync()
                {
                    tracing::error!(error = %e, "audit: fdatasync failed");
                }
                (st, None)
            }
        }
    }));
    let Ok((mut st, outcome)) = res else {
        shared.healthy.store(false, Ordering::Release);
        tracing::error!("audit: writer thread panicked; the audit log is unavailable");
        return None;
    };
    if let Some((r, acks, cp_acks)) = outcome {
        let ok = r.is_ok();
        shared.stats.record_batch(acks.len(), started.elapsed(), ok);
        match r {
            Ok(appended) => {
                shared.healthy.store(true, Ordering::Release);
                for (ack, a) in acks.into_iter().zip(appended) {
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(a));
                    }
                }
            }
            Err(e) => {
                if shared.healthy.swap(false, Ordering::AcqRel) {
                    tracing::error!(error = %e, "audit: write failed; failing closed until it recovers");
                }
                let n = acks.len() as u64;
                st.outage = Some(match st.outage.take() {
                    Some((m, since)) => (m + n, since),
                    None => (n, now_rfc3339()),
                });
                for ack in acks.into_iter().flatten() {
                    let _ = ack.send(Err(AuditError::Unavailable));
                }
            }
        }
        for ack in cp_acks {
            let _ = ack.send(if ok {
                Ok(())
            } else {
                Err(AuditError::Unavailable)
            });
        }
    }
    Some(st)
}

async fn run(
    state: State,
    mut rx: mpsc::Receiver<Cmd>,
    stop: CancellationToken,
    shared: Arc<Shared>,
) {
    let max = state.settings.max_batch.get();
    let cp_every = state.settings.checkpoint_interval;
    let sync_every = match state.settings.fsync {
        FsyncPolicy::Interval(d) => Some(d),
        _ => None,
    };
    let mut cp_tick = tokio::time::interval_at(tokio::time::Instant::now() + cp_every, cp_every);
    cp_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sync_period = sync_every.unwrap_or(Duration::from_secs(3600));
    let mut sync_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + sync_period, sync_period);
    sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retry = Duration::from_secs(1);
    let mut retry_tick = tokio::time::interval_at(tokio::time::Instant::now() + retry, retry);
    retry_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = Some(state);
    let mut batch: Vec<Cmd> = Vec::with_capacity(max);
    loop {
        let Some(st) = state.take() else { return };
        let op = tokio::select! {
            biased;
            _ = stop.cancelled() => { state = Some(st); break; }
            n = rx.recv_many(&mut batch, max) => {
                if n == 0 { state = Some(st); break; }
                Op::Batch(std::mem::take(&mut batch), false)
            }
            _ = cp_tick.tick() => {
                if st.since_checkpoint == 0 { state = Some(st); continue; }
                Op::Batch(Vec::new(), true)
            }
            _ = sync_tick.tick(), if sync_every.is_some() => Op::Sync,
            _ = retry_tick.tick(), if !shared.healthy.load(Ordering::Acquire) || !shared.witness_ok.load(Ordering::Acquire) => Op::Batch(Vec::new(), false),
        };
        state = exec(st, op, &shared).await;
    }
    // Shutdown: refuse new records, write what is queued, sign, sync.
    rx.close();
    loop {
        batch.clear();
        while batch.len() < max {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let Some(st) = state.take() else { return };
        if batch.is_empty() {
            state = Some(st);
            break;
        }
        state = exec(st, Op::Batch(std::mem::take(&mut batch), false), &shared).await;
    }
    let Some(st) = state.take() else { return };
    if let Some(mut st) = exec(st, Op::Batch(Vec::new(), true), &shared).await
        && let Err(e) = st.sync()
    {
        tracing::error!(error = %e, "audit: final fdatasync failed");
    }
}

/// A snapshot of the writer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AuditStats {
    /// Records waiting in the queue for the writer.
    pub queued: usize,
    /// Batches written (each one write + the fsync policy).
    pub batches: u64,
    /// Records acknowledged through batches.
    pub records: u64,
    /// Batches that failed to write (callers got `Unavailable`).
    pub write_failures: u64,
    /// Total seconds spent writing and syncing batches.
    pub write_seconds: f64,
    /// Size of the last batch.
    pub last_batch: u64,
}

#[derive(Default)]
struct StatCounters {
    batches: AtomicU64,
    records: AtomicU64,
    failures: AtomicU64,
    write_nanos: AtomicU64,
    last_batch: AtomicU64,
}

impl StatCounters {
    fn record_batch(&self, records: usize, took: std::time::Duration, ok: bool) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.last_batch.store(records as u64, Ordering::Relaxed);
        self.write_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if ok {
            self.records.fetch_add(records as u64, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}
