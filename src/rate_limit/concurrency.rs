//! [`InFlightLimitLayer`]: at most N requests in flight per identity.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};

use crate::error::AuthError;
use crate::gate::{Check, Gate, GateLayer, LayerKind, NeverWaits, Step, Verdict};
use crate::identity::Identity;

/// At most `max` requests of one identity in flight; past it, `429` (gRPC
/// `RESOURCE_EXHAUSTED`) at once. A slot is held until the inner service's response
/// future completes (or is dropped); streaming bodies are not counted. Requests without an
/// identity pass.
///
/// Every clone of the layer, and every service made from it, shares one count.
///
/// ```
/// use std::num::NonZeroUsize;
/// use tower_api_guard::rate_limit::InFlightLimitLayer;
///
/// let limit = InFlightLimitLayer::per_identity(NonZeroUsize::new(4).unwrap());
/// # let _ = limit;
/// ```
pub type InFlightLimitLayer = GateLayer<LimitInFlight>;

/// The service made by [`InFlightLimitLayer`].
pub type InFlightLimit<S> = Gate<LimitInFlight, S>;

/// The check of [`InFlightLimitLayer`].
#[derive(Clone)]
pub struct LimitInFlight {
    max: NonZeroUsize,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

impl fmt::Debug for LimitInFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitInFlight")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl InFlightLimitLayer {
    /// At most `max` requests in flight per identity.
    pub fn per_identity(max: NonZeroUsize) -> Self {
        GateLayer::from_check(LimitInFlight {
            max,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The most requests one identity may have in flight.
    pub fn max(&self) -> NonZeroUsize {
        self.check_ref().max
    }
}

impl<S> InFlightLimit<S> {
    /// Wrap `inner`.
    pub fn new(inner: S, max: NonZeroUsize) -> Self {
        tower_layer::Layer::layer(&InFlightLimitLayer::per_identity(max), inner)
    }

    /// A layer; same as [`InFlightLimitLayer::per_identity`].
    pub fn layer(max: NonZeroUsize) -> InFlightLimitLayer {
        InFlightLimitLayer::per_identity(max)
    }
}

/// A held slot; released on drop.
pub struct Slot {
    key: String,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl Check for LimitInFlight {
    type Ticket = Option<Slot>;
    type Wait = NeverWaits;
    const LAYER: LayerKind = LayerKind::RateLimit;

    fn check<B>(&self, request: &mut Request<B>) -> Step<Option<Slot>, NeverWaits> {
        let Some(identity) = request.extensions().get::<Identity>() else {
            return Step::Allow(None);
        };
        let key = identity.caller_key();
        let admitted = {
            let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(key.to_owned()).or_insert(0);
            if *n < self.max.get() {
                *n += 1;
                true
            } else {
                false
            }
        };
        if !admitted {
            let error = AuthError::rate_limited(Duration::from_secs(1))
                .with_reason("too many requests in flight")
                .with_code(crate::error::ReasonCode::ConcurrencyLimited);
            return Step::Deny(error.into());
        }
        Step::Allow(Some(Slot {
            key: key.to_owned(),
            in_flight: self.in_flight.clone(),
        }))
    }

    fn resume<B>(
        &self,
        never: std::convert::Infallible,
        _: &mut Request<B>,
    ) -> Verdict<Self::Ticket> {
        match never {}
    }

    fn finish<R>(slot: Option<Slot>, _response: &mut Response<R>) {
        drop(slot);
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::gate::support::{caller, run, with};

    #[tokio::test]
    async fn a_slot_is_given_back_when_the_response_is_done_and_anonymous_requests_pass() {
        let layer = InFlightLimitLayer::per_identity(NonZeroUsize::MIN);
        // One after the other: each gives its slot back.
        for _ in 0..3 {
            let out = run(&layer, with(Some(caller("a", &[], &[])))).await;
            assert_eq!(out.status, StatusCode::OK);
        }
        assert!(layer.check_ref().in_flight.lock().unwrap().is_empty());
        assert_eq!(run(&layer, with(None)).await.status, StatusCode::OK);
        assert_eq!(layer.max(), NonZeroUsize::MIN);
    }

    #[tokio::test]
    async fn a_held_slot_rejects_the_next_request_of_that_identity_only() {
        let layer = InFlightLimitLayer::per_identity(NonZeroUsize::MIN);
        let check = layer.check_ref();
        let mut request = with(Some(caller("a", &[], &[])));
        let Step::Allow(held) = check.check(&mut request) else {
            panic!("the first request is admitted");
        };
        let out = run(&layer, with(Some(caller("a", &[], &[])))).await;
        assert_eq!((out.status, out.calls), (StatusCode::TOO_MANY_REQUESTS, 0));
        assert_eq!(out.error.unwrap().reason(), "too many requests in flight");
        let other = run(&layer, with(Some(caller("b", &[], &[])))).await;
        assert_eq!(other.status, StatusCode::OK);
        drop(held);
        let out = run(&layer, with(Some(caller("a", &[], &[])))).await;
        assert_eq!(out.status, StatusCode::OK);
    }
}
