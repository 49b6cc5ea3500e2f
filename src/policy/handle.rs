//! [`Policy`]: the engine in force, swapped atomically on reload.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{Evaluation, PolicyEngine, PolicyError, PolicyErrorKind, PolicyInput};

type Build = dyn Fn() -> Result<Box<dyn PolicyEngine>, PolicyError> + Send + Sync;

/// Where a [`Policy`] comes from: the files it is read from (watched by
/// [`Policy::watch`]) and how an engine is built from them.
#[derive(Clone)]
pub struct PolicySource {
    files: Vec<PathBuf>,
    build: Arc<Build>,
}

impl fmt::Debug for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySource")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl PolicySource {
    /// A source read from `files` by `build` (which reads them itself).
    pub fn new<I, P, F, E>(files: I, build: F) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
        F: Fn() -> Result<E, PolicyError> + Send + Sync + 'static,
        E: PolicyEngine,
    {
        Self {
            files: files.into_iter().map(Into::into).collect(),
            build: Arc::new(move || build().map(|e| Box::new(e) as Box<dyn PolicyEngine>)),
        }
    }

    /// A policy file, by its extension:
    ///
    /// * `.cedar` (feature `cedar`): Cedar policies, validated against the schema in the
    ///   file beside it with the extension `.cedarschema` when there is one;
    /// * `.rego` (feature `rego`): a Rego module; the query is `data.<its package>.allow`.
    ///
    /// # Errors
    /// An unknown extension, or an engine whose feature is off, is a
    /// [`Parse`](PolicyErrorKind::Parse) error. The file itself is read by
    /// [`Policy::load`].
    pub fn file(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref().to_path_buf();
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match extension {
            #[cfg(feature = "cedar")]
            "cedar" => {
                let schema = path.with_extension("cedarschema");
                let files = vec![path.clone(), schema.clone()];
                Ok(Self {
                    files,
                    build: Arc::new(move || {
                        let schema = schema.exists().then_some(schema.as_path());
                        super::cedar::CedarEngine::from_files(&path, schema)
                            .map(|e| Box::new(e) as Box<dyn PolicyEngine>)
                    }),
                })
            }
            #[cfg(feature = "rego")]
            "rego" => Ok(Self {
                files: vec![path.clone()],
                build: Arc::new(move || {
                    super::rego::RegoEngine::from_file(&path)
                        .map(|e| Box::new(e) as Box<dyn PolicyEngine>)
                }),
            }),
            _ => Err(PolicyError::new(
                PolicyErrorKind::Parse,
                format!(
                    "{}: unknown policy file type (expected .cedar with feature `cedar`, or .rego with feature `rego`)",
                    path.display()
                ),
            )),
        }
    }

    /// The files this source reads.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

struct Loaded {
    engine: Box<dyn PolicyEngine>,
    generation: u64,
}

struct Inner {
    current: ArcSwap<Loaded>,
    source: Option<PolicySource>,
    /// Serializes reloads, so that a slow load never overwrites a newer one.
    reloading: Mutex<()>,
    generations: AtomicU64,
}

/// The policy in force: an engine behind an atomic pointer, cheap to clone and shared by
/// every request. See the [module docs](super).
///
/// ```
/// # #[cfg(feature = "rego")] {
/// use tower_api_guard::policy::Policy;
/// use tower_api_guard::policy::rego::RegoEngine;
///
/// let engine = RegoEngine::from_text(
///     "example.rego",
///     "package example\ndefault allow := false\nallow if input.principal.id == \"alice\"\n",
/// )
/// .unwrap();
/// let policy = Policy::new(engine);
/// assert_eq!(policy.generation(), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct Policy {
    inner: Arc<Inner>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("engine", &self.engine_name())
            .field("generation", &self.generation())
            .field("source", &self.inner.source)
            .finish()
    }
}

impl Policy {
    /// A fixed policy: [`reload`](Self::reload) has nothing to read, but
    /// [`replace`](Self::replace) works.
    pub fn new(engine: impl PolicyEngine) -> Self {
        Self::with(Box::new(engine), None)
    }

