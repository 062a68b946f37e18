//! The config toolkit: small validators every config module shares, and the
//! one way of stating a default.
//!
//! **Defaults.** Each validated model type states its defaults once, in its
//! `Default` impl; raw serde types leave every key optional (`Option<T>`), and
//! `from_raw` starts from `Model::default()`. The validators below take that
//! default and quote it in the fix message, so the numbers an operator reads
//! are the numbers the gateway uses (never a second copy typed by hand).
//!
//! **Problems.** A [`Fields`] collects problems of one table (file + dotted
//! prefix); every problem names the file, the field and the fix. A bad value
//! is reported and replaced by the default, so one load reports every problem.

use std::fmt::Display;
use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use super::{ConfigError, ConfigErrors};
use crate::lang::{Localized, RawLocalized};

/// Names of departments, datasets, scenarios, purposes: 1 to 64 of
/// `[a-z0-9-]`, not starting with `-`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// The problems of one configuration table: its file and dotted prefix.
#[derive(Debug)]
pub struct Fields<'a> {
    file: &'a Path,
    prefix: String,
    errors: &'a mut ConfigErrors,
}

impl<'a> Fields<'a> {
    /// Problems of the table `prefix` (e.g. `departments.fire-rescue.protect`)
    /// of `file`, recorded into `errors`.
    pub fn new(file: &'a Path, prefix: impl Into<String>, errors: &'a mut ConfigErrors) -> Self {
        Self {
            file,
            prefix: prefix.into(),
            errors,
        }
    }

    /// The file.
    pub fn file(&self) -> &'a Path {
        self.file
    }

    /// The dotted path of `field`.
    pub fn path(&self, field: &str) -> String {
        if self.prefix.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.prefix)
        }
    }

    /// The errors collected so far (for helpers that take them directly).
    pub fn errors(&mut self) -> &mut ConfigErrors {
        self.errors
    }

    /// Records a problem with `field`.
    pub fn push(&mut self, field: &str, problem: impl Into<String>, fix: impl Into<String>) {
        let e = ConfigError::new(self.file, self.path(field), problem, fix);
        self.errors.push(e);
    }

    /// Records a problem when `ok` is false; returns `ok`.
    pub fn require(
        &mut self,
        ok: bool,
        field: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> bool {
        if !ok {
            self.push(field, problem, fix);
        }
        ok
    }

    /// A count that must not be 0; `zero_means` says what 0 would do.
    pub fn non_zero(
        &mut self,
        field: &str,
        raw: Option<u32>,
        default: NonZeroU32,
        zero_means: &str,
    ) -> NonZeroU32 {
        match raw.map(NonZeroU32::new) {
            None => default,
            Some(Some(n)) => n,
            Some(None) => {
                self.push(field, zero_means, e_g(default));
                default
            }
        }
    }

    /// A value that must lie in `range`.
    pub fn in_range<T: PartialOrd + Display + Copy>(
        &mut self,
        field: &str,
        raw: Option<T>,
        range: RangeInclusive<T>,
        default: T,
    ) -> T {
        match raw {
            None => default,
            Some(v) if range.contains(&v) => v,
            Some(v) => {
                self.push(
                    field,
                    format!("{v} is outside {}..={}", range.start(), range.end()),
                    format!("use a value in that range, {}", e_g(default)),
                );
                default
            }
        }
    }

    /// A value that must be at least `min`.
    pub fn at_least<T: PartialOrd + Display + Copy>(
        &mut self,
        field: &str,
        raw: Option<T>,
        min: T,
        default: T,
    ) -> T {
        match raw {
            None => default,
            Some(v) if v >= min => v,
            Some(v) => {
                self.push(
                    field,
                    format!("{v} is below {min}"),
                    format!("use at least {min}, {}", e_g(default)),
                );
                default
            }
        }
    }

    /// A fraction in `(0, 1]`, or `[0, 1]` when `zero_ok`.
    pub fn fraction(
        &mut self,
        field: &str,
        raw: Option<f64>,
        default: f64,
        zero_ok: bool,
        meaning: &str,
    ) -> f64 {
        match raw {
            None => default,
            Some(r) if (r > 0.0 || (zero_ok && r == 0.0)) && r <= 1.0 => r,
            Some(r) => {
                let range = if zero_ok { "0..=1" } else { "(0, 1]" };
                self.push(
                    field,
                    format!("{r} is outside {range}"),
                    format!("use {meaning}, {}", e_g(default)),
                );
                default
            }
        }
    }

    /// A positive number of milliseconds (`*_ms` keys).
    pub fn millis(&mut self, field: &str, raw: Option<u64>, default: Duration) -> Duration {
        match raw {
            None => default,
            Some(0) => {
                self.push(
                    field,
                    "a zero duration fails every call at once",
                    format!(
                        "set a positive number of milliseconds, {}",
                        e_g(default.as_millis())
                    ),
                );
                default
            }
            Some(ms) => Duration::from_millis(ms),
        }
    }

    /// A number of seconds in `1..=max` (`*_secs` keys); `zero_means` says
    /// what 0 would do.
    pub fn secs(
        &mut self,
        field: &str,
        raw: Option<u64>,
        default: Duration,
        max: u64,
        zero_means: &str,
    ) -> Duration {
        match raw {
            None => default,
            Some(0) => {
                self.push(field, zero_means, e_g(default.as_secs()));
                default
            }
            Some(s) if s > max => {
                self.push(
                    field,
                    format!("{s} s is longer than {max} s"),
                    format!("use at most {max}, {}", e_g(default.as_secs())),
                );
                default
            }
            Some(s) => Duration::from_secs(s),
        }
    }
}

