//! What every kind keeps about a mapped canonical field, and the conversion
//! steps every kind shares when it reads a department's reply: a missing
//! value, a value map, a type check, the type error.

use serde_json::Value;

use super::spec::{lookup_map, type_name};
use super::{AdapterError, Record};
use crate::config::FieldType;

/// A canonical field as every kind maps it (the kind keeps where the value
/// is found beside it).
#[derive(Debug)]
pub(crate) struct MappedField {
    /// Canonical name.
    pub name: String,
    /// Canonical type.
    pub ty: FieldType,
    /// Whether a record without it is a department error.
    pub required: bool,
    /// Compiled value map (empty when none).
    pub map: Vec<(String, Value)>,
}

impl MappedField {
    /// The department's value does not fit the canonical type (or the map).
    pub(crate) fn type_error(&self) -> AdapterError {
        AdapterError::FieldType {
            field: self.name.clone(),
            expected: type_name(self.ty),
        }
    }

    /// Puts the converted `value` into `record`; `None` (absent or null in
    /// the reply) leaves the field out, or is an error when it is required.
    pub(crate) fn put(
        &self,
        record: &mut Record,
        value: Option<Value>,
    ) -> Result<(), AdapterError> {
        match value {
            Some(v) => {
                record.insert(self.name.clone(), v);
                Ok(())
            }
            None if self.required => Err(AdapterError::FieldMissing {
                field: self.name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Looks a department value up in the field's map.
    pub(crate) fn mapped(&self, key: &str) -> Result<Value, AdapterError> {
        lookup_map(&self.map, key)
            .cloned()
            .ok_or_else(|| self.type_error())
    }

    /// A JSON scalar from the department: through the map when the field
    /// has one (keyed by the scalar's text), else checked against the
    /// canonical type.
    pub(crate) fn convert_json(&self, v: &Value) -> Result<Value, AdapterError> {
        if !self.map.is_empty() {
            return match v {
                Value::String(s) => self.mapped(s),
                Value::Number(n) => self.mapped(&n.to_string()),
                Value::Bool(b) => self.mapped(&b.to_string()),
                _ => Err(self.type_error()),
            };
        }
        if self.ty.accepts(v) {
            Ok(v.clone())
        } else {
            Err(self.type_error())
        }
    }
}