    fn with(engine: Box<dyn PolicyEngine>, source: Option<PolicySource>) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(Loaded {
                    engine,
                    generation: 1,
                }),
                source,
                reloading: Mutex::new(()),
                generations: AtomicU64::new(1),
            }),
        }
    }

    /// Load a policy from `source` now.
    ///
    /// # Errors
    /// The source's error: a file that cannot be read, a policy that does not parse or
    /// validate. There is no previous policy to fall back to at start.
    pub fn load(source: PolicySource) -> Result<Self, PolicyError> {
        let engine = (source.build)()?;
        tracing::info!(
            target: "tower_api_guard::policy",
            engine = engine.name(),
            files = ?source.files,
            "policy loaded"
        );
        Ok(Self::with(engine, Some(source)))
    }

    /// Load a policy file now; see [`PolicySource::file`].
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        Self::load(PolicySource::file(path)?)
    }

    /// Read the source again and swap the new policy in; returns its generation.
    ///
    /// # Errors
    /// The source's error. The previous policy stays in force, and an `error` event
    /// (target `tower_api_guard::policy`) says why.
    pub fn reload(&self) -> Result<u64, PolicyError> {
        let Some(source) = &self.inner.source else {
            return Err(PolicyError::new(
                PolicyErrorKind::Io,
                "this policy has no source to reload from",
            ));
        };
        let _serial = self
            .inner
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match (source.build)() {
            Ok(engine) => Ok(self.swap(engine)),
            Err(error) => {
                tracing::error!(
                    target: "tower_api_guard::policy",
                    error = %error,
                    generation = self.generation(),
                    "policy reload failed; the previous policy stays in force"
                );
                Err(error)
            }
        }
    }

    /// Swap `engine` in; returns its generation.
    pub fn replace(&self, engine: impl PolicyEngine) -> u64 {
        let _serial = self
            .inner
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.swap(Box::new(engine))
    }

    fn swap(&self, engine: Box<dyn PolicyEngine>) -> u64 {
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let name = engine.name();
        self.inner
            .current
            .store(Arc::new(Loaded { engine, generation }));
        tracing::info!(
            target: "tower_api_guard::policy",
            engine = name,
            generation,
            "policy reloaded"
        );
        generation
    }

    /// The generation in force: 1 at load, one more at every successful reload.
    pub fn generation(&self) -> u64 {
        self.inner.current.load().generation
    }

    /// The engine's name (`"cedar"`, `"rego"`, `"opa"`).
    pub fn engine_name(&self) -> &'static str {
        self.inner.current.load().engine.name()
    }

    /// Decide with the policy in force.
    pub fn evaluate(&self, input: &PolicyInput) -> Evaluation {
        self.inner.current.load().engine.evaluate(input)
    }

    /// Poll the source's files every `every` and [`reload`](Self::reload) when their
    /// contents change (a file that appears, disappears or changes). A change that does not
    /// load keeps the previous policy (and is retried at the next change). Polling, not
    /// file-system notifications: it survives editors that replace files, mounted
    /// ConfigMaps and network file systems.
    ///
    /// Needs a Tokio runtime. The watch stops when the handle is dropped, or when every
    /// clone of the policy is.
    pub fn watch(&self, every: Duration) -> WatchHandle {
        let files = self
            .inner
            .source
            .as_ref()
            .map(|s| s.files.clone())
            .unwrap_or_default();
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            let mut seen = {
                let files = files.clone();
                tokio::task::spawn_blocking(move || fingerprint(&files))
                    .await
                    .unwrap_or(0)
            };
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let files = files.clone();
                let last = seen;
                // Reading, parsing and validating block: off the async workers.
                let checked = tokio::task::spawn_blocking(move || {
                    let now = fingerprint(&files);
                    if now != last {
                        let _ = Policy { inner }.reload();
                    }
                    now
                })
                .await;
                if let Ok(now) = checked {
                    seen = now;
                }
            }
        });
        WatchHandle { task }
    }
}

/// A hash of the files' contents (`None` for a file that cannot be read).
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for file in files {
        std::fs::read(file).ok().hash(&mut hasher);
    }
    hasher.finish()
}

/// The file watch of [`Policy::watch`]; dropping it stops the watch.
#[derive(Debug)]
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
