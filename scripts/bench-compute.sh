#!/usr/bin/env bash
# Compute-only comparison, side by side in one run: dicom-pipeline `derive` (1 thread, both
# modes) against pydicom (benches/pydicom_bench.py, 1 thread) on the same synthetic
# 512×512 16-bit CT files. Per-transfer-syntax numbers: `cargo bench --bench core`.
#
#   scripts/bench-compute.sh [FILES]    (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-300}"
PY="$(scripts/make-expected.sh --venv)"
cargo build -q --release --bin dicom-pipeline
BIN=target/release/dicom-pipeline
DIR="${DP_VAR_DIR:-.var}/bench-compute/ct512-$N"
if [ ! -d "$DIR" ]; then
  "$BIN" synth --out "$DIR" --instances-per-series "$N" --rows 512 --columns 512 >/dev/null
fi
find "$DIR" -name '*.dcm' -exec cat {} + >/dev/null
rate() { "$BIN" derive --threads 1 --mode "$1" "$DIR" 2>&1 >/dev/null | sed -n 's/.*rate=\([0-9]*\) files.*/\1/p'; }
for round in 1 2; do
  ho=$(rate header_only); fu=$(rate full)
  py=$("$PY" benches/pydicom_bench.py "$DIR")
  pyh=$(echo "$py" | sed -n 's/.*"header_files_per_s": \([0-9.]*\).*/\1/p')
  pyu=$(echo "$py" | sed -n 's/.*"header_uids_files_per_s": \([0-9.]*\).*/\1/p')
  pyf=$(echo "$py" | sed -n 's/.*"full_files_per_s": \([0-9.]*\).*/\1/p')
  printf 'round %s  files=%s  header: dicom-pipeline %s/s pydicom %s/s (%.1fx; pydicom UIDs only %s/s, %.1fx)  full: dicom-pipeline %s/s pydicom %s/s (%.1fx)\n' \
    "$round" "$N" "$ho" "$pyh" "$(echo "$ho / $pyh" | bc -l)" "$pyu" "$(echo "$ho / $pyu" | bc -l)" \
    "$fu" "$pyf" "$(echo "$fu / $pyf" | bc -l)"
done
