//! Filtered, paged reading of the log for auditors (`GET /admin/audit`,
//! `onewindow audit query`).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::error::AuditError;
use super::keys::SubjectKey;
use super::record::{AuditRecord, Decision, SubjectRef};
use super::segment::list_segments;
use super::time::parse_rfc3339_micros;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size; larger requests are clamped.
pub const MAX_LIMIT: usize = 1000;

/// Query parameters as given by an auditor (all optional; all must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `client`.
    pub client: Option<String>,
    /// The plain subject id; turned into its `subject_ref` by [`Filter::compile`].
    pub subject: Option<String>,
    /// `dataset`.
    pub dataset: Option<String>,
    /// `scenario`.
    pub scenario: Option<String>,
    /// `department`.
    pub department: Option<String>,
    /// `case_id` (query parameter `case`).
    pub case_id: Option<String>,
    /// `allow`, `deny` or `error`.
    pub decision: Option<String>,
    /// `action`, e.g. `dataset.read`.
    pub action: Option<String>,
    /// Records at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Records before this RFC 3339 time.
    pub until: Option<String>,
}

/// A validated [`Filter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryFilter {
    client: Option<String>,
    subject_ref: Option<SubjectRef>,
    dataset: Option<String>,
    scenario: Option<String>,
    department: Option<String>,
    case_id: Option<String>,
    decision: Option<Decision>,
    action: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
}

impl Filter {
    /// Validates the filter and computes the subject reference with `key`.
    pub fn compile(self, key: &SubjectKey) -> Result<QueryFilter, AuditError> {
        let time = |name: &str, v: Option<String>| -> Result<Option<i64>, AuditError> {
            v.map(|t| {
                parse_rfc3339_micros(&t).ok_or_else(|| {
                    AuditError::BadQuery(format!(
                        "`{name}` must be an RFC 3339 time such as 2026-01-31T08:00:00Z"
                    ))
                })
            })
            .transpose()
        };
        let decision = match self.decision.as_deref() {
            None => None,
            Some("allow") => Some(Decision::Allow),
            Some("deny") => Some(Decision::Deny),
            Some("error") => Some(Decision::Error),
            Some(_) => {
                return Err(AuditError::BadQuery(
                    "`decision` must be allow, deny or error".into(),
                ));
            }
        };
        Ok(QueryFilter {
            client: self.client,
            subject_ref: self.subject.map(|s| key.subject_ref(&s)),
            dataset: self.dataset,
            scenario: self.scenario,
            department: self.department,
            case_id: self.case_id,
            decision,
            action: self.action,
            since: time("since", self.since)?,
            until: time("until", self.until)?,
        })
    }
}

fn eq(want: &Option<String>, have: &Option<String>) -> bool {
    want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
}

impl QueryFilter {
    /// Whether `r` passes every filter.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        let ev = &r.event;
        if !(eq(&self.client, &ev.client)
            && eq(&self.dataset, &ev.dataset)
            && eq(&self.scenario, &ev.scenario)
            && eq(&self.department, &ev.department)
            && eq(&self.case_id, &ev.case_id))
        {
            return false;
        }
        if self
            .subject_ref
            .as_ref()
            .is_some_and(|s| ev.subject_ref.as_ref() != Some(s))
        {
            return false;
        }
        if self.decision.is_some_and(|d| d != ev.decision) {
            return false;
        }
        if self
            .action
            .as_deref()
            .is_some_and(|a| a != ev.action.as_str())
        {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = parse_rfc3339_micros(&ev.time) else {
                return false;
            };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t >= u) {
                return false;
            }
        }
        true
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// Matching records in log order.
    pub records: Vec<AuditRecord>,
    /// Opaque cursor for the next page; `None` when this page is the last.
    pub next_cursor: Option<String>,
}

/// Streams matching records from `dir` in log order, after an optional
/// cursor; what `onewindow audit query` prints as JSON Lines. An incomplete
/// last line (a record being written) ends the stream.
pub struct QueryIter {
    files: Vec<PathBuf>,
    idx: usize,
    reader: Option<BufReader<File>>,
    line: u64,
    after: u64,
    filter: QueryFilter,
    buf: Vec<u8>,
    done: bool,
}

