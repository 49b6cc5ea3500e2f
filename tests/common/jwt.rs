//! A test issuer and an authenticator that trusts its keys.

use std::sync::Arc;

use tower_api_guard::clock::ManualClock;
use tower_api_guard::jwt::{JwtAuthenticator, JwtAuthenticatorBuilder};
use tower_api_guard::testing::TestIssuer;

/// The issuer's name in most tests.
pub const ISS: &str = "https://issuer.example";
/// The audience in most tests.
pub const AUD: &str = "api";
/// Where a manual clock starts (2027-01-15).
pub const NOW: u64 = 1_800_000_000;

/// An authenticator for `issuer`'s name and `audience` that trusts `issuer`'s keys; add
/// settings, then `build()`.
pub fn trusting(issuer: &TestIssuer, audience: &str) -> JwtAuthenticatorBuilder {
    JwtAuthenticator::builder(issuer.issuer(), audience).keys(issuer.static_keys())
}

/// An issuer named [`ISS`] and an authenticator for `audience` that trusts it.
pub fn issuer_and_jwt(audience: &str) -> (TestIssuer, JwtAuthenticator) {
    let issuer = TestIssuer::new(ISS);
    let jwt = trusting(&issuer, audience).build().unwrap();
    (issuer, jwt)
}

/// A manual clock at [`NOW`] and an issuer named [`ISS`] that mints on it.
pub fn clocked_issuer() -> (Arc<ManualClock>, TestIssuer) {
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let issuer = TestIssuer::new(ISS).clock(clock.clone());
    (clock, issuer)
}

/// [`clocked_issuer`], and an authenticator for [`AUD`] on the same clock that trusts it.
pub fn clocked_issuer_and_jwt() -> (Arc<ManualClock>, TestIssuer, JwtAuthenticator) {
    let (clock, issuer) = clocked_issuer();
    let jwt = trusting(&issuer, AUD).clock(clock.clone()).build().unwrap();
    (clock, issuer, jwt)
}
