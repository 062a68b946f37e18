//! A scenario's guide (办事指南): what the window clerk and the applicant are
//! told about it, in Chinese and English. It lives in the scenario's TOML
//! file next to the parts it describes:
//!
//! ```toml
//! supply_later_days = 30
//! [guide]
//! title = { zh = "开办餐饮店", en = "Open a restaurant" }
//! summary = { zh = "...", en = "..." }
//! time_limit_days = 5
//! legal_basis = [{ zh = "《食品安全法》", en = "Food Safety Law" }]
//! [[parts]]
//! dataset = "fire-safety-inspection"
//! required = false
//! bring = { zh = "消防安全检查合格证明原件", en = "The original fire-safety inspection certificate" }
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::config::toolkit::localized;
use crate::config::{ConfigError, ConfigErrors};
use crate::lang::{Localized, RawLocalized};

/// Raw `[guide]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuide {
    title: Option<RawLocalized>,
    summary: Option<RawLocalized>,
    time_limit_days: Option<u32>,
    #[serde(default)]
    legal_basis: Vec<RawLocalized>,
}

/// The validated guide of a scenario.
#[derive(Debug, Clone)]
pub struct Guide {
    /// Title, e.g. 开办餐饮店 / Open a restaurant.
    pub title: Localized,
    /// One or two sentences on what the scenario is for.
    pub summary: Localized,
    /// Promised time limit for the whole matter, in working days (承诺时限).
    pub time_limit_days: u32,
    /// Laws and rules the scenario rests on, in order.
    pub legal_basis: Vec<Localized>,
}

/// Longest promised time limit accepted, in working days.
const MAX_TIME_LIMIT_DAYS: u32 = 365;

impl Guide {
    /// Validates `[guide]` of `file`; every problem names its field.
    pub(super) fn from_raw(
        raw: Option<RawGuide>,
        file: &Path,
        errors: &mut ConfigErrors,
    ) -> Option<Guide> {
        let Some(raw) = raw else {
            errors.push(ConfigError::new(
                file,
                "guide",
                "the scenario has no guide",
                "add a [guide] table with title, summary, time_limit_days and legal_basis",
            ));
            return None;
        };
        let title = localized(raw.title, file, "guide.title", "guide title", errors);
        let summary = localized(raw.summary, file, "guide.summary", "guide summary", errors);
        let time_limit_days = match raw.time_limit_days {
            Some(d) if (1..=MAX_TIME_LIMIT_DAYS).contains(&d) => Some(d),
            Some(_) => {
                errors.push(ConfigError::new(
                    file,
                    "guide.time_limit_days",
                    format!("must be between 1 and {MAX_TIME_LIMIT_DAYS} working days"),
                    "write the promised time limit, e.g. time_limit_days = 5",
                ));
                None
            }
            None => {
                errors.push(ConfigError::new(
                    file,
                    "guide.time_limit_days",
                    "the guide has no promised time limit",
                    "add time_limit_days = N (working days)",
                ));
                None
            }
        };
        if raw.legal_basis.is_empty() {
            errors.push(ConfigError::new(
                file,
                "guide.legal_basis",
                "the guide names no legal basis",
                "add legal_basis = [{ zh = \"...\", en = \"...\" }]",
            ));
        }
        let legal_basis: Vec<_> = raw
            .legal_basis
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                localized(
                    Some(l),
                    file,
                    &format!("guide.legal_basis[{i}]"),
                    "legal basis",
                    errors,
                )
            })
            .collect();
        Some(Guide {
            title: title?,
            summary: summary?,
            time_limit_days: time_limit_days?,
            legal_basis: legal_basis.into_iter().collect::<Option<Vec<_>>>()?,
        })
    }
}
