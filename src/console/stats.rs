//! `GET /admin/audit/stats`: what the console's chart shows. Takes the same
//! filters as `GET /admin/audit` (without `limit` and `cursor`) and counts
//! every matching record in the range, not just one page: allowed, denied and
//! failed decisions per time bucket, and the clients and datasets seen most.
//!
//! Checkpoints and the audit writer's own notes (`audit.*`) are not requests
//! and are not counted. One pass over the log on a blocking thread; memory is
//! bounded by the number of distinct minutes, clients and datasets, not by
//! the number of records.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::audit::time::format_rfc3339_micros;
use crate::audit::{AuditError, AuditLog, Decision, Filter, QueryFilter, QueryIter};

/// Most buckets in a summary; the bucket width is the smallest of
/// [`WIDTHS`] that keeps the range within this many.
pub const MAX_BUCKETS: i64 = 48;

/// Bucket widths offered, in seconds (1 min ... 30 days).
pub const WIDTHS: &[i64] = &[
    60,
    5 * 60,
    15 * 60,
    30 * 60,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86_400,
    7 * 86_400,
    30 * 86_400,
];

/// Entries in each top list.
pub const TOP: usize = 8;

const MINUTE_US: i64 = 60_000_000;

/// Allowed, denied and failed counts in one bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Start of the bucket, RFC 3339 UTC.
    pub start: String,
    /// Decisions `allow`.
    pub allow: u64,
    /// Decisions `deny`.
    pub deny: u64,
    /// Decisions `error`.
    pub error: u64,
}

/// One entry of a top list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Top {
    /// Client id or dataset name.
    pub name: String,
    /// Matching records naming it.
    pub count: u64,
}

/// The summary answered to the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Records counted.
    pub total: u64,
    /// Start of the range (the `since` filter, else the first record), RFC 3339.
    pub from: Option<String>,
    /// End of the range (the `until` filter, else the last record), RFC 3339.
    pub to: Option<String>,
    /// Width of each bucket in seconds.
    pub bucket_secs: i64,
    /// Consecutive buckets covering the range (empty when nothing matched).
    pub buckets: Vec<Bucket>,
    /// Clients with the most records, most first.
    pub top_clients: Vec<Top>,
    /// Datasets with the most records, most first.
    pub top_datasets: Vec<Top>,
}

/// Counts the records of `dir` matching `filter` (whose `since`/`until`, in
/// microseconds, also bound the chart's range when given).
pub fn summarise(
    dir: &Path,
    filter: QueryFilter,
    since: Option<i64>,
    until: Option<i64>,
) -> Result<Summary, AuditError> {
    let mut minutes: BTreeMap<i64, [u64; 3]> = BTreeMap::new();
    let mut clients: HashMap<String, u64> = HashMap::new();
    let mut datasets: HashMap<String, u64> = HashMap::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut total = 0u64;
    for r in QueryIter::new(dir, filter, None)? {
        let r = r?.event;
        let action = r.action.as_str();
        if action == "checkpoint" || action.starts_with("audit.") {
            continue;
        }
        let Some(t) = crate::audit::parse_rfc3339_micros(&r.time) else {
            continue;
        };
        total += 1;
        first = first.min(t);
        last = last.max(t);
        let slot = match r.decision {
            Decision::Allow => 0,
            Decision::Deny => 1,
            Decision::Error => 2,
        };
        minutes.entry(t.div_euclid(MINUTE_US)).or_default()[slot] += 1;
        if let Some(c) = r.client {
            *clients.entry(c).or_default() += 1;
        }
        if let Some(d) = r.dataset {
            *datasets.entry(d).or_default() += 1;
        }
    }
    if total == 0 {
        return Ok(Summary {
            total,
            from: since.map(format_rfc3339_micros),
            to: until.map(format_rfc3339_micros),
            bucket_secs: WIDTHS[0],
            buckets: Vec::new(),
            top_clients: Vec::new(),
            top_datasets: Vec::new(),
        });
    }
    let from = since.unwrap_or(first).min(first);
    let to = until.map_or(last, |u| u.max(last));
    let span_secs = (to - from).div_euclid(1_000_000) + 1;
    let width = WIDTHS
        .iter()
        .copied()
        .find(|w| span_secs.div_euclid(*w) < MAX_BUCKETS)
        .unwrap_or(WIDTHS[WIDTHS.len() - 1]);
    let width_us = width * 1_000_000;
    let start = from.div_euclid(width_us);
    let end = to.div_euclid(width_us);
    let mut buckets: Vec<Bucket> = (start..=end)
        .map(|b| Bucket {
            start: format_rfc3339_micros(b * width_us),
            ..Bucket::default()
        })
        .collect();
    for (minute, [a, d, e]) in minutes {
        let i = (minute * MINUTE_US).div_euclid(width_us) - start;
        if let Some(b) = usize::try_from(i).ok().and_then(|i| buckets.get_mut(i)) {
            b.allow += a;
            b.deny += d;
            b.error += e;
        }
    }
    Ok(Summary {
        total,
        from: Some(format_rfc3339_micros(from)),
        to: Some(format_rfc3339_micros(to)),
        bucket_secs: width,
        buckets,
        top_clients: top(clients),
        top_datasets: top(datasets),
    })
}

