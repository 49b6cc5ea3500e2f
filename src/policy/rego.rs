//! Rego policies (placeholder: being written).

use std::path::Path;

use super::{Evaluation, PolicyEngine, PolicyError, PolicyErrorKind, PolicyInput};

/// A Rego module evaluated in process.
#[derive(Debug)]
pub struct RegoEngine {}

impl RegoEngine {
    /// Load a module from a file.
    ///
    /// # Errors
    /// Not written yet.
    pub fn from_file(_path: &Path) -> Result<Self, PolicyError> {
        Err(PolicyError::new(PolicyErrorKind::Parse, "not written yet"))
    }

    /// Load a module from text.
    ///
    /// # Errors
    /// Not written yet.
    pub fn from_text(_name: &str, _text: &str) -> Result<Self, PolicyError> {
        Err(PolicyError::new(PolicyErrorKind::Parse, "not written yet"))
    }
}

impl PolicyEngine for RegoEngine {
    fn evaluate(&self, _input: &PolicyInput) -> Evaluation {
        Evaluation::Ready(Err(PolicyError::new(
            PolicyErrorKind::Evaluation,
            "not written yet",
        )))
    }

    fn name(&self) -> &'static str {
        "rego"
    }
}
