//! Timestamps in store messages: every one is written as RFC 3339 (what a receiver has at
//! hand, readable in any consumer tool), and epoch milliseconds (an integer) are accepted
//! too. Records the pipeline publishes carry epoch milliseconds, like the table columns.
//! `docs/store-message.schema.json` states the same.

use serde::{Deserialize, Deserializer, Serializer};
use time::OffsetDateTime;

#[derive(Deserialize)]
#[serde(untagged)]
enum Either {
    Millis(i64),
    Text(String),
}

fn parse<E: serde::de::Error>(v: Either) -> Result<OffsetDateTime, E> {
    match v {
        Either::Millis(ms) => OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map_err(|e| E::custom(format!("epoch milliseconds {ms}: {e}"))),
        Either::Text(t) => {
            OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                .map_err(|e| E::custom(format!("`{t}` is not an RFC 3339 timestamp: {e}")))
        }
    }
}

pub mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::serialize(t, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        parse(Either::deserialize(d)?)
    }
}

/// An optional time held as epoch milliseconds, written as RFC 3339.
pub mod optional_ms {
    use super::*;

    pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        let t = ms.and_then(|ms| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
        });
        match t {
            Some(t) => time::serde::rfc3339::serialize(&t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<Either>::deserialize(d)? {
            None => Ok(None),
            Some(v) => {
                let t = parse::<D::Error>(v)?;
                Ok(Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
            }
        }
    }
}
