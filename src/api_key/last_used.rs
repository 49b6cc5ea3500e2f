//! [`LastUsedTracker`]: when each key was last used, written in batches in the background.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::ApiKeyManager;

struct Shared {
    pending: Mutex<HashMap<String, SystemTime>>,
    store: Arc<dyn ApiKeyManager>,
}

impl Shared {
    fn take(&self) -> Vec<(String, SystemTime)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .collect()
    }

    async fn flush(&self) {
        let batch = self.take();
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        if let Err(e) = self.store.record_last_used(batch).await {
            tracing::warn!(target: "tower_api_guard::api_key", reason = %e.reason(), keys = n, "last-used batch not written");
        }
    }
}

/// Records when each key was last used, without a write per request and without ever
/// blocking one: [`touch`](Self::touch) only updates a map in memory; a background task
/// writes the batch every interval (default 30 s). [`shutdown`](Self::shutdown) writes what
/// is left; dropping the last handle inside a Tokio runtime starts that final write too.
#[derive(Clone)]
pub struct LastUsedTracker {
    shared: Arc<Shared>,
    task: Arc<TaskGuard>,
}

struct TaskGuard {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        // Graceful drop: flush what was not written yet.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            handle.spawn(async move { shared.flush().await });
        }
    }
}

impl fmt::Debug for LastUsedTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pending = self.shared.pending.lock().map_or(0, |p| p.len());
        f.debug_struct("LastUsedTracker")
            .field("pending", &pending)
            .finish_non_exhaustive()
    }
}

impl LastUsedTracker {
    /// Write to `store` every `interval`. Must be called inside a Tokio runtime to start the
    /// background task; outside one, only [`flush`](Self::flush) writes.
    pub fn new(store: impl ApiKeyManager, interval: Duration) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            store: Arc::new(store),
        });
        let task = tokio::runtime::Handle::try_current().ok().map(|handle| {
            let shared = shared.clone();
            handle.spawn(async move {
                let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    shared.flush().await;
                }
            })
        });
        Self {
            task: Arc::new(TaskGuard {
                shared: shared.clone(),
                task,
            }),
            shared,
        }
    }

    /// Note that key `id` was used at `at` (keeps the latest). Never blocks on I/O.
    pub fn touch(&self, id: &str, at: SystemTime) {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(id) {
            Some(seen) if *seen >= at => {}
            Some(seen) => *seen = at,
            None => {
                pending.insert(id.to_owned(), at);
            }
        }
    }

    /// How many keys wait to be written.
    pub fn pending(&self) -> usize {
        self.shared.pending.lock().map_or(0, |p| p.len())
    }

    /// Write the pending batch now.
    pub async fn flush(&self) {
        self.shared.flush().await;
    }

    /// Stop the background task and write what is left.
    pub async fn shutdown(self) {
        if let Some(task) = &self.task.task {
            task.abort();
        }
        self.shared.flush().await;
    }
}
