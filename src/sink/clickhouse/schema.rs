//! DDL for the ClickHouse tables. Every statement is idempotent (`IF NOT EXISTS`).

/// Statements creating the database and tables, in order.
pub fn statements(db: &str) -> Vec<String> {
    // Shared settings: keep hashes of recent inserted blocks so an identical re-sent block is
    // dropped by the server (non-replicated tables need the window set explicitly).
    const SETTINGS: &str = "SETTINGS non_replicated_deduplication_window = 1000";
    vec![
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.dicom_image (
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
                instance_number Int32,
                study_date String,
                study_time String,
                series_number Int32,
                acquisition_number Int32,
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
            {SETTINGS}"
        ),
        // Databases made before `file_mtime` existed (a no-op on new ones).
        format!(
            "ALTER TABLE {db}.dicom_image
            ADD COLUMN IF NOT EXISTS file_mtime Nullable(Int64) AFTER file_size"
        ),
        // "Same SOP Instance UID, different content": a resend of the same file collapses
        // (same header digest); a changed header is a second row, listed here.
        format!(
            "CREATE VIEW IF NOT EXISTS {db}.dicom_sop_conflicts AS
            SELECT tenant_id, study_uid, series_uid, sop_uid,
                   uniqExact(header_digest) AS versions,
                   groupUniqArray(header_digest) AS header_digests,
                   groupUniqArray(file_path) AS file_paths,
                   min(processed_at) AS first_seen,
                   max(processed_at) AS last_seen
            FROM {db}.dicom_image
            GROUP BY tenant_id, study_uid, series_uid, sop_uid
            HAVING versions > 1"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.dicom_state (
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
            {SETTINGS}"
        ),
        // One row per series with its exact instance count, whatever was redelivered.
        format!(
            "CREATE VIEW IF NOT EXISTS {db}.dicom_series AS
            SELECT tenant_id, patient_id, study_uid, series_uid,
                   anyLast(modality) AS modality,
                   anyLast(series_description) AS series_description,
                   anyLast(body_part) AS body_part,
                   length(groupUniqArrayArray(sop_uids)) AS instance_count,
                   min(first_seen) AS first_seen,
                   max(last_seen) AS last_seen,
                   max(updated_at) AS updated_at
            FROM {db}.dicom_state
            GROUP BY tenant_id, patient_id, study_uid, series_uid"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.dicom_store (
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
            {SETTINGS}"
        ),
        // Databases made before `sop_uid` was recorded (older rows keep '': `verify` counts
        // them as not checkable against dicom_image).
        format!(
            "ALTER TABLE {db}.dicom_store
            ADD COLUMN IF NOT EXISTS sop_uid String DEFAULT '' AFTER status"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.dicom_dlq (
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
            {SETTINGS}"
        ),
    ]
}
