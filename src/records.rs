//! The records of one indexed instance: the image record (the image topic's JSON, the
//! `dicom_image` row, `derive`'s output line) and the series-state record, built from the
//! store message and the derivation. Pure: used by the workers, `derive`, and the tests.

use time::OffsetDateTime;

use crate::attributes::{header_attributes, image_record_from};
use crate::compute::Derived;
use crate::model::{DicomStoreMeta, ImageRecord, SourceOffset, StateRecord};

/// The image and series-state records for an indexed instance. The derivation is taken
/// apart: its strings move into the image record (the state record copies the few it shares).
pub fn records(
    meta: &DicomStoreMeta,
    derived: Derived,
    src: &SourceOffset,
    now: OffsetDateTime,
) -> (ImageRecord, StateRecord) {
    let Derived {
        meta: m,
        file_size,
        header_digest,
        pixels,
    } = derived;
    let state = StateRecord {
        tenant_id: meta.tenant_id.clone(),
        patient_id: m.patient_id.clone(),
        study_uid: m.study_uid.clone(),
        series_uid: m.series_uid.clone(),
        patient_name: m.patient_name.clone(),
        patient_sex: m.patient_sex.clone(),
        patient_birth_date: m.patient_birth_date.clone(),
        study_date: m.study_date.clone(),
        study_time: m.study_time.clone(),
        accession_number: m.accession_number.clone(),
        study_description: m.study_description.clone(),
        series_description: m.series_description.clone(),
        modality: m.modality.clone(),
        body_part: m.body_part.clone(),
        institution: m.institution.clone(),
        manufacturer: m.manufacturer.clone(),
        sop_uids: vec![m.sop_uid.clone()],
        first_seen: meta.received_at,
        last_seen: meta.received_at,
        updated_at: now,
    };
    let study_at = crate::model::dicom_datetime(&m.study_date, &m.study_time);
    let series_at = crate::model::dicom_datetime(&m.series_date, &m.series_time);
    let acquisition_at = crate::model::dicom_datetime(&m.acquisition_date, &m.acquisition_time);
    let content_at = crate::model::dicom_datetime(&m.content_date, &m.content_time);
    let mut pixels = pixels;
    let pixel_digest = pixels.as_mut().map(|p| std::mem::take(&mut p.digest));
    let px = pixels.as_ref();
    let modality = px.and_then(|p| p.modality);
    // The header attributes are moved as the table in `attributes.rs` lists them.
    let image = header_attributes!(image_record_from!(
        m,
        {
            tenant_id: meta.tenant_id.clone(),
            study_at,
            series_at,
            acquisition_at,
            content_at,
            transfer_syntax_uid: m.transfer_syntax_uid,
            header_digest,
            pixel_min: px.map(|p| p.min),
            pixel_max: px.map(|p| p.max),
            pixel_mean: px.map(|p| p.mean),
            pixel_std: px.map(|p| p.std),
            pixel_p01: px.map(|p| p.p01),
            pixel_p50: px.map(|p| p.p50),
            pixel_p99: px.map(|p| p.p99),
            modality_min: modality.map(|m| m.min),
            modality_max: modality.map(|m| m.max),
            modality_mean: modality.map(|m| m.mean),
            modality_std: modality.map(|m| m.std),
            pixel_digest,
            file_path: meta.file_path.clone(),
            file_size,
            file_mtime: meta.file_mtime,
            trace_id: meta.trace_id.clone(),
            source: meta.source.clone(),
            kafka_topic: src.topic.clone(),
            kafka_partition: src.partition,
            kafka_offset: src.offset,
            received_at: meta.received_at,
            processed_at: now,
        }
    ));
    (image, state)
}
