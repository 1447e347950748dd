#!/usr/bin/env bash
# Run every test: unit tests, property tests, and the integration tests against the real
# broker (Apache Kafka 4.4; DP_BROKER=tansu for tansu 0.6.0) and ClickHouse, which this script
# installs (pinned) and starts if needed.
#
#   scripts/test.sh            # all tests
#   scripts/test.sh FILTER     # extra arguments go to `cargo test`
#
# Services started by this script are stopped again at the end; services that were already
# running are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/dev/prereqs.sh test

export KAFKA_BROKERS="${KAFKA_BROKERS:-${DP_KAFKA_HOST:-127.0.0.1}:${DP_KAFKA_PORT:-9092}}"
export CLICKHOUSE_URL="${CLICKHOUSE_URL:-http://${DP_CLICKHOUSE_HOST:-127.0.0.1}:${DP_CLICKHOUSE_HTTP_PORT:-8123}}"

started=0
if ! scripts/dev/services.sh status >/dev/null 2>&1; then
  scripts/dev/services.sh up
  started=1
fi
cleanup() {
  if [ "$started" = 1 ] && [ "${DP_KEEP_SERVICES:-0}" != 1 ]; then
    scripts/dev/services.sh down || true
  fi
}
trap cleanup EXIT

scripts/dev/fetch-samples.sh
export DP_SAMPLES_DIR="${DP_SAMPLES_DIR:-${DP_VAR_DIR:-$PWD/.var}/samples}"
# pydicom (pinned) reads synthetic files back in the tests: the independent reference.
DP_REFERENCE_PYTHON="$(scripts/dev/make-expected.sh --venv)"
export DP_REFERENCE_PYTHON

# Fault tests start private brokers (to kill and restart one, or a three-node cluster) from
# the same pinned broker.
export DP_BROKER="${DP_BROKER:-kafka}"
if [ "$DP_BROKER" = tansu ]; then
  DP_TANSU_BIN="$(scripts/dev/services.sh tansu-bin)"
  export DP_TANSU_BIN
  # tansu holds a fetch for the whole wait even when data is ready (docs/BROKERS.md).
  export DICOM_PIPELINE_KAFKA__FETCH_WAIT_MAX_MS=10
else
  scripts/dev/services.sh kafka-lib >/dev/null
fi

cargo test --all-targets "$@"
