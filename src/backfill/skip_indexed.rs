//! `--skip-indexed` at the start and the end of a run ([`indexed`](super::indexed) asks the
//! sink): opening (and probing) the lookup, and the number of queries sent. The publishing
//! loop asks it per batch (`publish.rs`).

use super::indexed::IndexLookup;
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

/// Queries sent to the sink (0 without `--skip-indexed`).
pub(super) fn queries(lookup: Option<&IndexLookup>) -> u64 {
    lookup.map_or(0, IndexLookup::queries)
}
