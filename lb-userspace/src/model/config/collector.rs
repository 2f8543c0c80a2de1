//! Problems found while validating, gathered so that a config is judged as a whole.
use std::fmt;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `services[0].backends[1].weight`; empty for the file.
    pub field: String,
    pub message: String,
}

/// Every problem found in a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub errors: Vec<FieldError>,
}

impl ConfigError {
    pub fn single(field: &str, message: impl Into<String>) -> Self {
        Self {
            errors: vec![FieldError {
                field: field.to_string(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.field.is_empty() {
                write!(f, "{}", e.message)?;
            } else {
                write!(f, "{}: {}", e.field, e.message)?;
            }
        }
        Ok(())
    }
}

pub(super) struct Collector(pub(super) Vec<FieldError>);

impl Collector {
    pub(super) fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Names (zones, services) are what operators type in commands and see in metrics
/// labels: keep them to a safe alphabet.
pub(super) fn check_name(c: &mut Collector, field: &str, name: &str) {
    if name.is_empty() {
        c.err(field, "must not be empty");
    } else if name.len() > 63 {
        c.err(field, format!("`{name}` is longer than 63 characters"));
    } else if !name
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        c.err(
            field,
            format!("`{name}` may only contain letters, digits, `-`, `_` and `.`"),
        );
    }
}
