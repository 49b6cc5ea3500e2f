//! Fallible async checks: allow, deny, or "could not decide".

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The future of a [`Requirement::check`](super::Requirement::check): `Ok(true)` allows,
/// `Ok(false)` denies (403), `Err` could not decide (503 with `Retry-After`, unless the
/// layer fails open).
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<bool, CheckError>> + Send + 'static>>;

/// What a requirement decided (crate-internal: public only to be the output of the
/// layer's waiting future).
#[derive(Debug)]
pub enum Outcome {
    /// Let the request through.
    Allow,
    /// Reject it with this error.
    Deny(crate::error::AuthError),
    /// Could not decide.
    Error(CheckError),
}

/// Why a check could not decide: a database, a policy engine or a service it asked is
/// down, slow or answered nonsense. The request fails closed (503 with `Retry-After`, gRPC
/// `UNAVAILABLE`) unless the layer was told to fail open.
///
/// The reason is for logs: it never reaches a response.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckError {
    reason: Cow<'static, str>,
    retry_after: Option<Duration>,
}

impl CheckError {
    /// A check that could not decide; `reason` is for logs.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// Ask clients to retry after `retry_after` (the layer's default otherwise).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// The reason, for logs.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The `Retry-After` this error asks for, if any.
    pub fn retry_after_hint(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Debug for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckError")
            .field("reason", &self.reason)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the check could not decide: {}", self.reason)
    }
}

impl std::error::Error for CheckError {}

#[cfg(feature = "policy")]
impl From<crate::policy::PolicyError> for CheckError {
    fn from(error: crate::policy::PolicyError) -> Self {
        CheckError::new(error.to_string())
    }
}
