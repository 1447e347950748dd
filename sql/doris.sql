-- Apache Doris tables for dicom-pipeline (the `doris` sink backend), written for Doris 2.1+.
-- Applied in order by `dicom-pipeline schema --sink doris` over the MySQL protocol; every
-- statement is idempotent (IF NOT EXISTS). Placeholders: ${DATABASE} (doris.database) and
-- ${REPLICATION_NUM} (doris.replication_num). Statements end with `;` at the end of a line.
--
-- They mirror the ClickHouse tables (src/sink/clickhouse/schema.rs), column for column:
-- the sink's Stream Load sends JSON lines whose keys are exactly these column names.
-- * ReplacingMergeTree(version) keyed by the logical identity → Unique Key model (merge on
--   write) on the same key, with the version column as the sequence column: a re-sent row
--   replaces the stored one only if its version is not older, as ReplacingMergeTree keeps
--   the latest version. Doris merges at load time, so plain SELECTs are exact (no FINAL).
-- * dicom_state, an AggregatingMergeTree → Aggregate model on the series key: attributes
--   REPLACE (the last load wins, like anyLast), first_seen MIN, last_seen and updated_at MAX.
--   ClickHouse also keeps the union of the series' SOP Instance UIDs (groupUniqArrayArray);
--   no Doris aggregate type that a Stream Load can feed unites string arrays, so the Doris
--   table has no sop_uids column and the dicom_series view counts the distinct SOP UIDs of
--   dicom_image instead: the same set (a state record lists exactly the series' indexed
--   instances), and exact under redelivery because dicom_image is keyed by SOP instance.
-- Types: ClickHouse String keys → VARCHAR(65533) (Doris keys cannot be STRING; 65533 is the
-- VARCHAR maximum, so no DICOM value is refused for length), other strings → STRING,
-- UInt16 → INT, UInt32/UInt64 → BIGINT, Float64 → DOUBLE, Array(Float64) → ARRAY<DOUBLE>,
-- DateTime64(3, 'UTC') → DATETIME(3) holding UTC (the sink sends `YYYY-MM-DD HH:MM:SS.mmm`
-- in UTC). Nullable ClickHouse columns are NULL here; every other column is NOT NULL, and
-- the sink loads in strict mode with max_filter_ratio 0, so a row that does not fit fails
-- its whole load instead of being dropped or nulled.
-- Upgrading: a database created before dicom_image had `file_mtime` (nullable, filled from
-- the store message) needs it added once, by hand (Doris has no ADD COLUMN IF NOT EXISTS):
--   ALTER TABLE <database>.dicom_image ADD COLUMN `file_mtime` BIGINT NULL AFTER `file_size`
-- and before dicom_store had `sop_uid` (what `verify` looks up in dicom_image):
--   ALTER TABLE <database>.dicom_store ADD COLUMN `sop_uid` STRING NOT NULL DEFAULT "" AFTER `status`
-- and before ProtocolName, the parsed date-times and nullable numbers (absent → NULL, not 0):
--   ALTER TABLE <database>.dicom_image ADD COLUMN `protocol_name` STRING NOT NULL DEFAULT "" AFTER `body_part`,
--     ADD COLUMN `study_at` DATETIME(3) NULL AFTER `protocol_name`,
--     ADD COLUMN `series_at` DATETIME(3) NULL AFTER `study_at`,
--     ADD COLUMN `acquisition_at` DATETIME(3) NULL AFTER `series_at`,
--     ADD COLUMN `content_at` DATETIME(3) NULL AFTER `acquisition_at`;
--   ALTER TABLE <database>.dicom_image MODIFY COLUMN `instance_number` INT NULL;  (and series_number, acquisition_number)

CREATE DATABASE IF NOT EXISTS ${DATABASE};

