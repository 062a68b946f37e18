//! Several nodes' logs read as one: records of each log in their own order,
//! interleaved by time (cluster mode keeps one chain per node).

use std::iter::Peekable;

use super::error::AuditError;
use super::record::AuditRecord;
use super::time::parse_rfc3339_micros;

/// Merges record streams, each already in time order, into one in time order
/// (ties keep the order of the streams as given). An error of any stream is
/// passed on when that stream is next looked at.
pub struct MergeByTime<I: Iterator<Item = Result<AuditRecord, AuditError>>> {
    inputs: Vec<Peekable<I>>,
}

impl<I: Iterator<Item = Result<AuditRecord, AuditError>>> MergeByTime<I> {
    /// Merges `inputs`.
    pub fn new(inputs: impl IntoIterator<Item = I>) -> Self {
        Self {
            inputs: inputs.into_iter().map(Iterator::peekable).collect(),
        }
    }
}

impl<I: Iterator<Item = Result<AuditRecord, AuditError>>> Iterator for MergeByTime<I> {
    type Item = Result<AuditRecord, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, i64)> = None;
        for (i, input) in self.inputs.iter_mut().enumerate() {
            let key = match input.peek() {
                None => continue,
                Some(Err(_)) => return input.next(),
                Some(Ok(r)) => parse_rfc3339_micros(&r.event.time).unwrap_or(i64::MAX),
            };
            if best.is_none_or(|(_, k)| key < k) {
                best = Some((i, key));
            }
        }
        let (i, _) = best?;
        self.inputs[i].next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Action, AuditEvent, Decision};

    fn rec(time: &str, node: &str) -> Result<AuditRecord, AuditError> {
        let mut ev = AuditEvent::new(Action::DATASET_READ, Decision::Allow);
        ev.time = time.into();
        ev.node = Some(node.into());
        Ok(AuditRecord::from_event(ev, 1, String::new()))
    }

    #[test]
    fn interleaves_by_time_across_precisions_and_drains_the_longest() {
        let a = vec![
            rec("2026-01-01T00:00:01Z", "a"),
            rec("2026-01-01T00:00:03.5Z", "a"),
        ];
        let b = vec![
            rec("2026-01-01T00:00:00.999999Z", "b"),
            rec("2026-01-01T00:00:02.000001Z", "b"),
            rec("2026-01-01T00:00:04Z", "b"),
            rec("2026-01-01T00:00:05Z", "b"),
        ];
        let got: Vec<String> = MergeByTime::new([a.into_iter(), b.into_iter()])
            .map(|r| {
                let r = r.unwrap();
                format!("{}@{}", r.event.node.unwrap(), r.event.time)
            })
            .collect();
        assert_eq!(
            got,
            [
                "b@2026-01-01T00:00:00.999999Z",
                "a@2026-01-01T00:00:01Z",
                "b@2026-01-01T00:00:02.000001Z",
                "a@2026-01-01T00:00:03.5Z",
                "b@2026-01-01T00:00:04Z",
                "b@2026-01-01T00:00:05Z",
            ]
        );
    }

    #[test]
    fn an_error_is_passed_on() {
        let a = vec![
            rec("2026-01-01T00:00:01Z", "a"),
            Err(AuditError::Unavailable),
        ];
        let b = vec![rec("2026-01-01T00:00:02Z", "b")];
        let got: Vec<_> = MergeByTime::new([a.into_iter(), b.into_iter()]).collect();
        assert!(got[0].is_ok());
        assert!(got[1].is_err(), "the broken log is reported, not skipped");
    }
}
