//! Conditional sharing: the approval a grant for a conditionally shared
//! dataset rests on (how a dataset may be shared is the dataset's
//! [`crate::config::Sharing`]).

use std::collections::BTreeSet;

use super::AccessError;
use crate::clock::Date;

/// The approved application a conditional grant rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The approval's reference (document number); written into every audit
    /// record it covers.
    pub reference: String,
    /// Last day the approval is valid (inclusive, China Standard Time).
    pub expires: Date,
    /// Purposes it covers; `None`: every purpose granted to the client.
    pub purposes: Option<BTreeSet<String>>,
}

impl Approval {
    /// `Ok` when the approval is live on `today` and covers `purpose`.
    pub fn check(&self, dataset: &str, purpose: &str, today: Date) -> Result<(), AccessError> {
        if today > self.expires {
            return Err(AccessError::ApprovalLapsed {
                dataset: dataset.to_string(),
                approval: self.reference.clone(),
                expired: self.expires.to_string(),
            });
        }
        if let Some(p) = &self.purposes
            && !p.contains(purpose)
        {
            return Err(AccessError::ApprovalPurpose {
                dataset: dataset.to_string(),
                approval: self.reference.clone(),
                purpose: purpose.to_string(),
            });
        }
        Ok(())
    }

    /// Days left on `today` (0 on the last valid day, negative once lapsed).
    pub fn days_to_expiry(&self, today: Date) -> i64 {
        today.days_until(self.expires)
    }
}

/// How many days before its expiry `onewindow check` warns about an approval.
pub const WARN_DAYS: i64 = 30;

/// `onewindow check`'s warnings: approvals lapsed, or lapsing within
/// [`WARN_DAYS`] of `today`, one line each.
pub fn lapse_warnings(grants: &super::Grants, today: Date) -> Vec<String> {
    grants
        .approvals()
        .into_iter()
        .filter_map(|(client, dataset, a)| {
            let days = a.days_to_expiry(today);
            if days < 0 {
                Some(format!(
                    "warning: clients.{client}.datasets.{dataset}: approval `{}` lapsed on {} ({} days ago); reads are refused until a new approval is entered",
                    a.reference, a.expires, -days
                ))
            } else if days <= WARN_DAYS {
                Some(format!(
                    "warning: clients.{client}.datasets.{dataset}: approval `{}` lapses on {} (in {days} days); renew it and update `approval` and `expires`",
                    a.reference, a.expires
                ))
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(purposes: Option<&[&str]>) -> Approval {
        Approval {
            reference: "津数审〔2026〕7号".into(),
            expires: Date::parse("2026-12-31").unwrap(),
            purposes: purposes.map(|p| p.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn valid_through_the_last_day_then_lapsed() {
        let a = approval(None);
        let last = Date::parse("2026-12-31").unwrap();
        a.check("household-registration", "service-handling", last)
            .unwrap();
        assert_eq!(a.days_to_expiry(last), 0);
        let after = Date::parse("2027-01-01").unwrap();
        let e = a
            .check("household-registration", "service-handling", after)
            .unwrap_err();
        assert!(e.to_string().contains("lapsed on 2026-12-31"), "{e}");
        assert_eq!(a.days_to_expiry(after), -1);
    }

    #[test]
    fn another_purpose_is_refused() {
        let a = approval(Some(&["service-handling"]));
        let today = Date::parse("2026-12-01").unwrap();
        a.check("household-registration", "service-handling", today)
            .unwrap();
        let e = a
            .check("household-registration", "investigation", today)
            .unwrap_err();
        assert!(matches!(e, AccessError::ApprovalPurpose { .. }));
    }
}
