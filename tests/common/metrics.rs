//! A `metrics` recorder of the test's own (metrics-util's debugging recorder, installed
//! for one thread only), to assert what the layers record: run the test's future with
//! [`Recorded::run`], then read what was recorded with [`Recorded::take`].

use std::future::Future;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A recorder that sees only what runs inside [`Recorded::run`].
///
/// The recorder is leaked: the crate caches metric handles per thread and per recorder
/// address, so a recorder must not be dropped and another made at its address.
pub struct Recorded {
    recorder: &'static DebuggingRecorder,
    snapshotter: Snapshotter,
}

/// One recorded metric: its name, its labels, its value.
#[derive(Debug)]
pub struct Metric {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: DebugValue,
}

impl Default for Recorded {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorded {
    pub fn new() -> Self {
        let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
        // Recording is off until enabled (for the whole test binary).
        metrics::with_local_recorder(recorder, tower_api_guard::metrics::enable);
        let snapshotter = recorder.snapshotter();
        Self {
            recorder,
            snapshotter,
        }
    }

    /// Run `future` to its end on a current-thread runtime, with this recorder installed
    /// for the thread (every task of the runtime runs on it).
    pub fn run<F: Future>(&self, future: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        metrics::with_local_recorder(self.recorder, || runtime.block_on(future))
    }

    /// Everything recorded since the last `take` (counters count from zero again after it,
    /// histograms are emptied).
    pub fn take(&self) -> Taken {
        Taken(
            self.snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| {
                    let key = key.key();
                    Metric {
                        name: key.name().to_owned(),
                        labels: key
                            .labels()
                            .map(|l| (l.key().to_owned(), l.value().to_owned()))
                            .collect(),
                        value,
                    }
                })
                .collect(),
        )
    }
}

/// What was recorded between two takes.
#[derive(Debug)]
pub struct Taken(pub Vec<Metric>);

impl Taken {
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Metric> + 'a {
        self.0.iter().filter(move |m| {
            m.name == name
                && labels
                    .iter()
                    .all(|(k, v)| m.labels.iter().any(|(mk, mv)| mk == k && mv == v))
        })
    }

    /// The sum of the counters named `name` that carry all of `labels` (others may differ).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels)
            .map(|m| match &m.value {
                DebugValue::Counter(n) => *n,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    /// The value of the gauge named `name` with all of `labels`, if it was set.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels).last().map(|m| match &m.value {
            DebugValue::Gauge(v) => v.into_inner(),
            other => panic!("{name} is not a gauge: {other:?}"),
        })
    }

    /// The values recorded into the histograms named `name` with all of `labels`.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.matching(name, labels)
            .flat_map(|m| match &m.value {
                DebugValue::Histogram(v) => v.iter().map(|x| x.into_inner()).collect::<Vec<_>>(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .collect()
    }

    /// Every value the label `label` took on metrics named `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .0
            .iter()
            .filter(|m| m.name == name)
            .flat_map(|m| {
                m.labels
                    .iter()
                    .filter(|(k, _)| k == label)
                    .map(|(_, v)| v.clone())
            })
            .collect();
        values.sort();
        values.dedup();
        values
    }
}
