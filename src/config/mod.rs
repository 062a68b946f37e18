//! Configuration: raw serde types are parsed from files and converted into a
//! validated model; runtime code only ever sees the model.

pub mod error;
pub mod toolkit;

pub use error::{ConfigError, ConfigErrors, parse_toml};
pub mod datasets;

pub use datasets::{DatasetSpec, Datasets, FieldSpec, FieldType, Sharing, SubjectChars};
pub mod gateway;
pub use gateway::{GatewaySettings, Limits, RawGateway};

/// One `*.toml` file of a configuration folder.
#[derive(Debug)]
pub struct TomlFile {
    /// Its path.
    pub path: std::path::PathBuf,
    /// Its name without `.toml` (the department or scenario it defines).
    pub stem: String,
    /// Its text.
    pub text: String,
}

/// Every `*.toml` file in `dir`, sorted by name. Unreadable files are
/// recorded in `errors` and skipped; `None` when the folder does not exist.
pub fn read_toml_dir(
    dir: &std::path::Path,
    errors: &mut ConfigErrors,
) -> Result<Option<Vec<TomlFile>>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ConfigError::new(
                dir,
                "(folder)",
                format!("cannot read: {e}"),
                "check the folder exists and is readable, or fix [paths] in gateway.toml",
            ));
        }
    };
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => out.push(TomlFile { path, stem, text }),
            Err(e) => errors.push(ConfigError::new(
                &path,
                "(file)",
                format!("cannot read: {e}"),
                "make the file readable",
            )),
        }
    }
    Ok(Some(out))
}
