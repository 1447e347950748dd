#!/usr/bin/env bash
# End-to-end harness: the whole pipeline (real broker, real ClickHouse) against the
# compute-only ceiling of the same files on the same cores, measured in the same run.
#
#   scripts/bench/e2e.sh                     # default sweep (see the variables below)
#   DP_BENCH_N=2000 DP_BENCH_WORKERS=2 DP_BENCH_PARTITIONS="1 8" DP_BENCH_MODES=full \
#     DP_BENCH_BROKERS="kafka tansu" scripts/bench/e2e.sh
#
# For each broker (a private one on DP_BENCH_PORT, started by scripts/dev/services.sh with its
# own state directory so the shared services are not disturbed: `kafka` = Apache Kafka 4.4,
# `tansu` = tansu 0.6.0 on sqlite storage, `tansu-memory` = on memory storage) × dataset × mode
# × workers × partitions:
#   1. fresh topics, group and ClickHouse database (`schema --partitions P`);
#   2. `backfill` publishes one store message per file (N files, a backlog);
#   3. `run --workers W --until-idle 1` under /usr/bin/time: wall, user+sys CPU, peak RSS;
#   4. ClickHouse: instances indexed (FINAL), first and last processed_at, and latency
#      quantiles processed_at − received_at (store-message time; in a backlog run this is
#      queueing time, not service time);
#   5. `derive --threads T --mode M` over the same files (T = the cores the pipeline may use):
#      the compute-only ceiling, taken right after the run.
# With DP_BENCH_RATE=R (files/s) a configuration is a *latency* run instead of a backlog run: `run`
# starts first and joins the group, then `backfill --rate R` publishes while it consumes, so
# p50/p99 (processed_at − received_at) are the latency of a live stream at that rate.
# rate = N / (last processed_at − run start): includes joining the group, excludes the idle
# wait that ends the run; steady = N / (last − first processed_at): without the join (an
# upper bound, as the first flush's rows count too); mid80 = the middle 80 % of the rows
# over their span (after the group formed, before the tail); ratio = rate / ceiling. The
# broker's and ClickHouse's CPU (from /proc, while `run` runs) per instance indexed, and
# cpu_bound = cores ÷ (pipeline + broker + ClickHouse CPU per instance): the rate at which the
# three would keep every core busy (a rate near it: the machine's CPU is the limit). One TSV
# line per configuration on stdout (and in $OUT/results.tsv); progress on stderr.
#
# Environment (defaults):
#   DP_BENCH_N=10000  DP_BENCH_DATASETS="ct512 ct512-rle"  DP_BENCH_MODES="header_only full"
#   DP_BENCH_WORKERS="1 2 4"
#   (datasets: ct512, ct512-rle, ct512-deflate: 512² CT; ct64: 64² CT, ~10 KB a file, for
#   backlogs of 100,000 and more)  DP_BENCH_RATE= (empty: backlog runs)
#   DP_BENCH_PARTITIONS="1 2 4 8"  DP_BENCH_BROKERS=kafka  DP_BENCH_THREADS=<CPUs>
#   DP_BENCH_PORT=19092 (the broker;
#   +1: a latency run's metrics endpoint, +2: Kafka's controller listener)
#   DP_BENCH_OUT=.var/bench-e2e  DP_BENCH_DATA=.var/bench-data (datasets: ~525 KB per 512² CT file)
#   DP_BENCH_RUST_LOG=warn (the run's RUST_LOG)  DP_BENCH_KEEP_LOGS=0 (1: keep each run's log)
#   DP_BENCH_KEEP_DB=0 (1: keep each run's ClickHouse database, e.g. to see latency over time)
#   DP_BENCH_BIN= (another build of dicom-pipeline to measure, e.g. two builds side by side;
#   default: build this checkout's release binary)
set -euo pipefail
cd "$(dirname "$0")/../.."

N="${DP_BENCH_N:-10000}"
DATASETS="${DP_BENCH_DATASETS:-ct512 ct512-rle}"
MODES="${DP_BENCH_MODES:-header_only full}"
WORKERS="${DP_BENCH_WORKERS:-1 2 4}"
PARTITIONS="${DP_BENCH_PARTITIONS:-1 2 4 8}"
BROKERS="${DP_BENCH_BROKERS:-kafka}"
THREADS="${DP_BENCH_THREADS:-$(nproc)}"
PORT="${DP_BENCH_PORT:-19092}"
OUT="${DP_BENCH_OUT:-${DP_VAR_DIR:-$PWD/.var}/bench-e2e}"
# Absolute: the private broker's state lives under it and services.sh works from elsewhere.
OUT="$(realpath -m "$OUT")"
# Datasets are shared by every OUT (10,000 CT files are 5.2 GB; they are reused while they
# exist, and deleting this directory frees the space).
DATA="$(realpath -m "${DP_BENCH_DATA:-${DP_VAR_DIR:-$PWD/.var}/bench-data}")"