CREATE TABLE IF NOT EXISTS ${DATABASE}.dicom_image (
    `tenant_id` VARCHAR(65533) NOT NULL,
    `study_uid` VARCHAR(65533) NOT NULL,
    `series_uid` VARCHAR(65533) NOT NULL,
    `sop_uid` VARCHAR(65533) NOT NULL,
    `header_digest` VARCHAR(64) NOT NULL,
    `patient_id` STRING NOT NULL,
    `sop_class_uid` STRING NOT NULL,
    `modality` STRING NOT NULL,
    `transfer_syntax_uid` STRING NOT NULL,
    `rows` INT NOT NULL,
    `columns` INT NOT NULL,
    `number_of_frames` BIGINT NOT NULL,
    `bits_allocated` INT NOT NULL,
    `bits_stored` INT NOT NULL,
    `samples_per_pixel` INT NOT NULL,
    `pixel_representation` INT NOT NULL,
    `photometric_interpretation` STRING NOT NULL,
    `instance_number` INT NULL,
    `study_date` STRING NOT NULL,
    `study_time` STRING NOT NULL,
    `series_number` INT NULL,
    `acquisition_number` INT NULL,
    `frame_of_reference_uid` STRING NOT NULL,
    `series_date` STRING NOT NULL,
    `series_time` STRING NOT NULL,
    `acquisition_date` STRING NOT NULL,
    `acquisition_time` STRING NOT NULL,
    `content_date` STRING NOT NULL,
    `content_time` STRING NOT NULL,
    `pixel_spacing` ARRAY<DOUBLE> NOT NULL,
    `slice_thickness` DOUBLE NULL,
    `image_position` ARRAY<DOUBLE> NOT NULL,
    `image_orientation` ARRAY<DOUBLE> NOT NULL,
    `rescale_slope` DOUBLE NULL,
    `rescale_intercept` DOUBLE NULL,
    `window_center` DOUBLE NULL,
    `window_width` DOUBLE NULL,
    `manufacturer` STRING NOT NULL,
    `manufacturer_model` STRING NOT NULL,
    `station_name` STRING NOT NULL,
    `body_part` STRING NOT NULL,
    `protocol_name` STRING NOT NULL,
    `study_at` DATETIME(3) NULL,
    `series_at` DATETIME(3) NULL,
    `acquisition_at` DATETIME(3) NULL,
    `content_at` DATETIME(3) NULL,
    `pixel_min` DOUBLE NULL,
    `pixel_max` DOUBLE NULL,
    `pixel_mean` DOUBLE NULL,
    `pixel_std` DOUBLE NULL,
    `pixel_p01` DOUBLE NULL,
    `pixel_p50` DOUBLE NULL,
    `pixel_p99` DOUBLE NULL,
    `modality_min` DOUBLE NULL,
    `modality_max` DOUBLE NULL,
    `modality_mean` DOUBLE NULL,
    `modality_std` DOUBLE NULL,
    `pixel_digest` STRING NULL,
    `file_path` STRING NOT NULL,
    `file_size` BIGINT NOT NULL,
    `file_mtime` BIGINT NULL,
    `trace_id` STRING NOT NULL,
    `source` STRING NOT NULL,
    `kafka_topic` STRING NOT NULL,
    `kafka_partition` INT NOT NULL,
    `kafka_offset` BIGINT NOT NULL,
    `received_at` DATETIME(3) NOT NULL,
    `processed_at` DATETIME(3) NOT NULL
)
UNIQUE KEY(tenant_id, study_uid, series_uid, sop_uid, header_digest)
DISTRIBUTED BY HASH(series_uid) BUCKETS 10
PROPERTIES (
    "replication_num" = "${REPLICATION_NUM}",
    "enable_unique_key_merge_on_write" = "true",
    "function_column.sequence_col" = "processed_at"
);

-- "Same SOP Instance UID, different content": a resend of the same file collapses (same
-- header digest); a changed header is a second row, listed here.
CREATE VIEW IF NOT EXISTS ${DATABASE}.dicom_sop_conflicts AS
SELECT tenant_id, study_uid, series_uid, sop_uid,
       COUNT(DISTINCT header_digest) AS versions,
       COLLECT_SET(header_digest) AS header_digests,
       COLLECT_SET(file_path) AS file_paths,
       MIN(processed_at) AS first_seen,
       MAX(processed_at) AS last_seen
FROM ${DATABASE}.dicom_image
GROUP BY tenant_id, study_uid, series_uid, sop_uid
HAVING COUNT(DISTINCT header_digest) > 1;

