//! Every use of `--skip-indexed` during a run ([`indexed`](super::indexed) asks the sink):
//! opening (and probing) the lookup, the indexed flags of a batch of
//! walked entries, and the number of queries sent. Kept in one place so the lookup can be
//! swapped for another without touching the walk or the publishing.

use tokio_util::sync::CancellationToken;

use super::indexed::{Candidate, IndexLookup};
use super::publish::Deliveries;
use super::walk::Walked;
use super::{BackfillError, Options};
use crate::config::Config;

/// With `--skip-indexed`, the lookup, once a probe query has succeeded.
pub(super) async fn open(
    cfg: &Config,
    opts: &Options,
) -> Result<Option<IndexLookup>, BackfillError> {
    if opts.skip_indexed {
        let l = IndexLookup::new(cfg);
        l.probe()
            .await
            .map_err(|source| BackfillError::QueryIndexed {
                target: l.target.clone(),
                source,
            })?;
        Ok(Some(l))
    } else {
        Ok(None)
    }
}

/// For each file of `batch`, in order, whether it is already indexed (empty without a
/// lookup or without files). Deliveries are settled while the query runs; `Ok(None)` if
/// `stop` fired first.
pub(super) async fn flags(
    lookup: Option<&IndexLookup>,
    p: &mut Deliveries,
    batch: &[Walked],
    stop: &CancellationToken,
) -> Result<Option<Vec<bool>>, BackfillError> {
    let candidates: Vec<Candidate> = batch
        .iter()
        .filter_map(|w| match w {
            Walked::File { candidate, .. } => Some(candidate.clone()),
            _ => None,
        })
        .collect();
    match lookup {
        Some(l) if !candidates.is_empty() => match p.drive(l.indexed(&candidates), stop).await {
            None => Ok(None),
            Some(Ok(flags)) => Ok(Some(flags)),
            Some(Err(source)) => Err(BackfillError::QueryIndexed {
                target: l.target.clone(),
                source,
            }),
        },
        _ => Ok(Some(Vec::new())),
    }
}

/// Queries sent to the sink (0 without `--skip-indexed`).
pub(super) fn queries(lookup: Option<&IndexLookup>) -> u64 {
    lookup.map_or(0, IndexLookup::queries)
}
