//! The transparency view on the data plane: `GET
//! /v1/subjects/{kind}/{subject}/accesses` answered from the subject index
//! ([`crate::transparency`]) for a client granted `subject_access`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::audit::SubjectKey;
use crate::auth::{AccessError, ClientGrants};
use crate::error::GatewayError;
use crate::state::State;
use crate::transparency::{
    AccessQuery, AccessView, AccessesReply, DEFAULT_LIMIT, MAX_LIMIT, Transparency,
    TransparencyError,
};

/// Query parameters of the view.
#[derive(Debug, Default, PartialEq, Eq)]
struct Params {
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn parse_params(query: Option<&str>) -> Result<Params, TransparencyError> {
    let mut p = Params::default();
    let bad = |m: String| TransparencyError::BadParameter(m);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|s| !s.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .map_err(|_| bad(format!("`{k}` is not UTF-8")))?
            .into_owned();
        let time = |v: &str| {
            crate::audit::parse_rfc3339_micros(v).ok_or_else(|| {
                bad(format!(
                    "`{k}` must be an RFC 3339 time such as 2026-01-31T08:00:00Z"
                ))
            })
        };
        match k {
            "since" => p.since = Some(time(&v)?),
            "until" => p.until = Some(time(&v)?),
            "limit" => {
                let n: u32 = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(format!("`limit` must be between 1 and {MAX_LIMIT}")))?;
                p.limit = Some(n);
            }
            "cursor" => p.cursor = Some(v),
            other => {
                return Err(bad(format!(
                    "unknown parameter `{}`; use since, until, limit, cursor",
                    other.chars().take(32).collect::<String>()
                )));
            }
        }
    }
    Ok(p)
}

/// Answers the view for `kind`/`subject` to a client allowed to ask.
#[allow(clippy::too_many_arguments)]
pub(super) async fn accesses(
    view: &Transparency,
    state: &State,
    subject_key: &SubjectKey,
    grants: &ClientGrants,
    kind: &str,
    subject: &str,
    query: Option<&str>,
    now: SystemTime,
) -> Result<AccessesReply, GatewayError> {
    if !grants.subject_access() {
        return Err(AccessError::SubjectAccessNotGranted.into());
    }
    // The kind's datasets: those taking it as subject, directly or as a
    // scenario part.
    let mut known = BTreeSet::new();
    let mut datasets = BTreeSet::new();
    let mut valid = false;
    for d in state.datasets.iter() {
        known.insert(d.subject_kind.clone());
        if d.subject_kind == kind {
            datasets.insert(d.name.clone());
            valid |= d.subject_is_valid(subject);
        }
    }
    for name in state.scenarios.names() {
        let Some(s) = state.scenarios.get(name) else {
            continue;
        };
        for part in &s.parts {
            known.insert(part.subject_kind.clone());
            if part.subject_kind == kind
                && let Some(d) = state.datasets.get(&part.dataset)
            {
                datasets.insert(d.name.clone());
                valid |= d.subject_is_valid(subject);
            }
        }
    }
    if datasets.is_empty() {
        return Err(TransparencyError::UnknownKind {
            kind: kind.chars().take(64).collect(),
            known: known.into_iter().collect::<Vec<_>>().join(", "),
        }
        .into());
    }
    if !valid {
        return Err(TransparencyError::MalformedSubject(kind.to_string()).into());
    }
    let params = parse_params(query)?;
    let mut subject_ref = [0u8; 32];
    hex::decode_to_slice(subject_key.subject_ref(subject).as_str(), &mut subject_ref)
        .map_err(|_| GatewayError::Internal("subject reference is not hex".into()))?;
    let before_seq = match &params.cursor {
        None => None,
        Some(c) => Some(
            view.cursor_key
                .decode(&subject_ref, c)
                .ok_or(TransparencyError::BadCursor)?,
        ),
    };
    let now_us = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let withheld = state
        .grants
        .disclose_after()
        .map(|(purpose, days)| {
            let period = Duration::from_secs(u64::from(days) * 86_400);
            let cutoff = now_us - i64::try_from(period.as_micros()).unwrap_or(i64::MAX);
            (purpose.to_string(), cutoff)
        })
        .collect();
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let q = AccessQuery {
        subject: subject_ref,
        before_seq,
        since_us: params.since,
        until_us: params.until,
        datasets: datasets.into_iter().collect(),
        withheld,
        limit: limit + 1,
    };
    let mut rows = view
        .index
        .accesses(&q)
        .await
        .map_err(TransparencyError::from)?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| {
            rows.last()
                .map(|r| view.cursor_key.encode(&subject_ref, r.seq))
        })
        .flatten();
    let accesses = rows
        .into_iter()
        .map(|r| {
            let organisation = r
                .client
                .as_deref()
                .map(|c| {
                    let d = state.grants.client(c).description();
                    if d.is_empty() {
                        c.to_string()
                    } else {
                        d.to_string()
                    }
                })
                .unwrap_or_default();
            AccessView {
                time: crate::audit::time::format_rfc3339_micros(r.time_us),
                organisation,
                department_title: r
                    .department
                    .as_deref()
                    .and_then(|d| state.settings.departments.get(d))
                    .map(|d| d.title.clone()),
                client: r.client,
                department: r.department,
                dataset: r.dataset,
                scenario: r.scenario,
                purpose: r.purpose,
                case_id: r.case_id,
                decision: r.decision,
            }
        })
        .collect();
    Ok(AccessesReply {
        subject_kind: kind.to_string(),
        accesses,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked() {
        let p = parse_params(Some("since=2026-01-01T00:00:00Z&limit=5&cursor=abc")).unwrap();
        assert_eq!(p.limit, Some(5));
        assert_eq!(p.cursor.as_deref(), Some("abc"));
        assert!(p.since.is_some());
        assert!(parse_params(Some("limit=0")).is_err());
        assert!(parse_params(Some("limit=100000")).is_err());
        assert!(parse_params(Some("since=yesterday")).is_err());
        assert!(parse_params(Some("subject=x")).is_err());
        assert_eq!(parse_params(None).unwrap(), Params::default());
    }
}