say() { printf '[bench-e2e] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
for v in "$N" "$THREADS" "$PORT"; do [[ "$v" =~ ^[0-9]+$ ]] || die "not a number: '$v'"; done

eval "$(scripts/dev/services.sh up clickhouse 2>/dev/null | sed -n 's/^CLICKHOUSE_URL=/export CLICKHOUSE_URL=/p')"
: "${CLICKHOUSE_URL:?services.sh did not print CLICKHOUSE_URL}"
if [ -n "${DP_BENCH_BIN:-}" ]; then
  BIN="$(realpath "$DP_BENCH_BIN")"
  [ -x "$BIN" ] || die "DP_BENCH_BIN=$DP_BENCH_BIN is not an executable"
else
  cargo build -q --release --locked --bin dicom-pipeline
  BIN="$PWD/target/release/dicom-pipeline"
fi
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"

q() { curl -sS --fail-with-body "$CLICKHOUSE_URL/" --data-binary "$1"; }

# ------------------------------------------------------------------- datasets
dataset_dir() {
  local name=$1 dir="$DATA/$1-$N" syntax
  case "$name" in
    ct512) syntax=explicit-le ;;
    ct512-rle) syntax=rle ;;
    ct512-deflate) syntax=deflate ;;
    ct64) syntax=explicit-le ;;
    *) die "unknown dataset '$name' (ct512, ct512-rle, ct512-deflate, ct64)" ;;
  esac
  local size=512
  [ "$name" = ct64 ] && size=64
  if [ ! -f "$dir.complete" ]; then
    say "writing $N files ($name) to $dir"
    rm -rf "$dir"
    # 100 series of N/100 instances: realistic series state, many keys.
    local per=$(( N >= 100 ? N / 100 : N )) series=$(( N >= 100 ? 100 : 1 ))
    [ $(( per * series )) -eq "$N" ] || die "N must be a multiple of 100 (or below 100)"
    "$BIN" synth --out "$dir" --series-per-study "$series" --instances-per-series "$per" \
      --rows "$size" --columns "$size" --transfer-syntax "$syntax" --uid-root "1.2.826.0.1.3680043.10.7$(cksum <<<"$name" | cut -c1-4)" >/dev/null
    touch "$dir.complete"
  fi
  # Warm page cache for both the ceiling and the pipeline.
  find "$dir" -name '*.dcm' -exec cat {} + >/dev/null
  echo "$dir"
}

# ------------------------------------------------------------------- private broker
# scripts/dev/services.sh with its own state directory and ports: the same install, start,
# readiness check, busy-port refusal and pid-file stop as the shared broker.
broker() { # name up|down|pid
  local kind storage=sqlite
  case "$1" in
    kafka) kind=kafka ;;
    tansu | tansu-sqlite) kind=tansu ;;
    tansu-memory) kind=tansu storage=memory ;;
    *) die "unknown broker '$1' (kafka, tansu, tansu-memory)" ;;
  esac
  DP_VAR_DIR="$OUT/broker-$1" DP_BROKER="$kind" DP_KAFKA_HOST=127.0.0.1 DP_KAFKA_PORT="$PORT" \
    DP_KAFKA_CONTROLLER_PORT="$(( PORT + 2 ))" DP_TANSU_STORAGE="$storage" \
    scripts/dev/services.sh "$2" broker
}
STARTED=""
stop_broker() {
  if [ -n "$STARTED" ]; then
    broker "$STARTED" down >/dev/null || true
    STARTED=""
  fi
}
trap stop_broker EXIT
start_broker() {
  rm -rf "$OUT/broker-$1"
  broker "$1" up >/dev/null || die "no broker ($1) on $PORT; see $OUT/broker-$1/log/"
  STARTED=$1
}

