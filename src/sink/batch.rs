//! One flush worth of rows, split by table, and the insert deduplication tokens that make a
//! retried write of it harmless.

use crate::model::{DlqRecord, ImageRecord, StateRecord, StoreRecord};

/// One flush worth of rows, state already coalesced.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub images: Vec<ImageRecord>,
    pub states: Vec<StateRecord>,
    pub stores: Vec<StoreRecord>,
    pub dead_letters: Vec<DlqRecord>,
    /// Names the exact set of input messages behind the batch (see [`dedup_token`]).
    pub dedup_token: String,
    /// One insert deduplication token per table, set by [`Batch::seal`]; backends that
    /// deduplicate inserts (ClickHouse tokens, Doris labels) pass each table its own.
    pub tokens: DedupTokens,
}

/// Insert deduplication tokens, one per table: `{dedup_token}#{digest of the table's rows}`.
/// A retried write of the same batch carries the same tokens and is dropped by the tables
/// that already have it; the same messages processed again (a replay after an outage, an
/// offset reset) make other rows — at least another `processed_at`, maybe another outcome —
/// so they get other tokens and are written, and the tables' keys collapse them. Empty when
/// the batch has no messages.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DedupTokens {
    pub image: String,
    pub state: String,
    pub store: String,
    pub dlq: String,
}

impl Batch {
    /// Compute the batch's tokens from its messages' offsets and its rows. Called once, when
    /// the batch is complete; every retry of the batch then sends the same tokens.
    pub fn seal(mut self) -> Batch {
        if self.stores.is_empty() {
            self.dedup_token.clear();
            self.tokens = DedupTokens::default();
            return self;
        }
        self.dedup_token = dedup_token(&self.stores);
        let base = &self.dedup_token;
        self.tokens = DedupTokens {
            image: table_token(base, &self.images),
            state: table_token(base, &self.states),
            store: table_token(base, &self.stores),
            dlq: table_token(base, &self.dead_letters),
        };
        self
    }
}

