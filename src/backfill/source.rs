//! One task per source, at most [`MAX_CONCURRENT_SOURCES`] at once: each waits for a slot,
//! starts its counting pass and its walk, publishes what is walked, and awaits its
//! deliveries. A source's fatal error stops the others; the first one is returned.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::publish::{self, Deliveries};
use super::shared::{Shared, SourceRun};
use super::walk::{self, WALK_CHANNEL};
use super::{bucket, BackfillError};

/// Most sources walked at once; the others wait for a slot.
pub const MAX_CONCURRENT_SOURCES: usize = 8;

/// Run every source, each in its own task, and wait for them all: the first error, if any.
pub(super) async fn run_all(shared: &Arc<Shared>, runs: Vec<SourceRun>) -> Option<BackfillError> {
    let mut tasks = tokio::task::JoinSet::new();
    for run in runs {
        let shared = shared.clone();
        tasks.spawn(async move {
            let name = run.name.clone();
            let result = run_source(&shared, run).await;
            if result.is_err() {
                shared.stop.cancel();
            }
            (name, result)
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = match joined {
            Ok(done) => done,
            Err(source) => {
                shared.stop.cancel();
                let name = "(a source)".to_string();
                let e = BackfillError::JoinWalk {
                    name: name.clone(),
                    source,
                };
                (name, Err(e))
            }
        };
        if let Err(e) = result {
            tracing::error!(source = name.as_str(), error = %e, "source stopped");
            first_error.get_or_insert(e);
        }
    }
    first_error
}

/// Walk and publish one source.
async fn run_source(shared: &Shared, run: SourceRun) -> Result<(), BackfillError> {
    let stop = &shared.stop;
    let slot = tokio::select! {
        slot = shared.slots.acquire() => slot.ok(),
        _ = stop.cancelled() => None,
    };
    let Some(_slot) = slot else {
        return Ok(());
    };
    let done_counting = CancellationToken::new();
    let _stop_counting = done_counting.clone().drop_guard();
    if shared.count {
        walk::spawn_count(&run, done_counting.clone());
    }
    let (tx, mut rx) = mpsc::channel(WALK_CHANNEL);
    let walker = walk::spawn_walk(&run, tx);
    let mut bucket = run
        .rate
        .map(|r| bucket::TokenBucket::new(r, Instant::now()));
    let mut p = Deliveries::new(&run);
    let published = publish::publish_walked(shared, &run, &mut p, &mut bucket, &mut rx).await;
    // Stopped or finished: no more entries (the walker ends at its next send), and every
    // message sent is awaited (bounded by `kafka.message_timeout_ms`).
    drop(rx);
    p.settle_all().await;
    published?;
    if !stop.is_cancelled() {
        walker.await.map_err(|source| BackfillError::JoinWalk {
            name: run.name.clone(),
            source,
        })?;
    }
    Ok(())
}
