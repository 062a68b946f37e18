//! Operator-facing configuration errors: every one names the file, the field
//! and the fix, so `onewindow check` output can be acted on without reading code.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// One problem in one configuration file.
///
/// Built at load time ("reject at load, not under traffic"); runtime code never
/// sees raw configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file that holds the problem (as given to the loader).
    pub file: PathBuf,
    /// Dotted path of the offending field, e.g. `departments.fire-rescue.base_url`.
    pub field: String,
    /// What is wrong, in the operator's terms.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl ConfigError {
    /// A new error for `field` of `file`.
    pub fn new(
        file: impl AsRef<Path>,
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            file: file.as_ref().to_path_buf(),
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: field `{}`: {}; fix: {}",
            self.file.display(),
            self.field,
            self.problem,
            self.fix
        )
    }
}

impl std::error::Error for ConfigError {}

/// All problems found in one load; the loader collects as many as it can so the
/// operator fixes them in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Records one more problem.
    pub fn push(&mut self, e: ConfigError) {
        self.0.push(e);
    }

    /// `Ok(v)` when nothing was recorded, else all recorded problems.
    pub fn into_result<T>(self, v: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() { Ok(v) } else { Err(self) }
    }

    /// True when no problem was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses TOML text into `T`, turning serde's error into a [`ConfigError`] that
/// names the file, the line and the field (unknown keys, wrong types, missing
/// fields all land here because raw types use `deny_unknown_fields`).
pub fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let message = e.message().to_string();
        // Type errors do not name the key: take it from the text before the value.
        let key_at = e.span().and_then(|s| {
            let start = s.start.min(text.len());
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let before = text[line_start..start].trim_end().strip_suffix('=')?;
            let key = before
                .rsplit(|c: char| c == '{' || c == ',' || c.is_whitespace())
                .find(|k| !k.is_empty())?
                .trim_matches('"');
            (!key.is_empty()).then(|| key.to_string())
        });
        let field = field_from_message(&message)
            .or(key_at)
            .unwrap_or_else(|| match line {
                Some(l) => format!("line {l}"),
                None => "(document)".to_string(),
            });
        let problem = match line {
            Some(l) => format!("{message} (line {l})"),
            None => message.clone(),
        };
        let fix = if message.contains("unknown field") {
            "remove the key or correct its spelling to one of the expected keys".to_string()
        } else if message.contains("missing field") {
            "add the missing key".to_string()
        } else {
            "correct the value to the documented type (see README, configuration reference)"
                .to_string()
        };
        ConfigError::new(file, field, problem, fix)
    })
}

/// Pulls the field name out of serde messages such as "unknown field `x`".
fn field_from_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        port: u16,
    }

    #[test]
    fn unknown_key_names_file_field_and_line() {
        let err = parse_toml::<Sample>(Path::new("x.toml"), "name = \"a\"\nport = 1\nprot = 2\n")
            .unwrap_err();
        assert_eq!(err.field, "prot");
        assert!(err.problem.contains("line 3"), "{err}");
        assert!(err.to_string().starts_with("x.toml: field `prot`"), "{err}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let err =
            parse_toml::<Sample>(Path::new("x.toml"), "name = \"a\"\nport = \"x\"\n").unwrap_err();
        assert!(err.problem.contains("line 2"), "{err}");
        assert_eq!(err.field, "port", "{err}");
        let err = parse_toml::<toml::Table>(Path::new("x.toml"), "a = { b = 1, c = }\n");
        assert!(err.is_err());
    }
}
