//! Rows and store messages for tests (unit, integration, benches), made the way the workers
//! make them. Compiled for the crate's own tests and with the `testing` feature (which the
//! crate's dev-dependency on itself turns on for `tests/` and `benches/`); never part of the
//! product's build.

use crate::model::ImageRecord;
use crate::model::{DicomStoreMeta, SourceOffset, StateRecord, StoreRecord};
use time::OffsetDateTime;

/// A store message for `file_path` of tenant `tenant`, with only the required fields.
pub fn store_meta(
    trace_id: &str,
    tenant: &str,
    file_path: &str,
    file_size: u64,
    received_at: OffsetDateTime,
) -> DicomStoreMeta {
    DicomStoreMeta {
        trace_id: trace_id.into(),
        tenant_id: tenant.into(),
        source: String::new(),
        file_path: file_path.into(),
        file_size,
        file_mtime: None,
        received_at,
        patient_id: None,
        study_uid: None,
        series_uid: None,
        sop_uid: None,
    }
}

/// One indexed instance `sop` of series `series` (tenant `t`, input topic `in`).
pub fn indexed(series: &str, sop: &str) -> (ImageRecord, StateRecord, StoreRecord) {
    let now = OffsetDateTime::now_utc();
    let store_meta = store_meta(sop, "t", "/x", 1, now);
    let derived = crate::compute::Derived {
        meta: crate::compute::InstanceMeta {
            patient_id: "p".into(),
            study_uid: "1".into(),
            series_uid: series.into(),
            sop_uid: sop.into(),
            modality: "CT".into(),
            study_description: sop.into(),
            ..Default::default()
        },
        file_size: 1,
        header_digest: String::new(),
        pixels: None,
    };
    let src = SourceOffset {
        topic: "in".into(),
        partition: 0,
        offset: 0,
    };
    let (image, state) = crate::records::records(&store_meta, derived, &src, now);
    let store = StoreRecord {
        trace_id: sop.into(),
        tenant_id: "t".into(),
        file_path: "/x".into(),
        file_size: 1,
        status: "indexed".into(),
        sop_uid: sop.into(),
        ..StoreRecord::unparsed(&src, now)
    };
    (image, state, store)
}
