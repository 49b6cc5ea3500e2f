//! Cedar policies (placeholder: being written).

use std::path::Path;

use super::{Evaluation, PolicyEngine, PolicyError, PolicyErrorKind, PolicyInput};

/// Cedar policies validated against a schema.
#[derive(Debug)]
pub struct CedarEngine {}

impl CedarEngine {
    /// Load policies (and a schema) from files.
    ///
    /// # Errors
    /// Not written yet.
    pub fn from_files(_policies: &Path, _schema: Option<&Path>) -> Result<Self, PolicyError> {
        Err(PolicyError::new(PolicyErrorKind::Parse, "not written yet"))
    }
}

impl PolicyEngine for CedarEngine {
    fn evaluate(&self, _input: &PolicyInput) -> Evaluation {
        Evaluation::Ready(Err(PolicyError::new(
            PolicyErrorKind::Evaluation,
            "not written yet",
        )))
    }

    fn name(&self) -> &'static str {
        "cedar"
    }
}