/// `{base}#{first 32 hex of BLAKE3 over the rows' JSON}` (empty for an empty base).
fn table_token<T: serde::Serialize>(base: &str, rows: &[T]) -> String {
    /// The rows' JSON reaches the hasher in pieces of about this size: serde writes a row in
    /// dozens of small writes, and a BLAKE3 update per write cost more than the hashing (the
    /// digest does not depend on how the input is cut).
    const PIECE: usize = 64 * 1024;
    if base.is_empty() {
        return String::new();
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = Vec::with_capacity(PIECE + 4096);
    for row in rows {
        // The records serialise infallibly (plain strings, numbers, timestamps).
        if serde_json::to_writer(&mut buf, row).is_err() {
            buf.extend_from_slice(b"unserialisable row");
        }
        buf.push(b'\n');
        if buf.len() >= PIECE {
            hasher.update(&buf);
            buf.clear();
        }
    }
    hasher.update(&buf);
    format!("{base}#{}", &hasher.finalize().to_hex().as_str()[..32])
}

/// An insert deduplication token for the messages of a batch: per input topic and partition
/// `topic:partition:first-last`, then `#` and a digest of every (topic, partition, offset).
/// The ranges make it readable; the digest makes it exact — a batch holding a different
/// subset of the same range (another batching of redelivered messages) gets another token, so
/// deduplication can only drop an insert of the very same messages.
pub fn dedup_token(stores: &[StoreRecord]) -> String {
    let mut offsets: Vec<(&str, i32, i64)> = stores
        .iter()
        .map(|s| (s.kafka_topic.as_str(), s.kafka_partition, s.kafka_offset))
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    let mut hasher = blake3::Hasher::new();
    let mut ranges: Vec<String> = Vec::new();
    let mut i = 0;
    while i < offsets.len() {
        let (topic, partition, first) = offsets[i];
        let mut last = first;
        while i < offsets.len() && offsets[i].0 == topic && offsets[i].1 == partition {
            let (t, p, o) = offsets[i];
            hasher.update(t.as_bytes());
            hasher.update(&[0]);
            hasher.update(&p.to_le_bytes());
            hasher.update(&o.to_le_bytes());
            last = o;
            i += 1;
        }
        ranges.push(format!("{topic}:{partition}:{first}-{last}"));
    }
    let digest = hasher.finalize().to_hex();
    format!("{}#{}", ranges.join(","), &digest.as_str()[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(topic: &str, partition: i32, offset: i64) -> StoreRecord {
        let src = crate::model::SourceOffset {
            topic: topic.into(),
            partition,
            offset,
        };
        StoreRecord::unparsed(&src, time::OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn the_token_lists_ranges_per_partition_and_ignores_order() {
        let a = [
            store("s", 1, 7),
            store("s", 0, 3),
            store("s", 0, 5),
            store("s", 1, 8),
        ];
        let b = [
            store("s", 0, 5),
            store("s", 1, 8),
            store("s", 0, 3),
            store("s", 1, 7),
        ];
        let t = dedup_token(&a);
        assert!(t.starts_with("s:0:3-5,s:1:7-8#"), "{t}");
        assert_eq!(t, dedup_token(&b));
    }

    /// The token is BLAKE3 over the rows' JSON lines, however the input reaches the hasher:
    /// a batch retried by another build (one that hashed row by row) gets the same token.
    #[test]
    fn table_token_is_the_digest_of_the_rows_json_lines() {
        let (image, _, _) = crate::testing::indexed("s1", "sop1");
        // More than one 64 KB piece of JSON.
        let rows: Vec<ImageRecord> = (0..200)
            .map(|i| {
                let mut r = image.clone();
                r.kafka_offset = i;
                r
            })
            .collect();
        let mut text = Vec::new();
        for r in &rows {
            serde_json::to_writer(&mut text, r).unwrap();
            text.push(b'\n');
        }
        assert!(text.len() > 128 * 1024, "{}", text.len());
        let want = format!("b#{}", &blake3::hash(&text).to_hex().as_str()[..32]);
        assert_eq!(table_token("b", &rows), want);
        assert_eq!(table_token("", &rows), "");
    }

    #[test]
    fn each_table_token_names_the_messages_and_the_rows() {
        let (image, state, mut store) = crate::testing::indexed("s1", "sop1");
        store.kafka_offset = 7;
        let batch = || Batch {
            images: vec![image.clone()],
            states: vec![state.clone()],
            stores: vec![store.clone()],
            ..Batch::default()
        };
        let first = batch().seal();
        // A retry of the same batch: the same tokens.
        assert_eq!(first.tokens, batch().seal().tokens);
        assert!(
            first.tokens.image.starts_with("in:0:7-7#"),
            "{:?}",
            first.tokens
        );
        let all = [
            &first.tokens.image,
            &first.tokens.state,
            &first.tokens.store,
            &first.tokens.dlq,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b, "tables share a token");
            }
        }
        // The same message processed again (a replay): other rows, other tokens, except for
        // a table whose rows did not change.
        let mut replay = batch();
        replay.images[0].processed_at += time::Duration::milliseconds(1);
        let replay = replay.seal();
        assert_eq!(replay.dedup_token, first.dedup_token);
        assert_ne!(replay.tokens.image, first.tokens.image);
        assert_eq!(replay.tokens.store, first.tokens.store);
        // A dead letter the first time, indexed the second: the store row's status differs.
        let mut indexed_now = batch();
        indexed_now.stores[0].status = "dead_letter".into();
        assert_ne!(indexed_now.seal().tokens.store, first.tokens.store);
        // No messages, no tokens.
        assert_eq!(Batch::default().seal().tokens, DedupTokens::default());
    }

    #[test]
    fn another_subset_of_the_same_range_gets_another_token() {
        let a = [store("s", 0, 3), store("s", 0, 4), store("s", 0, 6)];
        let b = [store("s", 0, 3), store("s", 0, 5), store("s", 0, 6)];
        assert_eq!(dedup_token(&a)[..8], *"s:0:3-6#");
        assert_eq!(dedup_token(&b)[..8], *"s:0:3-6#");
        assert_ne!(dedup_token(&a), dedup_token(&b));
        let other_topic = [store("t", 0, 3), store("t", 0, 4), store("t", 0, 6)];
        assert_ne!(dedup_token(&a), dedup_token(&other_topic));
    }
}
