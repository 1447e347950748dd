-- The ClickHouse tables of dicom-pipeline (`schema`, and `run` at start): every statement is
-- idempotent. ${DATABASE} is `clickhouse.database`.
--
-- Column names are the records' fields (src/model.rs; the instance attributes come from the
-- table in src/attributes.rs): the tests in src/sink/clickhouse/schema.rs hold every
-- CREATE TABLE here against its record, and an insert validates the types.
--
-- non_replicated_deduplication_window keeps hashes of recent inserted blocks, so a re-sent
-- batch (same insert_deduplication_token) is dropped (non-replicated tables need it set).

CREATE DATABASE IF NOT EXISTS ${DATABASE};

CREATE TABLE IF NOT EXISTS ${DATABASE}.dicom_image (
    tenant_id LowCardinality(String),
    patient_id String,
    study_uid String,
    series_uid String,
    sop_uid String,
    sop_class_uid LowCardinality(String),
    modality LowCardinality(String),
    transfer_syntax_uid LowCardinality(String),
    rows UInt16,
    columns UInt16,
    number_of_frames UInt32,
    bits_allocated UInt16,
    bits_stored UInt16,
    samples_per_pixel UInt16,
    pixel_representation UInt16,
    photometric_interpretation LowCardinality(String),
    instance_number Nullable(Int32),
    study_date String,
    study_time String,
    series_number Nullable(Int32),
    acquisition_number Nullable(Int32),
    frame_of_reference_uid String,
    series_date String,
    series_time String,
    acquisition_date String,
    acquisition_time String,
    content_date String,
    content_time String,
    pixel_spacing Array(Float64),
    slice_thickness Nullable(Float64),
    image_position Array(Float64),
    image_orientation Array(Float64),
    rescale_slope Nullable(Float64),
    rescale_intercept Nullable(Float64),
    window_center Nullable(Float64),
    window_width Nullable(Float64),
    manufacturer LowCardinality(String),
    manufacturer_model LowCardinality(String),
    station_name LowCardinality(String),
    body_part LowCardinality(String),
    protocol_name LowCardinality(String),
    study_at Nullable(DateTime64(3, 'UTC')),
    series_at Nullable(DateTime64(3, 'UTC')),
    acquisition_at Nullable(DateTime64(3, 'UTC')),
    content_at Nullable(DateTime64(3, 'UTC')),
    header_digest String,
    pixel_min Nullable(Float64),
    pixel_max Nullable(Float64),
    pixel_mean Nullable(Float64),
    pixel_std Nullable(Float64),
    pixel_p01 Nullable(Float64),
    pixel_p50 Nullable(Float64),
    pixel_p99 Nullable(Float64),
    modality_min Nullable(Float64),
    modality_max Nullable(Float64),
    modality_mean Nullable(Float64),
    modality_std Nullable(Float64),
    pixel_digest Nullable(String),
    file_path String,
    file_size UInt64,
    file_mtime Nullable(Int64),
    trace_id String,
    source LowCardinality(String),
    kafka_topic LowCardinality(String),
    kafka_partition Int32,
    kafka_offset Int64,
    received_at DateTime64(3, 'UTC'),
    processed_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(processed_at)
ORDER BY (tenant_id, study_uid, series_uid, sop_uid, header_digest)
SETTINGS non_replicated_deduplication_window = 1000;

-- Databases made by earlier versions (each a no-op on a new one). Rows written before keep
-- their old values: 0 for an absent instance/series/acquisition number, no parsed times.
ALTER TABLE ${DATABASE}.dicom_image
    ADD COLUMN IF NOT EXISTS file_mtime Nullable(Int64) AFTER file_size;
ALTER TABLE ${DATABASE}.dicom_image
    ADD COLUMN IF NOT EXISTS protocol_name LowCardinality(String) AFTER body_part,
    ADD COLUMN IF NOT EXISTS study_at Nullable(DateTime64(3, 'UTC')) AFTER protocol_name,
    ADD COLUMN IF NOT EXISTS series_at Nullable(DateTime64(3, 'UTC')) AFTER study_at,
    ADD COLUMN IF NOT EXISTS acquisition_at Nullable(DateTime64(3, 'UTC')) AFTER series_at,
    ADD COLUMN IF NOT EXISTS content_at Nullable(DateTime64(3, 'UTC')) AFTER acquisition_at;
ALTER TABLE ${DATABASE}.dicom_image
    MODIFY COLUMN instance_number Nullable(Int32),
    MODIFY COLUMN series_number Nullable(Int32),
    MODIFY COLUMN acquisition_number Nullable(Int32);

-- "Same SOP Instance UID, different content": a resend of the same file collapses (same
-- header digest); a changed header is a second row, listed here.
CREATE VIEW IF NOT EXISTS ${DATABASE}.dicom_sop_conflicts AS
SELECT tenant_id, study_uid, series_uid, sop_uid,
       uniqExact(header_digest) AS versions,
       groupUniqArray(header_digest) AS header_digests,
       groupUniqArray(file_path) AS file_paths,
       min(processed_at) AS first_seen,
       max(processed_at) AS last_seen
FROM ${DATABASE}.dicom_image
GROUP BY tenant_id, study_uid, series_uid, sop_uid
HAVING versions > 1;

CREATE TABLE IF NOT EXISTS ${DATABASE}.dicom_state (
    tenant_id LowCardinality(String),
    patient_id String,
    study_uid String,
    series_uid String,
    patient_name SimpleAggregateFunction(anyLast, String),
    patient_sex SimpleAggregateFunction(anyLast, String),
    patient_birth_date SimpleAggregateFunction(anyLast, String),
    study_date SimpleAggregateFunction(anyLast, String),
    study_time SimpleAggregateFunction(anyLast, String),
    accession_number SimpleAggregateFunction(anyLast, String),
    study_description SimpleAggregateFunction(anyLast, String),
    series_description SimpleAggregateFunction(anyLast, String),
    modality SimpleAggregateFunction(anyLast, String),
    body_part SimpleAggregateFunction(anyLast, String),
    institution SimpleAggregateFunction(anyLast, String),
    manufacturer SimpleAggregateFunction(anyLast, String),
    sop_uids SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    updated_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
) ENGINE = AggregatingMergeTree
ORDER BY (tenant_id, patient_id, study_uid, series_uid)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per series with its exact instance count, whatever was redelivered.
CREATE VIEW IF NOT EXISTS ${DATABASE}.dicom_series AS
SELECT tenant_id, patient_id, study_uid, series_uid,
       anyLast(modality) AS modality,
       anyLast(series_description) AS series_description,
       anyLast(body_part) AS body_part,
       length(groupUniqArrayArray(sop_uids)) AS instance_count,
       min(first_seen) AS first_seen,
       max(last_seen) AS last_seen,
       max(updated_at) AS updated_at
FROM ${DATABASE}.dicom_state
GROUP BY tenant_id, patient_id, study_uid, series_uid;

CREATE TABLE IF NOT EXISTS ${DATABASE}.dicom_store (
    trace_id String,
    tenant_id LowCardinality(String),
    source LowCardinality(String),
    file_path String,
    file_size UInt64,
    status LowCardinality(String),
    sop_uid String DEFAULT '',
    kafka_topic LowCardinality(String),
    kafka_partition Int32,
    kafka_offset Int64,
    received_at DateTime64(3, 'UTC'),
    processed_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(processed_at)
ORDER BY (kafka_topic, kafka_partition, kafka_offset)
SETTINGS non_replicated_deduplication_window = 1000;

-- Databases made before `sop_uid` was recorded (older rows keep '': `verify` counts them as
-- not checkable against dicom_image).
ALTER TABLE ${DATABASE}.dicom_store
    ADD COLUMN IF NOT EXISTS sop_uid String DEFAULT '' AFTER status;

CREATE TABLE IF NOT EXISTS ${DATABASE}.dicom_dlq (
    trace_id String,
    tenant_id LowCardinality(String),
    file_path String,
    reason LowCardinality(String),
    error String,
    payload String,
    kafka_topic LowCardinality(String),
    kafka_partition Int32,
    kafka_offset Int64,
    failed_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(failed_at)
ORDER BY (kafka_topic, kafka_partition, kafka_offset)
SETTINGS non_replicated_deduplication_window = 1000;