CREATE TABLE IF NOT EXISTS ${DATABASE}.dicom_state (
    `tenant_id` VARCHAR(65533) NOT NULL,
    `patient_id` VARCHAR(65533) NOT NULL,
    `study_uid` VARCHAR(65533) NOT NULL,
    `series_uid` VARCHAR(65533) NOT NULL,
    `patient_name` STRING REPLACE NOT NULL,
    `patient_sex` STRING REPLACE NOT NULL,
    `patient_birth_date` STRING REPLACE NOT NULL,
    `study_date` STRING REPLACE NOT NULL,
    `study_time` STRING REPLACE NOT NULL,
    `accession_number` STRING REPLACE NOT NULL,
    `study_description` STRING REPLACE NOT NULL,
    `series_description` STRING REPLACE NOT NULL,
    `modality` STRING REPLACE NOT NULL,
    `body_part` STRING REPLACE NOT NULL,
    `institution` STRING REPLACE NOT NULL,
    `manufacturer` STRING REPLACE NOT NULL,
    `first_seen` DATETIME(3) MIN NOT NULL,
    `last_seen` DATETIME(3) MAX NOT NULL,
    `updated_at` DATETIME(3) MAX NOT NULL
)
AGGREGATE KEY(tenant_id, patient_id, study_uid, series_uid)
DISTRIBUTED BY HASH(series_uid) BUCKETS 10
PROPERTIES (
    "replication_num" = "${REPLICATION_NUM}"
);

-- One row per series with its exact instance count, whatever was redelivered.
CREATE VIEW IF NOT EXISTS ${DATABASE}.dicom_series AS
SELECT s.tenant_id, s.patient_id, s.study_uid, s.series_uid,
       s.modality, s.series_description, s.body_part,
       COALESCE(i.instance_count, 0) AS instance_count,
       s.first_seen, s.last_seen, s.updated_at
FROM ${DATABASE}.dicom_state s
LEFT JOIN (
    SELECT tenant_id, patient_id, study_uid, series_uid,
           COUNT(DISTINCT sop_uid) AS instance_count
    FROM ${DATABASE}.dicom_image
    GROUP BY tenant_id, patient_id, study_uid, series_uid
) i
ON s.tenant_id = i.tenant_id AND s.patient_id = i.patient_id
   AND s.study_uid = i.study_uid AND s.series_uid = i.series_uid;

CREATE TABLE IF NOT EXISTS ${DATABASE}.dicom_store (
    `kafka_topic` VARCHAR(255) NOT NULL,
    `kafka_partition` INT NOT NULL,
    `kafka_offset` BIGINT NOT NULL,
    `trace_id` STRING NOT NULL,
    `tenant_id` STRING NOT NULL,
    `source` STRING NOT NULL,
    `file_path` STRING NOT NULL,
    `file_size` BIGINT NOT NULL,
    `status` STRING NOT NULL,
    `sop_uid` STRING NOT NULL DEFAULT "",
    `received_at` DATETIME(3) NOT NULL,
    `processed_at` DATETIME(3) NOT NULL
)
UNIQUE KEY(kafka_topic, kafka_partition, kafka_offset)
DISTRIBUTED BY HASH(kafka_partition) BUCKETS 10
PROPERTIES (
    "replication_num" = "${REPLICATION_NUM}",
    "enable_unique_key_merge_on_write" = "true",
    "function_column.sequence_col" = "processed_at"
);

CREATE TABLE IF NOT EXISTS ${DATABASE}.dicom_dlq (
    `kafka_topic` VARCHAR(255) NOT NULL,
    `kafka_partition` INT NOT NULL,
    `kafka_offset` BIGINT NOT NULL,
    `trace_id` STRING NOT NULL,
    `tenant_id` STRING NOT NULL,
    `file_path` STRING NOT NULL,
    `reason` STRING NOT NULL,
    `error` STRING NOT NULL,
    `payload` STRING NOT NULL,
    `failed_at` DATETIME(3) NOT NULL
)
UNIQUE KEY(kafka_topic, kafka_partition, kafka_offset)
DISTRIBUTED BY HASH(kafka_partition) BUCKETS 10
PROPERTIES (
    "replication_num" = "${REPLICATION_NUM}",
    "enable_unique_key_merge_on_write" = "true",
    "function_column.sequence_col" = "failed_at"
);