# ------------------------------------------------------------------- one configuration
now_ms() { date +%s%3N; }
# CPU ticks (user + system, all threads) of a pid, or nothing when it is not running.
ticks() {
  if [ -n "$1" ]; then awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || true; fi
}
one() {
  local brk=$1 dataset=$2 dir=$3 mode=$4 workers=$5 parts=$6
  local id="b$(date +%s%N | tail -c 9)"
  export KAFKA_BROKERS="127.0.0.1:$PORT"
  export DICOM_PIPELINE_KAFKA__GROUP_ID="g_$id" DICOM_PIPELINE_KAFKA__INPUT_TOPIC="in_$id"
  export DICOM_PIPELINE_KAFKA__IMAGE_TOPIC="img_$id" DICOM_PIPELINE_KAFKA__STATE_TOPIC="st_$id"
  export DICOM_PIPELINE_KAFKA__LOG_TOPIC="log_$id" DICOM_PIPELINE_KAFKA__DLQ_TOPIC="dlq_$id"
  export DICOM_PIPELINE_CLICKHOUSE__DATABASE="db_$id" DICOM_PIPELINE_PIPELINE__MODE="$mode"
  export RUST_LOG="${DP_BENCH_RUST_LOG:-warn}" NO_COLOR=1
  # tansu holds a fetch for the whole wait even when data is ready (docs/BROKERS.md).
  case "$brk" in tansu*) export DICOM_PIPELINE_KAFKA__FETCH_WAIT_MAX_MS=10 ;; esac
  "$BIN" schema --partitions "$parts" >/dev/null
  local t0 t1 published start_ms timing
  # The broker's and ClickHouse's CPU while `run` runs: what each instance costs them. A
  # ClickHouse not started by services.sh (CLICKHOUSE_URL elsewhere) is not measured.
  local bpid cpid b0 c0 b1 c1
  bpid=$(broker "$brk" pid || true)
  cpid=$(scripts/dev/services.sh pid clickhouse || true)
  if [ -z "${DP_BENCH_RATE:-}" ]; then
    t0=$(now_ms)
    published=$("$BIN" backfill "$dir" | sed -n 's/^backfill: published=\([0-9]*\).*/\1/p')
    t1=$(now_ms)
    [ "$published" = "$N" ] || die "backfill published '$published' of $N"
    start_ms=$(now_ms)
    b0=$(ticks "$bpid") c0=$(ticks "$cpid")
    /usr/bin/time -o "$OUT/time-$id" -f '%e %U %S %M' "$BIN" run --storage-root "$dir" \
      --workers "$workers" --until-idle 1 >/dev/null 2>"$OUT/run-$id.log" ||
      die "run failed: $(tail -5 "$OUT/run-$id.log")"
    b1=$(ticks "$bpid") c1=$(ticks "$cpid")
  else
    # Live stream: the consumer first (joined: its metrics say partitions are assigned),
    # then a rate-limited publisher; the run ends once idle after the last message (20 s:
    # longer than joining and settling, which count as idle too).
    local maddr="127.0.0.1:$(( PORT + 1 ))" runpid
    start_ms=$(now_ms)
    # Here the broker's CPU also includes taking the publisher's messages.
    b0=$(ticks "$bpid") c0=$(ticks "$cpid")
    /usr/bin/time -o "$OUT/time-$id" -f '%e %U %S %M' "$BIN" run --storage-root "$dir" \
      --workers "$workers" --until-idle 20 --metrics-listen "$maddr" >/dev/null 2>"$OUT/run-$id.log" &
    runpid=$!
    local waited=0
    until curl -sf "http://$maddr/readyz" >/dev/null 2>&1; do
      sleep 0.2; waited=$(( waited + 1 ))
      [ "$waited" -lt 300 ] || die "run never became ready: $(tail -5 "$OUT/run-$id.log")"
    done
    # The first worker is ready while the others may still be joining (≈3 s each on tansu):
    # let the group settle so no rebalance lands in the measured stream.
    sleep 6
    t0=$(now_ms)
    published=$("$BIN" backfill --rate "$DP_BENCH_RATE" "$dir" | sed -n 's/^backfill: published=\([0-9]*\).*/\1/p')
    t1=$(now_ms)
    [ "$published" = "$N" ] || die "backfill published '$published' of $N"
    wait "$runpid" || die "run failed: $(tail -5 "$OUT/run-$id.log")"
    b1=$(ticks "$bpid") c1=$(ticks "$cpid")
  fi
  timing=$(tail -1 "$OUT/time-$id")
  local wall user sys rss
  read -r wall user sys rss <<<"$timing"
  local stats
  stats=$(q "SELECT count(), toUnixTimestamp64Milli(min(processed_at)), toUnixTimestamp64Milli(max(processed_at)),
      round(quantile(0.5)(dateDiff('millisecond', received_at, processed_at))),
      round(quantile(0.99)(dateDiff('millisecond', received_at, processed_at))),
      quantileExact(0.1)(toUnixTimestamp64Milli(processed_at)),
      quantileExact(0.9)(toUnixTimestamp64Milli(processed_at))
    FROM db_$id.dicom_store FINAL WHERE status = 'indexed' FORMAT TSV")
  local indexed first last p50 p99 t10 t90
  read -r indexed first last p50 p99 t10 t90 <<<"$stats"
  local keep_log=0
  if [ "$indexed" != "$N" ]; then
    # tansu's memory storage reports wrong high watermarks, so --until-idle can stop early.
    say "WARNING: $indexed of $N indexed; rates count the indexed ones (log kept: $OUT/run-$id.log)"
    keep_log=1
  fi
  local ceiling
  ceiling=$(env -u RUST_BACKTRACE "$BIN" derive --threads "$THREADS" --mode "$mode" "$dir" 2>&1 >/dev/null |
    sed -n 's/.*rate=\([0-9]*\) files.*/\1/p')
  python3 - "$brk" "$dataset" "$mode" "$workers" "$parts" "$N" "$indexed" "$start_ms" "$first" "$last" \
    "$t0" "$t1" "$wall" "$user" "$sys" "$rss" "$p50" "$p99" "$ceiling" "$dir" "${DP_BENCH_RATE:--}" "$t10" "$t90" \
    "${b0:-}" "${b1:-}" "${c0:-}" "${c1:-}" "$(getconf CLK_TCK)" "$(nproc)" <<'PY' | tee -a "$RESULTS"
import os, sys
(brk, dataset, mode, workers, parts, n, indexed, start, first, last, t0, t1, wall, user, sys_,
 rss, p50, p99, ceiling, d, rate_limit, t10, t90, b0, b1, c0, c1, hz, cores) = sys.argv[1:]
n, indexed = int(n), int(indexed)
secs = (int(last) - int(start)) / 1000
size = indexed / n * sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs if f.endswith('.dcm'))
rate = indexed / secs
# From the first row written to the last: the steady rate, without joining the group (one
# flush of rows is written at `first`, so count the rows after it over the span).
span = (int(last) - int(first)) / 1000
steady = indexed / span if span > 0 else float('nan')
cpu = (float(user) + float(sys_)) / max(indexed, 1) * 1e3
# The middle 80 % of the rows (10th to 90th percentile of processed_at): the rate once the
# group has formed (a second worker joining takes ~3 s on tansu and costs a rebalance) and
# before the tail, where fewer partitions have work left.
mid = (int(t90) - int(t10)) / 1000
mid80 = 0.8 * indexed / mid if mid > 0 else float('nan')
pub = n / ((int(t1) - int(t0)) / 1000)
ratio = rate / float(ceiling) if ceiling else float('nan')
# CPU per instance of the broker and ClickHouse over the run, and the rate at which the three
# processes' CPU per instance would fill every core of the machine: a rate near it means the
# machine's CPU is the limit, far below it means the pipeline waits (latency-bound).
def per_instance(a, b):
    return (int(b) - int(a)) / int(hz) / max(indexed, 1) * 1e3 if a and b else None