fn top(counts: HashMap<String, u64>) -> Vec<Top> {
    let mut v: Vec<Top> = counts
        .into_iter()
        .map(|(name, count)| Top { name, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    v.truncate(TOP);
    v
}

/// The summary for `filter` (as parsed from the query string by the admin
/// plane), computed on a blocking thread.
pub async fn run(audit: &AuditLog, filter: Filter) -> Result<Summary, AuditError> {
    let bound = |v: &Option<String>| v.as_deref().and_then(crate::audit::parse_rfc3339_micros);
    let (since, until) = (bound(&filter.since), bound(&filter.until));
    let compiled = filter.compile(audit.subject_key())?;
    let dir = audit.dir().to_path_buf();
    tokio::task::spawn_blocking(move || summarise(&dir, compiled, since, until))
        .await
        .map_err(|_| AuditError::Unavailable)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Action, AuditEvent, SubjectKey};

    /// Writes records with the given (time, decision, client, dataset) through
    /// the real writer and returns the directory.
    async fn log_with(events: &[(&str, Decision, &str, Option<&str>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let settings = crate::audit::AuditSettings {
            fsync: crate::audit::FsyncPolicy::Never,
            ..Default::default()
        };
        let (log, handle) = AuditLog::open(settings, dir.path(), &certs).await.unwrap();
        for (time, decision, client, dataset) in events {
            let mut ev = AuditEvent::new(Action::DATASET_READ, *decision);
            ev.time = time.to_string();
            ev.client = Some(client.to_string());
            ev.dataset = dataset.map(str::to_string);
            log.append(ev).await.unwrap();
        }
        log.checkpoint_now().await.unwrap();
        handle.shutdown().await.unwrap();
        dir
    }

    fn all() -> QueryFilter {
        Filter::default()
            .compile(&SubjectKey::from_bytes([7; 32]))
            .unwrap()
    }

    #[tokio::test]
    async fn counts_decisions_per_bucket_and_ranks_tops() {
        let dir = log_with(&[
            (
                "2026-11-30T09:00:10.000000Z",
                Decision::Allow,
                "a",
                Some("x"),
            ),
            (
                "2026-11-30T09:00:50.000000Z",
                Decision::Deny,
                "b",
                Some("x"),
            ),
            (
                "2026-11-30T09:20:00.000000Z",
                Decision::Allow,
                "a",
                Some("y"),
            ),
            ("2026-11-30T09:59:59.000000Z", Decision::Error, "a", None),
        ])
        .await;
        let s = summarise(&dir.path().join("audit"), all(), None, None).unwrap();
        assert_eq!(s.total, 4, "the checkpoint is not counted");
        assert_eq!(s.bucket_secs, 5 * 60);
        assert_eq!(s.buckets.len(), 12);
        assert_eq!(s.buckets[0].start, "2026-11-30T09:00:00.000000Z");
        assert_eq!((s.buckets[0].allow, s.buckets[0].deny), (1, 1));
        assert_eq!(s.buckets[4].allow, 1);
        assert_eq!(s.buckets[11].error, 1);
        let sum: u64 = s.buckets.iter().map(|b| b.allow + b.deny + b.error).sum();
        assert_eq!(sum, 4);
        assert_eq!(
            s.top_clients[0],
            Top {
                name: "a".into(),
                count: 3
            }
        );
        assert_eq!(
            s.top_datasets[0],
            Top {
                name: "x".into(),
                count: 2
            }
        );
    }

    #[tokio::test]
    async fn range_follows_the_filter_and_width_grows_with_it() {
        let dir = log_with(&[("2026-11-30T09:00:10.000000Z", Decision::Allow, "a", None)]).await;
        let since = crate::audit::parse_rfc3339_micros("2026-11-01T00:00:00Z");
        let until = crate::audit::parse_rfc3339_micros("2026-12-01T00:00:00Z");
        let s = summarise(&dir.path().join("audit"), all(), since, until).unwrap();
        assert_eq!(s.bucket_secs, 86_400);
        assert_eq!(s.buckets.len(), 31);
        assert!(s.buckets.len() as i64 <= MAX_BUCKETS);
        assert_eq!(s.buckets[29].allow, 1);
        assert_eq!(s.from.as_deref(), Some("2026-11-01T00:00:00.000000Z"));
    }

    #[tokio::test]
    async fn nothing_matching_is_an_empty_summary() {
        let dir = log_with(&[]).await;
        let s = summarise(&dir.path().join("audit"), all(), None, None).unwrap();
        assert_eq!(s.total, 0);
        assert!(s.buckets.is_empty() && s.top_clients.is_empty());
    }
}
