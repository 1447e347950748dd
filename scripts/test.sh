#!/usr/bin/env bash
# Run every test: unit tests, property tests, and the integration tests against the real
# broker (tansu) and ClickHouse, which this script installs (pinned) and starts if needed.
#
#   scripts/test.sh            # all tests
#   scripts/test.sh FILTER     # extra arguments go to `cargo test`
#
# Services started by this script are stopped again at the end; services that were already
# running are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

export KAFKA_BROKERS="${KAFKA_BROKERS:-${KAFKA_HOST:-127.0.0.1}:${KAFKA_PORT:-9092}}"
export CLICKHOUSE_URL="${CLICKHOUSE_URL:-http://${CLICKHOUSE_HOST:-127.0.0.1}:${CLICKHOUSE_HTTP_PORT:-8123}}"

started=0
if ! scripts/services.sh status >/dev/null 2>&1; then
  scripts/services.sh up
  started=1
fi
cleanup() {
  if [ "$started" = 1 ] && [ "${DP_KEEP_SERVICES:-0}" != 1 ]; then
    scripts/services.sh down || true
  fi
}
trap cleanup EXIT

scripts/fetch-samples.sh
export DICOM_SAMPLES_DIR="${DICOM_SAMPLES_DIR:-${DP_VAR_DIR:-$PWD/.var}/samples}"
# pydicom (pinned) reads synthetic files back in the tests: the independent reference.
DP_REFERENCE_PYTHON="$(scripts/make-expected.sh --venv)"
export DP_REFERENCE_PYTHON

# Fault tests start private brokers (to restart one) from the same pinned binary.
DP_TANSU_BIN="$(scripts/services.sh tansu-bin)"
export DP_TANSU_BIN

cargo test --all-targets "$@"