broker, ch = per_instance(b0, b1), per_instance(c0, c1)
fmt = lambda v: "-" if v is None else f"{v:.3f}"
# Small values keep their digits (a short smoke run's MB/s or ratio must not round to 0).
num = lambda v: f"{v:.0f}" if v >= 100 else f"{v:.3g}"
bound = "-"
# A latency run's CPU also covers the publisher's messages and the 20 s idle wait: no bound.
if rate_limit == "-" and broker is not None and ch is not None and cpu + broker + ch > 0:
    bound = f"{int(cores) * 1e3 / (cpu + broker + ch):.0f}"
print("\t".join(map(str, [brk, dataset, mode, workers, parts, n, indexed,
    f"{rate:.0f}", f"{steady:.0f}", num(size / secs / 1e6), ceiling, num(ratio), f"{int(rss) / 1024:.0f}",
    f"{cpu:.3f}", p50, p99, f"{pub:.0f}", rate_limit, f"{mid80:.0f}", fmt(broker), fmt(ch), bound])))
PY
  if [ "${DP_BENCH_KEEP_DB:-0}" = 1 ]; then
    echo "[bench-e2e] kept database db_$id" >&2
  else
    q "DROP DATABASE IF EXISTS db_$id" >/dev/null
  fi
  rm -f "$OUT/time-$id"
  [ "$keep_log" = 1 ] || [ "${DP_BENCH_KEEP_LOGS:-0}" = 1 ] || rm -f "$OUT/run-$id.log"
}

if [ ! -s "$RESULTS" ]; then
  printf 'broker\tdataset\tmode\tworkers\tpartitions\tN\tindexed\tinstances_per_s\tsteady_per_s\tMB_per_s\tceiling_per_s\tratio\tpeak_rss_MiB\tcpu_ms_per_instance\tp50_ms\tp99_ms\tpublish_per_s\trate_limit\tmid80_per_s\tbroker_cpu_ms_per_instance\tclickhouse_cpu_ms_per_instance\tcpu_bound_per_s\n' | tee "$RESULTS"
fi
for brk in $BROKERS; do
  start_broker "$brk"
  say "broker: $brk on 127.0.0.1:$PORT"
  for dataset in $DATASETS; do
    dir=$(dataset_dir "$dataset")
    for mode in $MODES; do
      for workers in $WORKERS; do
        for parts in $PARTITIONS; do
          say "$brk $dataset $mode workers=$workers partitions=$parts N=$N"
          one "$brk" "$dataset" "$dir" "$mode" "$workers" "$parts"
        done
      done
    done
  done
  stop_broker
done
