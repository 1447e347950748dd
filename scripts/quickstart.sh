#!/usr/bin/env bash
# From a fresh machine to DICOM files indexed in ClickHouse:
#   1. install + start the broker (Apache Kafka 4.4) and ClickHouse (chdb-core)   scripts/dev/services.sh up
#   2. build dicom-pipeline (release)
#   3. fetch real sample files (pydicom + pydicom-data wheels from PyPI, MIT)
#   4. create topics + tables, backfill the samples, run the pipeline until idle
#   5. print a summary queried from ClickHouse
# Re-running is safe: redelivered files collapse to the same logical rows.
set -euo pipefail
cd "$(dirname "$0")/.."
# Everything the machine must provide, checked first (not after a 10-minute build).
scripts/dev/prereqs.sh quickstart

export KAFKA_BROKERS="${KAFKA_BROKERS:-${DP_KAFKA_HOST:-127.0.0.1}:${DP_KAFKA_PORT:-9092}}"
export CLICKHOUSE_URL="${CLICKHOUSE_URL:-http://${DP_CLICKHOUSE_HOST:-127.0.0.1}:${DP_CLICKHOUSE_HTTP_PORT:-8123}}"
DB="${DICOM_PIPELINE_CLICKHOUSE__DATABASE:-dicom}"

t0=$(date +%s.%N)
scripts/dev/services.sh up
cargo build --release --locked
bin=target/release/dicom-pipeline
scripts/dev/fetch-samples.sh
samples="${DP_VAR_DIR:-$PWD/.var}/samples"

"$bin" schema
# tansu holds a fetch for the whole wait even when data is ready (docs/BROKERS.md).
if [ "${DP_BROKER:-kafka}" = tansu ]; then export DICOM_PIPELINE_KAFKA__FETCH_WAIT_MAX_MS=10; fi
echo "== backfill $samples"
"$bin" backfill "$samples"
echo "== run (until idle for 3 s)"
t1=$(date +%s.%N)
# Metrics on a free port (logged), so a local Prometheus on 9090 does not stop the demo.
"$bin" run --storage-root "$samples" --until-idle 3 \
  --metrics-listen "${DICOM_PIPELINE_METRICS__LISTEN:-127.0.0.1:0}"
t2=$(date +%s.%N)

q() { curl -sS --fail-with-body "$CLICKHOUSE_URL/?database=$DB" --data-binary "$1"; }
echo
echo "== ClickHouse summary (database $DB, read with FINAL)"
q "SELECT 'instances indexed', count() FROM dicom_image FINAL FORMAT TSV"
q "SELECT 'series', count() FROM dicom_state FINAL FORMAT TSV"
q "SELECT 'store messages', count() FROM dicom_store FINAL FORMAT TSV"
q "SELECT 'dead letters', count() FROM dicom_dlq FINAL FORMAT TSV"
echo "-- instances by modality"
q "SELECT modality, count() AS n FROM dicom_image FINAL GROUP BY modality ORDER BY n DESC FORMAT PrettyCompactMonoBlock"
echo "-- dead letters by reason"
q "SELECT reason, count() AS n FROM dicom_dlq FINAL GROUP BY reason ORDER BY n DESC FORMAT PrettyCompactMonoBlock"
echo "-- status (offsets per partition, rows per table, dead letters per reason)"
"$bin" status
python3 - "$t0" "$t1" "$t2" <<'PY'
import sys
t0, t1, t2 = map(float, sys.argv[1:])
print(f"quickstart: total {t2 - t0:.1f} s, of which run {t2 - t1:.1f} s (includes the 3 s idle wait)")
PY
