//! The running subject index: fed by the audit writer as records are
//! appended, checked against the log at start and on every query, rebuilt
//! from the log when it is missing, damaged or from another log.
//!
//! Consistency rules (never a silently wrong answer):
//! - at start, the record at the index's `last_seq` must exist in the log
//!   with the index's `last_hash`, and the log's first record must have the
//!   index's `first_hash`; otherwise the index is rebuilt from the log;
//! - the writer's batches must continue the index (`seq` and `prev`); a gap
//!   (a dropped batch) is filled from the log;
//! - a query first waits until the index covers every record written
//!   before it arrived; then the file must still be the one opened (not
//!   deleted or replaced), and the query's read transaction must see the
//!   position the index task committed. Any failure, or a database error,
//!   rebuilds the index before answering (or answers 503 while it cannot).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::db::{AccessQuery, AccessRow, IndexDb, IndexRow, Position, SCHEMA_VERSION};
use crate::audit::{
    AuditError, AuditLog, AuditRecord, GENESIS_HASH, QueryFilter, QueryIter, RecordSink,
};

/// File name of the index under the data directory.
pub const INDEX_FILE: &str = "subject-index.sqlite";

/// Actions whose records are data accesses about a subject.
pub const INDEXED_ACTIONS: [&str; 3] = ["dataset.read", "scenario.part", "proxy"];

/// How long a query waits for the index to catch up or be rebuilt.
const QUERY_WAIT: Duration = Duration::from_secs(10);

/// Why the index cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The database failed.
    #[error("subject index database: {0}")]
    Db(#[from] sqlx::Error),
    /// The audit log could not be read.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    /// The index and the log disagree, or the log's chain is broken.
    #[error("{0}")]
    Inconsistent(String),
    /// The index is being rebuilt, or is behind, past the wait.
    #[error("the subject index is {0}; try again shortly")]
    NotReady(&'static str),
}

/// What `/readyz` says about the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexStatus {
    /// Opening, checking, catching up.
    Starting,
    /// Answering.
    Ready,
    /// Being rebuilt from the log.
    Rebuilding,
    /// Cannot be built (e.g. the log's chain is broken); queries get 503.
    Failed(String),
}

impl std::fmt::Display for IndexStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexStatus::Starting => f.write_str("starting"),
            IndexStatus::Ready => f.write_str("ready"),
            IndexStatus::Rebuilding => f.write_str("rebuilding"),
            IndexStatus::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// One batch from the writer.
struct Batch {
    first_seq: u64,
    first_prev: String,
    rows: Vec<IndexRow>,
    end: Position,
}

impl Batch {
    /// Takes `next` into this batch when it continues it directly (the next
    /// sequence number, chained to this batch's last hash), so that several
    /// writer batches waiting in the queue become one index transaction.
    /// Gives `next` back otherwise.
    fn absorb(&mut self, next: Batch) -> Result<(), Batch> {
        if next.first_seq != self.end.last_seq + 1 || next.first_prev != self.end.last_hash {
            return Err(next);
        }
        self.rows.extend(next.rows);
        let first_hash = std::mem::take(&mut self.end.first_hash);
        self.end = Position {
            first_hash,
            ..next.end
        };
        Ok(())
    }
}

/// Most index rows written in one transaction when batches are merged.
const MAX_MERGED_ROWS: usize = 20_000;

/// How long the index task gathers the writer's batches into one
/// transaction. The index is derived from the log (checked and caught up
/// from it at start), so nothing is lost by writing it a little later, and
/// queries end the wait at once.
const INDEX_LINGER: std::time::Duration = std::time::Duration::from_millis(50);

enum Msg {
    Batch(Batch),
    CatchUp,
    Rebuild(oneshot::Sender<()>),
}

struct Inner {
    path: PathBuf,
    audit_dir: PathBuf,
    db: ArcSwap<Option<IndexDb>>,
    file_id: Mutex<Option<(u64, u64)>>,
    state: watch::Sender<IndexState>,
    /// Highest seq handed over by the writer.
    sent: AtomicU64,
    tx: mpsc::Sender<Msg>,
    /// The index task, until [`SubjectIndex::stopped`] awaits it.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The index's position and status, watched by waiting queries.
#[derive(Debug, Clone)]
struct IndexState {
    pos: Position,
    status: IndexStatus,
}

impl Inner {
    fn new(path: PathBuf, audit_dir: PathBuf, tx: mpsc::Sender<Msg>) -> Self {
        Self {
            path,
            audit_dir,
            db: ArcSwap::from_pointee(None),
            file_id: Mutex::new(None),
            state: watch::Sender::new(IndexState {
                pos: Position::default(),
                status: IndexStatus::Starting,
            }),
            sent: AtomicU64::new(0),
            tx,
            task: Mutex::new(None),
        }
    }

