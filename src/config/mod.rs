//! Configuration: raw serde types are parsed from files and converted into a
//! validated model; runtime code only ever sees the model.

pub mod error;

pub use error::{ConfigError, ConfigErrors, parse_toml};
pub mod datasets;

pub use datasets::{DatasetSpec, Datasets, FieldSpec, FieldType, SubjectChars};
pub mod gateway;
pub use gateway::{GatewaySettings, Limits, RawGateway};
