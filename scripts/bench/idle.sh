#!/usr/bin/env bash
# Idle cost: the CPU a `run` spends per second with nothing to consume, per thread.
#
#   scripts/bench/idle.sh                      # this checkout's release binary
#   scripts/bench/idle.sh OLD_BIN NEW_BIN      # two builds, alternating
#
# Against the running services (scripts/dev/services.sh up; KAFKA_BROKERS, CLICKHOUSE_URL).
# For each round (DP_IDLE_ROUNDS=2) and binary: fresh topics, group and database; `run
# --workers 2` with an empty input topic; after DP_IDLE_SETTLE=8 s (joining the group) each
# thread's time on CPU (/proc/PID/task/*/schedstat) is read, and again DP_IDLE_SECONDS=20 s
# later. One TSV line per run: binary, round, total ms of CPU per second, then the threads by
# name (digits dropped: tokio-runtime-w, rdk:broker, ...) as name=ms/s, largest first.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS="${DP_IDLE_ROUNDS:-2}"
SETTLE="${DP_IDLE_SETTLE:-8}"
SECONDS_MEASURED="${DP_IDLE_SECONDS:-20}"
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
export CLICKHOUSE_URL="${CLICKHOUSE_URL:-http://127.0.0.1:8123}"
export RUST_LOG="${DP_BENCH_RUST_LOG:-warn}" NO_COLOR=1

die() { echo "idle.sh: $*" >&2; exit 1; }

if [ "$#" -eq 0 ]; then
  cargo build --release --quiet --bin dicom-pipeline
  set -- target/release/dicom-pipeline
fi
for bin in "$@"; do [ -x "$bin" ] || die "not an executable: $bin"; done

# tid<TAB>name<TAB>ns on CPU, one line per thread of $1.
threads() {
  local t
  for t in /proc/"$1"/task/*; do
    [ -r "$t/schedstat" ] || continue
    printf '%s\t%s\t%s\n' "${t##*/}" "$(tr -d '0-9' <"$t/comm" | sed 's/[ #]*$//')" \
      "$(cut -d' ' -f1 "$t/schedstat")"
  done
}

one() {
  local bin=$1 round=$2 id="i$(date +%s%N | tail -c 9)" dir pid before after
  export DICOM_PIPELINE_KAFKA__GROUP_ID="g_$id" DICOM_PIPELINE_KAFKA__INPUT_TOPIC="in_$id"
  export DICOM_PIPELINE_KAFKA__IMAGE_TOPIC="img_$id" DICOM_PIPELINE_KAFKA__STATE_TOPIC="st_$id"
  export DICOM_PIPELINE_KAFKA__LOG_TOPIC="log_$id" DICOM_PIPELINE_KAFKA__DLQ_TOPIC="dlq_$id"
  export DICOM_PIPELINE_CLICKHOUSE__DATABASE="db_$id"
  dir=$(mktemp -d)
  "$bin" schema --partitions 8 >/dev/null
  "$bin" run --storage-root "$dir" --workers 2 >/dev/null 2>"$dir/run.log" &
  pid=$!
  sleep "$SETTLE"
  kill -0 "$pid" 2>/dev/null || die "run exited: $(tail -5 "$dir/run.log")"
  before=$(threads "$pid")
  sleep "$SECONDS_MEASURED"
  after=$(threads "$pid")
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$dir"
  # Per name: the CPU each thread spent between the reads (a thread started in between counts
  # from zero), in ms per second.
  awk -F'\t' -v bin="$bin" -v round="$round" -v s="$SECONDS_MEASURED" '
    NR == FNR { b[$1] = $3; next }
    { ms = ($3 - b[$1]) / 1e6 / s; d[$2] += ms; total += ms }
    END {
      line = sprintf("%s\t%d\t%.1f", bin, round, total)
      n = 0; for (k in d) names[++n] = k
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
        if (d[names[j]] > d[names[i]]) { t = names[i]; names[i] = names[j]; names[j] = t }
      for (i = 1; i <= n; i++) line = line sprintf("\t%s=%.2f", names[i], d[names[i]])
      print line
    }' <(printf '%s\n' "$before") <(printf '%s\n' "$after")
}

printf 'bin\tround\tms_cpu_per_s\tthreads\n'
for round in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do one "$bin" "$round"; done
done
