//! Where a department's pass-through paths name a subject, as the adapter
//! declares (`subject_paths = ["/licences/{subject}"]`), so that proxy
//! records carry the subject's reference instead of nothing (the path itself
//! never reaches the audit log).

use std::path::Path;

use crate::config::ConfigError;

/// One segment of a declared path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    Subject,
}

/// The compiled `subject_paths` of an adapter (empty when none are declared).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectPaths {
    patterns: Vec<Vec<Seg>>,
    /// The declared `subject_kind` (e.g. `uscc`), if any.
    pub kind: Option<String>,
}

impl SubjectPaths {
    /// Compiles the declared patterns: each starts with `/` and holds exactly
    /// one `{subject}` segment.
    pub fn parse(
        file: &Path,
        patterns: &[String],
        kind: Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut out = Vec::with_capacity(patterns.len());
        for (i, p) in patterns.iter().enumerate() {
            let field = format!("subject_paths[{i}]");
            let Some(rest) = p.strip_prefix('/') else {
                return Err(ConfigError::new(
                    file,
                    field,
                    format!("`{p}` does not start with `/`"),
                    "write the path inside the department, e.g. \"/licences/{subject}\"",
                ));
            };
            let segs: Vec<Seg> = rest
                .split('/')
                .map(|s| match s {
                    "{subject}" => Seg::Subject,
                    other => Seg::Literal(other.to_string()),
                })
                .collect();
            let subjects = segs.iter().filter(|s| **s == Seg::Subject).count();
            let bad_literal = segs
                .iter()
                .any(|s| matches!(s, Seg::Literal(l) if l.is_empty() || l.contains(['{', '}'])));
            if subjects != 1 || bad_literal {
                return Err(ConfigError::new(
                    file,
                    field,
                    format!("`{p}` must hold exactly one `{{subject}}` segment and no empty ones"),
                    "e.g. \"/api/v2/licences/{subject}\"",
                ));
            }
            out.push(segs);
        }
        Ok(Self {
            patterns: out,
            kind,
        })
    }

    /// The subject id in `path` (normalised, starting with `/`) when a
    /// declared pattern matches its leading segments.
    pub fn subject_in<'p>(&self, path: &'p str) -> Option<&'p str> {
        let segs: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        self.patterns.iter().find_map(|pat| {
            if segs.len() < pat.len() {
                return None;
            }
            let mut subject = None;
            for (want, got) in pat.iter().zip(&segs) {
                match want {
                    Seg::Literal(l) if l == got => {}
                    Seg::Literal(_) => return None,
                    Seg::Subject if got.is_empty() => return None,
                    Seg::Subject => subject = Some(*got),
                }
            }
            subject
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_subject_segment_and_refuses_bad_patterns() {
        let f = Path::new("adapters/x.toml");
        let p = SubjectPaths::parse(
            f,
            &[
                "/licences/{subject}".into(),
                "/api/v2/licences/{subject}".into(),
            ],
            Some("uscc".into()),
        )
        .unwrap();
        assert_eq!(p.subject_in("/licences/91310000X"), Some("91310000X"));
        assert_eq!(
            p.subject_in("/licences/91310000X/history"),
            Some("91310000X")
        );
        assert_eq!(p.subject_in("/api/v2/licences/ABC"), Some("ABC"));
        assert_eq!(p.subject_in("/licences/"), None);
        assert_eq!(p.subject_in("/licencesX/1"), None);
        assert_eq!(p.subject_in("/other/1"), None);
        for bad in [
            "licences/{subject}",
            "/licences",
            "/{subject}/{subject}",
            "/a//{subject}",
        ] {
            let e = SubjectPaths::parse(f, &[bad.into()], None).unwrap_err();
            assert!(e.to_string().contains("subject_paths[0]"), "{e}");
        }
    }
}
