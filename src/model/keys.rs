//! Kafka message keys of the published records: the store system's scheme (hex md5 of the
//! record's identity joined by `_`) for images and series states, the trace id for dead
//! letters.
use super::{DlqRecord, ImageRecord, StateRecord};

/// Hex md5 of the parts joined by `_` (the store system's key scheme).
pub fn md5_key(parts: &[&str]) -> String {
    format!("{:x}", md5::compute(parts.join("_")))
}

impl ImageRecord {
    /// Message key: md5 of `tenant_patient_study_series_sop`, as the store system keys it.
    pub fn key(&self) -> String {
        md5_key(&[
            &self.tenant_id,
            &self.patient_id,
            &self.study_uid,
            &self.series_uid,
            &self.sop_uid,
        ])
    }
}

impl StateRecord {
    /// Message key: md5 of `tenant_patient_study_series`.
    pub fn key(&self) -> String {
        md5_key(&[
            &self.tenant_id,
            &self.patient_id,
            &self.study_uid,
            &self.series_uid,
        ])
    }
}

impl DlqRecord {
    /// Message key: the trace id when there is one, else the source coordinates.
    pub fn key(&self) -> String {
        if self.trace_id.is_empty() {
            format!(
                "{}-{}-{}",
                self.kafka_topic, self.kafka_partition, self.kafka_offset
            )
        } else {
            self.trace_id.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_key_matches_store_system_scheme() {
        // md5("t_p_s") computed independently: printf 't_p_s' | md5sum
        assert_eq!(
            md5_key(&["t", "p", "s"]),
            "772e29ec7a01b13d49d81b9b2c7b4810"
        );
    }
}
