//! The series state record: the latest attributes of one series and the SOP Instance UIDs
//! seen, coalesced per sink flush (absorb) and split when too large for the state topic.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `dicom_state` row and `dicom.state` record: the latest known attributes of one series,
/// the SOP Instance UIDs seen and when, coalesced to at most one record per series per sink
/// flush. The table aggregates records (union of UIDs, min/max times), so the instance
/// count — `length(sop_uids)` under `FINAL`, or the `dicom_series` view — is exact under
/// redelivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Row)]
pub struct StateRecord {
    pub tenant_id: String,
    pub patient_id: String,
    pub study_uid: String,
    pub series_uid: String,
    pub patient_name: String,
    pub patient_sex: String,
    pub patient_birth_date: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_description: String,
    pub series_description: String,
    pub modality: String,
    pub body_part: String,
    pub institution: String,
    pub manufacturer: String,
    /// Distinct SOP Instance UIDs of this series in this record.
    pub sop_uids: Vec<String>,
    /// Earliest / latest store time (`received_at`) of those instances.
    #[serde(with = "clickhouse::serde::time::datetime64::millis")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime64::millis")]
    pub last_seen: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime64::millis")]
    pub updated_at: OffsetDateTime,
}

impl StateRecord {
    /// The record as two, each with half of the SOP UIDs (None for one UID or none): a
    /// record too large for the state topic goes out in parts, which consumers coalesce
    /// like any two records of the series.
    pub fn split(&self) -> Option<(StateRecord, StateRecord)> {
        if self.sop_uids.len() < 2 {
            return None;
        }
        let half = self.sop_uids.len() / 2;
        let mut first = self.clone();
        let second_uids = first.sop_uids.split_off(half);
        let mut second = first.clone();
        second.sop_uids = second_uids;
        Some((first, second))
    }

    /// Fold a later record of the same series into this one: its attributes win, UIDs are
    /// united (kept sorted, so each absorbed UID is one binary search: a linear search per
    /// UID makes a batch's coalescing quadratic in a series' instances, see
    /// docs/BENCHMARKS.md), the seen-interval widened.
    pub fn absorb(&mut self, later: &StateRecord) {
        let mut uids = std::mem::take(&mut self.sop_uids);
        if !uids.is_sorted() {
            uids.sort_unstable();
            uids.dedup();
        }
        let (first, last) = (
            self.first_seen.min(later.first_seen),
            self.last_seen.max(later.last_seen),
        );
        *self = later.clone();
        for uid in std::mem::take(&mut self.sop_uids) {
            if let Err(at) = uids.binary_search(&uid) {
                uids.insert(at, uid);
            }
        }
        self.sop_uids = uids;
        self.first_seen = first;
        self.last_seen = last;
    }

    /// Identity of the series this record describes (coalescing key).
    pub fn series_identity(&self) -> (String, String, String, String) {
        (
            self.tenant_id.clone(),
            self.patient_id.clone(),
            self.study_uid.clone(),
            self.series_uid.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_absorb_unites_uids_and_widens_the_interval() {
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let rec = |uid: &str, at: i64, desc: &str| StateRecord {
            tenant_id: "t".into(),
            patient_id: "p".into(),
            study_uid: "1".into(),
            series_uid: "1.1".into(),
            patient_name: String::new(),
            patient_sex: String::new(),
            patient_birth_date: String::new(),
            study_date: String::new(),
            study_time: String::new(),
            accession_number: String::new(),
            study_description: String::new(),
            series_description: desc.into(),
            modality: "CT".into(),
            body_part: String::new(),
            institution: String::new(),
            manufacturer: String::new(),
            sop_uids: vec![uid.into()],
            first_seen: t(at),
            last_seen: t(at),
            updated_at: t(100),
        };
        let mut a = rec("b", 20, "old");
        a.absorb(&rec("a", 10, "new"));
        a.absorb(&rec("b", 30, "newest"));
        assert_eq!(a.sop_uids, vec!["a".to_string(), "b".to_string()]);
        // A record whose UIDs arrive unsorted (not from `absorb`) is put in order first.
        let mut u = rec("z", 40, "u");
        u.sop_uids = vec!["m".into(), "c".into(), "m".into()];
        u.absorb(&rec("d", 50, "later"));
        assert_eq!(u.sop_uids, ["c", "d", "m"]);
        assert_eq!((a.first_seen, a.last_seen), (t(10), t(30)));
        assert_eq!(a.series_description, "newest");
    }
}
