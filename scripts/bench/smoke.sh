#!/usr/bin/env bash
# The end-to-end harness on one small backlog, as CI runs it: scripts/bench/e2e.sh must index
# every message and report a number in every column that a backlog run fills. It checks that
# the harness works, not how fast anything is (that is docs/BENCHMARKS.md's job).
#
#   scripts/bench/smoke.sh        # ≈1 min once the release binary is built
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${DP_VAR_DIR:-$PWD/.var}/bench-smoke"
rm -rf "$OUT"
DP_BENCH_OUT="$OUT" DP_BENCH_N=300 DP_BENCH_DATASETS=ct64 DP_BENCH_MODES=header_only \
  DP_BENCH_WORKERS=1 DP_BENCH_PARTITIONS=1 DP_BENCH_BROKERS="${DP_BENCH_BROKERS:-kafka}" \
  scripts/bench/e2e.sh >/dev/null
python3 - "$OUT/results.tsv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
if len(rows) != 1:
    sys.exit(f"bench-smoke: expected one result row, got {len(rows)}")
r = rows[0]
if not (r["N"] == r["indexed"] == "300"):
    sys.exit(f"bench-smoke: indexed {r['indexed']} of {r['N']}")
numeric = ["instances_per_s", "steady_per_s", "MB_per_s", "ceiling_per_s", "ratio", "peak_rss_MiB",
           "cpu_ms_per_instance", "p50_ms", "p99_ms", "publish_per_s", "mid80_per_s",
           "broker_cpu_ms_per_instance", "clickhouse_cpu_ms_per_instance", "cpu_bound_per_s"]
bad = []
for k in numeric:
    try:
        v = float(r[k])
    except (KeyError, ValueError):
        bad.append(f"{k}={r.get(k)!r}")
        continue
    # Latencies and the small processes' CPU can round to 0; rates and sizes cannot.
    if v < 0 or (v == 0 and k not in ("p50_ms", "p99_ms", "broker_cpu_ms_per_instance",
                                      "clickhouse_cpu_ms_per_instance")):
        bad.append(f"{k}={v}")
if bad:
    sys.exit("bench-smoke: bad columns: " + ", ".join(bad))
print(f"bench-smoke: {r['indexed']} indexed at {r['instances_per_s']}/s, "
      f"ceiling {r['ceiling_per_s']}/s, cpu_bound {r['cpu_bound_per_s']}/s")
PY