    fn pos(&self) -> Position {
        self.state.borrow().pos.clone()
    }

    fn set_pos(&self, pos: Position) {
        self.state.send_modify(|s| s.pos = pos);
    }

    fn status(&self) -> IndexStatus {
        self.state.borrow().status.clone()
    }

    fn set_status(&self, status: IndexStatus) {
        self.state.send_modify(|s| s.status = status);
    }

    fn set_file_id(&self) {
        if let Ok(mut id) = self.file_id.lock() {
            *id = file_id(&self.path);
        }
    }
}

/// Handle to the running index. Cheap to clone.
#[derive(Clone)]
pub struct SubjectIndex {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SubjectIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectIndex")
            .field("path", &self.inner.path)
            .field("status", &self.status())
            .finish()
    }
}

impl SubjectIndex {
    /// Starts the index at `<data_dir>/subject-index.sqlite` for the log in
    /// `audit.dir()`, and attaches it to the writer. Checking, catching up or
    /// rebuilding happens in the background (`/readyz` says `starting`).
    pub fn start(data_dir: &Path, audit: &AuditLog, shutdown: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let inner = Arc::new(Inner::new(
            data_dir.join(INDEX_FILE),
            audit.dir().to_path_buf(),
            tx,
        ));
        let sink_inner = Arc::downgrade(&inner);
        let sink: RecordSink = Arc::new(move |records: &[AuditRecord]| {
            let Some(inner) = sink_inner.upgrade() else {
                return;
            };
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                return;
            };
            inner.sent.fetch_max(last.seq, Ordering::AcqRel);
            let batch = Batch {
                first_seq: first.seq,
                first_prev: first.prev.clone(),
                rows: records.iter().filter_map(row_of).collect(),
                end: Position {
                    last_seq: last.seq,
                    last_hash: last.hash.clone(),
                    first_hash: if first.seq == 1 {
                        first.hash.clone()
                    } else {
                        String::new()
                    },
                },
            };
            // Never blocks the writer: a dropped batch is a gap, filled from the log.
            let _ = inner.tx.try_send(Msg::Batch(batch));
        });
        audit.set_sink(sink);
        let task = tokio::spawn(run(inner.clone(), rx, shutdown));
        if let Ok(mut t) = inner.task.lock() {
            *t = Some(task);
        }
        Self { inner }
    }

    /// Waits until the index task has stopped (after the shutdown signal)
    /// and closed the file cleanly.
    pub async fn stopped(&self) {
        let task = self.inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Where the index stands.
    pub fn status(&self) -> IndexStatus {
        self.inner.status()
    }

    /// The position the index covers.
    pub fn position(&self) -> Position {
        self.inner.pos()
    }

    /// One page of a subject's accesses, from an index that covers every
    /// record written before this call and agrees with the log.
    pub async fn accesses(&self, q: &AccessQuery) -> Result<Vec<AccessRow>, IndexError> {
        let target = self.inner.sent.load(Ordering::Acquire);
        self.wait_for(target).await?;
        match self.try_accesses(q, target).await {
            Ok(rows) => Ok(rows),
            Err(e) => {
                tracing::warn!(error = %e, "subject index: check failed; rebuilding from the audit log");
                self.rebuild().await?;
                self.wait_for(target).await?;
                self.try_accesses(q, target).await
            }
        }
    }

    async fn try_accesses(
        &self,
        q: &AccessQuery,
        target: u64,
    ) -> Result<Vec<AccessRow>, IndexError> {
        let expected = file_id(&self.inner.path);
        let opened = self.inner.file_id.lock().map_or(None, |id| *id);
        if expected.is_none() || expected != opened {
            return Err(IndexError::Inconsistent(
                "the index file was deleted or replaced".into(),
            ));
        }
        let db = self.inner.db.load_full();
        let Some(db) = db.as_ref() else {
            return Err(IndexError::NotReady("starting"));
        };
        let (rows, pos) = db.accesses(q).await?;
        let applied = self.inner.pos();
        match pos {
            Some(p) if p.last_seq >= target && p.first_hash == applied.first_hash => Ok(rows),
            Some(p) => Err(IndexError::Inconsistent(format!(
                "the index file says it covers seq {} of another or shorter log",
                p.last_seq
            ))),
            None => Err(IndexError::Inconsistent(
                "the index file has no position".into(),
            )),
        }
    }

    /// Waits until the index covers `target`, asking it to catch up from the
    /// log when it is behind.
    async fn wait_for(&self, target: u64) -> Result<(), IndexError> {
        let covered = |st: &IndexState| {
            matches!(st.status, IndexStatus::Failed(_))
                || (st.status == IndexStatus::Ready && st.pos.last_seq >= target)
        };
        let mut rx = self.inner.state.subscribe();
        if !covered(&rx.borrow()) {
            let _ = self.inner.tx.send(Msg::CatchUp).await;
            match tokio::time::timeout(QUERY_WAIT, rx.wait_for(covered)).await {
                Err(_) => return Err(IndexError::NotReady("behind the audit log")),
                Ok(Err(_)) => return Err(IndexError::NotReady("stopped")),
                Ok(Ok(_)) => {}
            }
        }
        match self.inner.status() {
            IndexStatus::Failed(why) => Err(IndexError::Inconsistent(why)),
            _ => Ok(()),
        }
    }

    /// Rebuilds the index from the log now and waits for it.
    pub async fn rebuild(&self) -> Result<(), IndexError> {
        let (ack, done) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Rebuild(ack))
            .await
            .map_err(|_| IndexError::NotReady("stopped"))?;
        tokio::time::timeout(QUERY_WAIT, done)
            .await
            .map_err(|_| IndexError::NotReady("being rebuilt"))?
            .map_err(|_| IndexError::NotReady("stopped"))?;
        match self.status() {
            IndexStatus::Failed(why) => Err(IndexError::Inconsistent(why)),
            _ => Ok(()),
        }
    }
}