fn parse_cursor(cursor: Option<&str>) -> Result<u64, AuditError> {
    match cursor {
        None | Some("") => Ok(0),
        Some(c) => c
            .parse()
            .map_err(|_| AuditError::BadQuery("`cursor` is not one this server issued".into())),
    }
}

fn first_seq(path: &Path) -> Option<u64> {
    let mut line = Vec::new();
    super::segment::read_line_bounded(&mut BufReader::new(File::open(path).ok()?), &mut line)
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(line.strip_suffix(b"\n")?)
        .ok()
        .map(|s| s.seq)
}

impl QueryIter {
    /// Starts after `cursor` (as returned in [`QueryPage::next_cursor`]).
    pub fn new(dir: &Path, filter: QueryFilter, cursor: Option<&str>) -> Result<Self, AuditError> {
        let after = parse_cursor(cursor)?;
        let mut files: Vec<PathBuf> = list_segments(dir)?.into_iter().map(|s| s.path).collect();
        // Skip whole files that end before the cursor.
        let mut start = 0;
        while start + 1 < files.len()
            && first_seq(&files[start + 1]).is_some_and(|s| s <= after + 1)
        {
            start += 1;
        }
        files.drain(..start);
        Ok(Self {
            files,
            idx: 0,
            reader: None,
            line: 0,
            after,
            filter,
            buf: Vec::with_capacity(1024),
            done: false,
        })
    }
}

impl Iterator for QueryIter {
    type Item = Result<AuditRecord, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some(reader) = self.reader.as_mut() else {
                let path = self.files.get(self.idx)?;
                match File::open(path) {
                    Ok(f) => {
                        self.reader = Some(BufReader::with_capacity(1 << 18, f));
                        self.line = 0;
                        continue;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(AuditError::io(path, e)));
                    }
                }
            };
            self.buf.clear();
            let path = &self.files[self.idx];
            match super::segment::read_line_bounded(reader, &mut self.buf) {
                Ok(0) => {
                    self.reader = None;
                    self.idx += 1;
                }
                Ok(_) => {
                    self.line += 1;
                    let Some(line) = self.buf.strip_suffix(b"\n") else {
                        self.done = true;
                        if self.buf.len() as u64 >= super::segment::MAX_LINE_BYTES {
                            return Some(Err(AuditError::Corrupt {
                                file: path.clone(),
                                line: self.line,
                                problem:
                                    "a line longer than any record; run `onewindow audit verify`"
                                        .into(),
                            }));
                        }
                        // Being written right now: stop here.
                        return None;
                    };
                    let rec: AuditRecord = match serde_json::from_slice(line) {
                        Ok(r) => r,
                        Err(e) => {
                            self.done = true;
                            return Some(Err(AuditError::Corrupt {
                                file: path.clone(),
                                line: self.line,
                                problem: format!(
                                    "not an audit record ({e}); run `onewindow audit verify`"
                                ),
                            }));
                        }
                    };
                    if rec.seq > self.after && self.filter.matches(&rec) {
                        return Some(Ok(rec));
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(AuditError::io(path, e)));
                }
            }
        }
        None
    }
}

/// One page: at most `limit` (default 100, clamped to 1000) matching records
/// after `cursor`, and the cursor for the next page.
pub fn query(
    dir: &Path,
    filter: &QueryFilter,
    cursor: Option<&str>,
    limit: Option<usize>,
) -> Result<QueryPage, AuditError> {
    let limit = match limit {
        Some(0) => return Err(AuditError::BadQuery("`limit` must be at least 1".into())),
        Some(l) => l.min(MAX_LIMIT),
        None => DEFAULT_LIMIT,
    };
    let mut records = Vec::with_capacity(limit.min(128));
    let mut more = false;
    for r in QueryIter::new(dir, filter.clone(), cursor)? {
        let r = r?;
        if records.len() == limit {
            more = true;
            break;
        }
        records.push(r);
    }
    let next_cursor = if more {
        records.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    Ok(QueryPage {
        records,
        next_cursor,
    })
}
