//! Calendar dates (approvals' `expires = 2027-06-30`) and the civil
//! calendar arithmetic RFC 3339 timestamps use.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Approvals are dated in China Standard Time (UTC+08:00): an approval that
/// `expires = 2027-06-30` is valid until the end of that day in Beijing.
pub const APPROVAL_UTC_OFFSET_SECS: i64 = 8 * 3600;

/// A calendar date, as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(i64);

impl Date {
    /// Parses `YYYY-MM-DD` (a real calendar date).
    pub fn parse(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = s.get(r)?;
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        Self::from_ymd(y, m, d)
    }

    /// The date of year `y`, month `m`, day `d`, if it exists.
    pub fn from_ymd(y: i64, m: i64, d: i64) -> Option<Date> {
        if !(1..=12).contains(&m) || d < 1 {
            return None;
        }
        let date = Date(days_from_civil(y, m, d));
        // Day 31 of a 30-day month rolls over: refuse it.
        (date.ymd() == (y, m, d)).then_some(date)
    }

    /// The date at `t` in China Standard Time (see [`APPROVAL_UTC_OFFSET_SECS`]).
    pub fn at(t: SystemTime) -> Date {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX / 2),
        };
        Date((secs + APPROVAL_UTC_OFFSET_SECS).div_euclid(86_400))
    }

    /// Today in China Standard Time.
    pub fn today() -> Date {
        Self::at(SystemTime::now())
    }

    /// Days from `self` to `later` (negative when `later` is earlier).
    pub fn days_until(self, later: Date) -> i64 {
        later.0 - self.0
    }

    fn ymd(self) -> (i64, i64, i64) {
        civil_from_days(self.0)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

// Howard Hinnant's civil calendar algorithms (public domain).

/// Days since 1970-01-01 of year `y`, month `m`, day `d` (proleptic
/// Gregorian).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year, month, day of `z` days since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_and_prints_real_dates_only() {
        let d = Date::parse("2027-06-30").unwrap();
        assert_eq!(d.to_string(), "2027-06-30");
        assert!(Date::parse("2027-06-31").is_none());
        assert!(Date::parse("2027-13-01").is_none());
        assert!(Date::parse("2027-6-30").is_none());
        assert!(Date::parse("+027-06-30").is_none());
        assert_eq!(Date::parse("2028-02-29").unwrap().to_string(), "2028-02-29");
        assert!(Date::parse("2027-02-29").is_none());
    }

    #[test]
    fn today_is_taken_in_beijing_time() {
        // 2026-11-30T16:00:00Z is already 2026-12-01 in Beijing.
        let t = UNIX_EPOCH + Duration::from_secs(1_796_054_400);
        assert_eq!(Date::at(t).to_string(), "2026-12-01");
        let before = t - Duration::from_secs(1);
        assert_eq!(Date::at(before).to_string(), "2026-11-30");
        let a = Date::parse("2026-11-30").unwrap();
        assert_eq!(a.days_until(Date::parse("2026-12-30").unwrap()), 30);
    }
}