/// The index row of one audit record, if it is a data access about a subject.
pub fn row_of(r: &AuditRecord) -> Option<IndexRow> {
    if !INDEXED_ACTIONS.contains(&r.event.action.as_str()) {
        return None;
    }
    let mut subject = [0u8; 32];
    hex::decode_to_slice(r.event.subject_ref.as_ref()?.as_str(), &mut subject).ok()?;
    Some(IndexRow {
        seq: r.seq,
        time_us: crate::audit::parse_rfc3339_micros(&r.event.time).unwrap_or(0),
        subject,
        client: r.event.client.clone(),
        department: r.event.department.clone(),
        dataset: r.event.dataset.clone(),
        scenario: r.event.scenario.clone(),
        purpose: r.event.purpose.clone(),
        decision: r.event.decision.as_str().to_string(),
        action: r.event.action.as_str().to_string(),
        case_id: r.event.case_id.clone(),
    })
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

async fn run(inner: Arc<Inner>, mut rx: mpsc::Receiver<Msg>, shutdown: CancellationToken) {
    let mut names = HashMap::new();
    if let Err(e) = open_checked(&inner, &mut names).await {
        tracing::warn!(error = %e, "subject index: not usable as found; rebuilding from the audit log");
        rebuild(&inner, &mut names).await;
    }
    // A message taken from the queue while merging batches, handled next.
    let mut held: Option<Msg> = None;
    loop {
        let msg = match held.take() {
            Some(m) => m,
            None => tokio::select! {
                _ = shutdown.cancelled() => break,
                m = rx.recv() => match m { Some(m) => m, None => break },
            },
        };
        // Group commit: the writer's batches of the next few milliseconds go
        // into one transaction (one journal sync and one commit, not one per
        // batch). A query does not wait for the linger: it sends `CatchUp`,
        // which ends it.
        let msg = match msg {
            Msg::Batch(mut b) => {
                let until = tokio::time::Instant::now() + INDEX_LINGER;
                while b.rows.len() < MAX_MERGED_ROWS {
                    let next = match rx.try_recv() {
                        Ok(m) => m,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            match tokio::time::timeout_at(until, rx.recv()).await {
                                Ok(Some(m)) => m,
                                _ => break,
                            }
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    };
                    match next {
                        Msg::Batch(next) => {
                            if let Err(next) = b.absorb(next) {
                                held = Some(Msg::Batch(next));
                                break;
                            }
                        }
                        other => {
                            held = Some(other);
                            break;
                        }
                    }
                }
                Msg::Batch(b)
            }
            other => other,
        };
        if matches!(inner.status(), IndexStatus::Failed(_)) {
            if let Msg::Rebuild(ack) = msg {
                rebuild(&inner, &mut names).await;
                let _ = ack.send(());
            }
            continue;
        }
        let result = match msg {
            Msg::Batch(b) => apply_batch(&inner, &mut names, b).await,
            Msg::CatchUp => {
                if inner.pos().last_seq < inner.sent.load(Ordering::Acquire) {
                    catch_up(&inner, &mut names).await
                } else {
                    Ok(())
                }
            }
            Msg::Rebuild(ack) => {
                rebuild(&inner, &mut names).await;
                let _ = ack.send(());
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "subject index: update failed; rebuilding from the audit log");
            rebuild(&inner, &mut names).await;
        }
    }
    if let Some(db) = inner.db.load_full().as_ref() {
        db.close().await;
    }
}

/// Opens the existing index and checks it against the log; catches up.
async fn open_checked(inner: &Inner, names: &mut HashMap<String, i64>) -> Result<(), IndexError> {
    if !inner.path.exists() {
        return Err(IndexError::Inconsistent("no index file".into()));
    }
    let db = IndexDb::open(&inner.path).await?;
    let pos = match db.position().await {
        Ok(Some((v, p))) if v == SCHEMA_VERSION => p,
        Ok(_) => {
            db.discard().await;
            return Err(IndexError::Inconsistent(
                "no position or another schema".into(),
            ));
        }
        Err(e) => {
            db.discard().await;
            return Err(e.into());
        }
    };
    match db.session().await {
        Ok(s) if s.survived(db.boot()) => {}
        Ok(_) => {
            db.discard().await;
            return Err(IndexError::Inconsistent(
                "the machine restarted while the index was being written (unsynced writes may be lost)"
                    .into(),
            ));
        }
        Err(e) => {
            db.discard().await;
            return Err(e.into());
        }
    }
    inner.set_file_id();
    inner.db.store(Arc::new(Some(db)));
    inner.set_pos(pos);
    catch_up(inner, names).await?;
    inner.set_status(IndexStatus::Ready);
    tracing::info!(seq = inner.pos().last_seq, "subject index: ready");
    Ok(())
}

async fn apply_batch(
    inner: &Inner,
    names: &mut HashMap<String, i64>,
    b: Batch,
) -> Result<(), IndexError> {
    let pos = inner.pos();
    if b.end.last_seq <= pos.last_seq {
        return Ok(());
    }
    let continues = b.first_seq == pos.last_seq + 1
        && (b.first_prev == pos.last_hash || (pos.last_seq == 0 && b.first_prev == GENESIS_HASH));
    if !continues {
        return catch_up(inner, names).await;
    }
    let end = Position {
        first_hash: if pos.last_seq == 0 {
            b.end.first_hash.clone()
        } else {
            pos.first_hash.clone()
        },
        ..b.end
    };
    let db = inner.db.load_full();
    let Some(db) = db.as_ref() else {
        return Err(IndexError::NotReady("starting"));
    };
    if let Err(e) = db.apply(names, &b.rows, &end).await {
        names.clear();
        return Err(e.into());
    }
    inner.set_pos(end);
    Ok(())
}

/// Reads the log after the index's position (checking that the record at
/// the position is the one the index remembers) and indexes it.
async fn catch_up(inner: &Inner, names: &mut HashMap<String, i64>) -> Result<(), IndexError> {
    let db = inner.db.load_full();
    let Some(db) = db.as_ref() else {
        return Err(IndexError::NotReady("starting"));
    };
    let mut pos = inner.pos();
    let mut check_anchor = pos.last_seq > 0;
    loop {
        let dir = inner.audit_dir.clone();
        let from = pos.last_seq.saturating_sub(u64::from(check_anchor));
        let chunk = tokio::task::spawn_blocking(move || read_chunk(&dir, from, 20_000))
            .await
            .map_err(|_| IndexError::NotReady("unavailable"))??;
        let mut records = chunk.into_iter().peekable();
        if check_anchor {
            match records.next() {
                Some(r) if r.seq == pos.last_seq && r.hash == pos.last_hash => {}
                _ => {
                    return Err(IndexError::Inconsistent(format!(
                        "the log has no record {} with the index's hash",
                        pos.last_seq
                    )));
                }
            }
            check_anchor = false;
        }
        if records.peek().is_none() {
            return Ok(());
        }
        let mut rows = Vec::new();
        for r in records {
            let expected_prev = if pos.last_seq == 0 {
                GENESIS_HASH
            } else {
                pos.last_hash.as_str()
            };
            if r.seq != pos.last_seq + 1 || r.prev != expected_prev {
                return Err(IndexError::Inconsistent(format!(
                    "the audit log's chain is broken at seq {}; run `onewindow audit verify`",
                    r.seq
                )));
            }
            if r.seq == 1 {
                pos.first_hash.clone_from(&r.hash);
            }
            pos.last_seq = r.seq;
            pos.last_hash.clone_from(&r.hash);
            rows.extend(row_of(&r));
        }
        if let Err(e) = db.apply(names, &rows, &pos).await {
            names.clear();
            return Err(e.into());
        }
        inner.set_pos(pos.clone());
    }
}

fn read_chunk(dir: &Path, after: u64, max: usize) -> Result<Vec<AuditRecord>, AuditError> {
    let cursor = after.to_string();
    QueryIter::new(dir, QueryFilter::default(), Some(&cursor))?
        .take(max)
        .collect()
}

/// Builds a fresh index beside the old one from the whole log, then swaps it in.
async fn rebuild(inner: &Inner, names: &mut HashMap<String, i64>) {
    inner.set_status(IndexStatus::Rebuilding);
    names.clear();
    match build_fresh(inner, names).await {
        Ok(()) => {
            inner.set_status(IndexStatus::Ready);
            tracing::info!(
                seq = inner.pos().last_seq,
                "subject index: rebuilt from the audit log"
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "subject index: cannot be rebuilt; the transparency view answers 503");
            inner.set_status(IndexStatus::Failed(e.to_string()));
        }
    }
}

async fn build_fresh(inner: &Inner, names: &mut HashMap<String, i64>) -> Result<(), IndexError> {
    let tmp = inner.path.with_extension("sqlite.rebuild");
    remove_db_files(&tmp);
    let fresh = IndexDb::open(&tmp).await?;
    if let Some(old) = inner.db.swap(Arc::new(Some(fresh))).as_ref() {
        old.close().await;
    }
    inner.set_pos(Position::default());
    catch_up(inner, names).await?;
    // Record the position even for an empty log, so the file says what it covers.
    if let Some(db) = inner.db.load_full().as_ref() {
        db.apply(names, &[], &inner.pos()).await?;
    }
    // Swap the finished file in under the real name and reopen it there.
    if let Some(db) = inner.db.swap(Arc::new(None)).as_ref() {
        db.close().await;
    }
    remove_db_files(&inner.path);
    std::fs::rename(&tmp, &inner.path).map_err(|e| {
        IndexError::Inconsistent(format!("cannot replace {}: {e}", inner.path.display()))
    })?;
    let db = IndexDb::open(&inner.path).await?;
    inner.set_file_id();
    inner.db.store(Arc::new(Some(db)));
    Ok(())
}

fn remove_db_files(path: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// `onewindow audit reindex`: rebuilds the index file from the log, offline.
/// Returns the position it covers.
pub async fn reindex(data_dir: &Path, audit_dir: &Path) -> Result<Position, IndexError> {
    let (tx, _rx) = mpsc::channel(1);
    let inner = Inner::new(data_dir.join(INDEX_FILE), audit_dir.to_path_buf(), tx);
    let mut names = HashMap::new();
    build_fresh(&inner, &mut names).await?;
    if let Some(db) = inner.db.load_full().as_ref() {
        db.close().await;
    }
    Ok(inner.pos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first_seq: u64, first_prev: &str, last_hash: &str, first_hash: &str) -> Batch {
        Batch {
            first_seq,
            first_prev: first_prev.into(),
            rows: Vec::new(),
            end: Position {
                last_seq: first_seq + 1,
                last_hash: last_hash.into(),
                first_hash: first_hash.into(),
            },
        }
    }

    #[test]
    fn queued_batches_that_chain_merge_into_one_keeping_the_first_hash() {
        let mut a = batch(1, GENESIS_HASH, "h2", "h1");
        assert!(a.absorb(batch(3, "h2", "h4", "")).is_ok());
        assert_eq!(a.first_seq, 1);
        assert_eq!(
            a.end,
            Position {
                last_seq: 4,
                last_hash: "h4".into(),
                first_hash: "h1".into()
            }
        );
    }

    #[test]
    fn a_batch_after_a_gap_or_on_another_chain_is_given_back() {
        let mut a = batch(5, "h4", "h6", "");
        let gap = a.absorb(batch(8, "h7", "h9", "")).unwrap_err();
        assert_eq!(gap.first_seq, 8);
        let fork = a.absorb(batch(7, "other", "h8", "")).unwrap_err();
        assert_eq!(fork.first_prev, "other");
        assert_eq!(a.end.last_seq, 6);
    }
}
