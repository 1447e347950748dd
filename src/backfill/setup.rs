//! Before anything is published: the options are checked, each source's roots resolved,
//! the broker reached, and what every source task needs put together.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::kafka::Producer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{Pos, Watermark};
use super::indexed::IndexLookup;
use super::progress::Counters;
use super::shared::{Shared, SourceRun};
use super::source::MAX_CONCURRENT_SOURCES;
use super::{ArgError, BackfillError, Options, Source};
use crate::config::Config;

/// Refuse options that cannot work, before anything is touched.
pub(super) fn check_options(opts: &Options) -> Result<(), BackfillError> {
    if opts.sources.is_empty() {
        return Err(ArgError::NoSources.into());
    }
    if opts.max_unacked == 0 {
        return Err(ArgError::MaxUnacked.into());
    }
    Ok(())
}

/// Each source's name and absolute roots; a root must exist and be UTF-8.
pub(super) fn resolve_roots(
    sources: &[Source],
) -> Result<Vec<(String, Vec<PathBuf>)>, BackfillError> {
    let mut resolved = Vec::new();
    for s in sources {
        let mut roots = Vec::new();
        for r in &s.roots {
            let err = |source| BackfillError::ResolveRoot {
                name: s.name.clone(),
                path: r.clone(),
                source,
            };
            let abs = std::path::absolute(r).map_err(err)?;
            if abs.to_str().is_none() {
                return Err(BackfillError::RootNotUtf8 {
                    name: s.name.clone(),
                    path: r.clone(),
                });
            }
            // A mistyped or unmounted root is an error of the command, not an unreadable
            // entry of the walk.
            std::fs::metadata(&abs).map_err(err)?;
            roots.push(abs);
        }
        resolved.push((s.name.clone(), roots));
    }
    Ok(resolved)
}

/// Wait for the broker to answer (`StoppedBeforeStart` if `cancel` fires first).
pub(super) async fn reach_broker(
    cfg: &Config,
    cancel: &CancellationToken,
) -> Result<(), BackfillError> {
    tokio::select! {
        r = crate::kafka::reach_async(&cfg.kafka) => r.map_err(BackfillError::Unreachable),
        _ = cancel.cancelled() => Err(BackfillError::StoppedBeforeStart),
    }
}

/// Each source's run: its resolved roots, its rate, where it resumes, fresh counters.
pub(super) fn source_runs(
    resolved: &[(String, Vec<PathBuf>)],
    sources: &[Source],
    starts: Vec<Option<Pos>>,
) -> Vec<SourceRun> {
    resolved
        .iter()
        .zip(sources)
        .zip(starts)
        .map(|(((name, roots), s), start)| SourceRun {
            name: name.clone(),
            roots: roots.clone(),
            rate: s.rate,
            mark: Arc::new(Mutex::new(Watermark::new(start.clone()))),
            start,
            counters: Arc::new(Counters::default()),
        })
        .collect()
}

/// What every source task shares; `stop` stops them all.
pub(super) fn shared(
    cfg: &Config,
    opts: &Options,
    producer: Producer,
    lookup: Option<IndexLookup>,
    stop: CancellationToken,
) -> Shared {
    Shared {
        producer,
        topic: cfg.kafka.input_topic.clone(),
        tenant: cfg.pipeline.tenant_id.clone(),
        permits: Arc::new(Semaphore::new(opts.max_unacked)),
        lookup,
        count: opts.count,
        slots: Semaphore::new(MAX_CONCURRENT_SOURCES),
        stop,
    }
}