/// `e.g. 20 (the default)`: the fix text that quotes a default.
pub fn e_g(default: impl Display) -> String {
    format!("e.g. {default} (the default)")
}

/// Validates `field` of `file`: both languages present and not blank.
/// Each missing language is its own error naming `field.zh` / `field.en`.
pub fn localized(
    raw: Option<RawLocalized>,
    file: &Path,
    field: &str,
    what: &str,
    errors: &mut ConfigErrors,
) -> Option<Localized> {
    let raw = raw.unwrap_or_default();
    let mut take = |v: Option<String>, lang: &str, name: &str| match v
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    {
        Some(s) => Some(s),
        None => {
            errors.push(ConfigError::new(
                file,
                format!("{field}.{lang}"),
                format!("the {what} has no {name} text"),
                format!("add {field}.{lang} = \"...\" ({name})"),
            ));
            None
        }
    };
    let zh = take(raw.zh, "zh", "Chinese");
    let en = take(raw.en, "en", "English");
    Some(Localized { zh: zh?, en: en? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fix_messages_quote_the_default_used() {
        let mut errors = ConfigErrors::default();
        let mut f = Fields::new(Path::new("gateway.toml"), "t", &mut errors);
        let d = NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN);
        assert_eq!(f.non_zero("n", Some(0), d, "0 is useless"), d);
        assert_eq!(f.non_zero("n", Some(7), d, "0 is useless").get(), 7);
        assert_eq!(f.non_zero("n", None, d, "0 is useless"), d);
        let ms = Duration::from_millis(1000);
        assert_eq!(f.millis("ms", Some(0), ms), ms);
        assert_eq!(f.in_range("r", Some(9u32), 1..=5, 2), 2);
        assert_eq!(f.fraction("q", Some(1.5), 0.5, false, "a share"), 0.5);
        assert_eq!(f.fraction("q", Some(0.0), 0.5, true, "a share"), 0.0);
        assert_eq!(
            f.secs("s", Some(90_000), Duration::from_secs(10), 86_400, "x"),
            Duration::from_secs(10)
        );
        let e = &errors.0;
        assert_eq!(e.len(), 5, "{errors}");
        assert_eq!(e[0].field, "t.n");
        assert_eq!(e[0].fix, "e.g. 20 (the default)");
        assert!(e[1].fix.contains("e.g. 1000 (the default)"), "{}", e[1].fix);
        assert!(
            e[2].problem.contains("9 is outside 1..=5"),
            "{}",
            e[2].problem
        );
        assert!(e[3].fix.contains("e.g. 0.5"), "{}", e[3].fix);
        assert!(e[4].fix.contains("at most 86400"), "{}", e[4].fix);
    }

    #[test]
    fn names() {
        assert!(is_name("fire-rescue"));
        assert!(!is_name("-x"));
        assert!(!is_name("Fire"));
        assert!(!is_name(""));
        assert!(!is_name(&"a".repeat(65)));
    }

    #[test]
    fn missing_language_names_the_field() {
        let mut errors = ConfigErrors::default();
        let raw = RawLocalized {
            zh: Some("  ".into()),
            en: Some("Open a restaurant".into()),
        };
        let l = localized(
            Some(raw),
            Path::new("s.toml"),
            "guide.title",
            "guide title",
            &mut errors,
        );
        assert!(l.is_none());
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].field, "guide.title.zh");
    }
}
