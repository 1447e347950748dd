#!/usr/bin/env bash
# Compute-only comparison, side by side in one run, one thread each, warm page cache, on the
# same synthetic 512×512 16-bit CT files:
#   dicom-pipeline `derive --threads 1` (header_only and full),
#   pydicom (benches/pydicom_bench.py: the independent reference, the issue's baseline),
#   DCMTK  (benches/dcmtk_bench.cpp: built here against Debian's libdcmtk-dev; skipped with a
#           message when its headers are missing: apt-get install libdcmtk-dev).
# DP_BENCH_ROUNDS rounds (default 2); only ratios within a round mean anything on a shared machine.
# Per-transfer-syntax numbers: `cargo bench --bench core` (benches/README.md).
#
#   scripts/bench/compute.sh [FILES]    (default 1000: fewer make a header-only pass too short to time)
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-1000}"
PY="$(scripts/dev/make-expected.sh --venv)"
cargo build -q --release --bin dicom-pipeline
BIN=target/release/dicom-pipeline
DCMTK=""
if [ -f /usr/include/dcmtk/dcmdata/dctk.h ] && command -v g++ >/dev/null; then
  g++ -O2 -std=c++17 benches/dcmtk_bench.cpp -o target/dcmtk_bench -ldcmdata -loflog -lofstd
  DCMTK=target/dcmtk_bench
else
  echo "[bench-compute] DCMTK headers not found (apt-get install libdcmtk-dev): DCMTK skipped" >&2
fi
DIR="${DP_VAR_DIR:-.var}/bench-compute/ct512-$N"
if [ ! -d "$DIR" ]; then
  "$BIN" synth --out "$DIR" --instances-per-series "$N" --rows 512 --columns 512 >/dev/null
fi
find "$DIR" -name '*.dcm' -exec cat {} + >/dev/null
rate() { env -u RUST_BACKTRACE "$BIN" derive --threads 1 --mode "$1" "$DIR" 2>&1 >/dev/null | sed -n 's/.*rate=\([0-9]*\) files.*/\1/p'; }
field() { echo "$1" | sed -n "s/.*\"$2\": \([0-9.]*\).*/\1/p"; }
ratio() { echo "scale=1; $1 / $2" | bc -l; }
ROUNDS="${DP_BENCH_ROUNDS:-2}"
for round in $(seq "$ROUNDS"); do
  ho=$(rate header_only); fu=$(rate full)
  py=$("$PY" benches/pydicom_bench.py "$DIR")
  pyh=$(field "$py" header_files_per_s); pyu=$(field "$py" header_uids_files_per_s); pyf=$(field "$py" full_files_per_s)
  echo "round $round  files=$N"
  echo "  header: dicom-pipeline ${ho}/s  pydicom ${pyh}/s ($(ratio "$ho" "$pyh")x; pydicom touching 3 UIDs only ${pyu}/s, $(ratio "$ho" "$pyu")x)"
  echo "  full:   dicom-pipeline ${fu}/s  pydicom ${pyf}/s ($(ratio "$fu" "$pyf")x)"
  if [ -n "$DCMTK" ]; then
    dc=$("$DCMTK" "$DIR")
    dch=$(field "$dc" header_files_per_s); dcf=$(field "$dc" full_files_per_s)
    echo "  DCMTK:  header ${dch}/s ($(ratio "$ho" "$dch")x), full ${dcf}/s ($(ratio "$fu" "$dcf")x)"
  fi
done
