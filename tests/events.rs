//! Every success and rejection emits a `tracing` event with its reason, never the token.
#![cfg(all(feature = "jwt", feature = "testing"))]

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use tower::{ServiceBuilder, ServiceExt};
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::jwt::JwtAuthenticator;
use tower_api_guard::testing::TestIssuer;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

#[tokio::test]
async fn events_carry_reasons_but_never_tokens() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let issuer = TestIssuer::new("https://issuer.example");
    let jwt = JwtAuthenticator::builder("https://issuer.example", "api")
        .keys(issuer.static_keys())
        .build()
        .unwrap();
    let svc =
        ServiceBuilder::new()
            .layer(AuthLayer::new(jwt))
            .service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            });
    let call = |token: Option<String>| {
        let svc = svc.clone();
        async move {
            let mut req = Request::builder();
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            svc.oneshot(req.body(()).unwrap()).await.unwrap().status()
        }
    };

    let good = issuer.token().subject("alice").audience("api").mint();
    assert_eq!(call(Some(good.clone())).await, StatusCode::OK);
    let log = captured.take();
    assert!(log.contains("request authenticated"), "{log}");
    assert!(log.contains("alice"));
    assert!(!log.contains(&good));

    let wrong_aud = issuer.token().subject("bob").audience("other").mint();
    assert_eq!(
        call(Some(wrong_aud.clone())).await,
        StatusCode::UNAUTHORIZED
    );
    let log = captured.take();
    assert!(
        log.contains("request rejected") && log.contains("aud does not match"),
        "{log}"
    );
    for part in wrong_aud.split('.') {
        assert!(
            !log.contains(part),
            "a token segment reached the log: {log}"
        );
    }

    let mut forged = good.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert_eq!(call(Some(forged.clone())).await, StatusCode::UNAUTHORIZED);
    let log = captured.take();
    assert!(log.contains("signature does not verify"), "{log}");
    assert!(!log.contains(forged.rsplit('.').next().unwrap()));

    assert_eq!(call(None).await, StatusCode::UNAUTHORIZED);
    let log = captured.take();
    assert!(
        log.contains("request rejected") && log.contains("MissingCredentials"),
        "{log}"
    );
}
