//! The one way this crate opens a Redis connection (feature `redis`).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::ConfigError;

/// A reconnecting connection to `url`. The first connection is tried twice with a 2-second
/// timeout each, so a dead server is an error within seconds rather than after the
/// client's default backoff; responses time out after 2 s (callers keep their own,
/// shorter, budgets per call).
pub(crate) async fn connect(url: &str) -> Result<ConnectionManager, ConfigError> {
    let client = redis::Client::open(url).map_err(|_| ConfigError::parse("invalid Redis URL"))?;
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| ConfigError::unavailable("cannot connect to Redis", e))
}
