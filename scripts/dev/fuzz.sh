#!/usr/bin/env bash
# Fuzz compute::derive_bytes (fuzz/fuzz_targets/derive.rs) with libFuzzer via cargo-fuzz.
#
#   scripts/dev/fuzz.sh [SECONDS]   (default 600)
#
# The corpus is seeded with every sample file under 1 MB and small synthetic files in each
# transfer syntax `synth` writes. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Crashes are written to fuzz/artifacts/derive/.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${1:-600}"
CORPUS=fuzz/corpus/derive
mkdir -p "$CORPUS"
scripts/dev/fetch-samples.sh >/dev/null
find "${DP_VAR_DIR:-.var}/samples" -type f -size -1024k -exec cp -n {} "$CORPUS/" \; 2>/dev/null || true
cargo build -q --bin dicom-pipeline
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
for ts in explicit-le implicit-le explicit-be deflate rle; do
  for m in CT MR; do
    target/debug/dicom-pipeline synth --out "$seeds/$ts-$m" --rows 16 --columns 24 \
      --instances-per-series 1 --transfer-syntax "$ts" --modality "$m" >/dev/null
  done
done
find "$seeds" -name '*.dcm' | while read -r f; do
  cp "$f" "$CORPUS/synth-$(echo "$f" | md5sum | cut -c1-12).dcm"
done
# Every regression case, the nesting and allocation ones among them, is a seed too.
cp -n tests/data/fuzz/* "$CORPUS/" 2>/dev/null || true
echo "[fuzz] corpus: $(ls "$CORPUS" | wc -l) inputs; running ${SECS}s"
# No sanitizer: the code under test is safe Rust plus the codecs, and librdkafka (a
# dependency of the crate) does not build under ASan.
cargo +nightly fuzz run --sanitizer none derive "$CORPUS" -- \
  -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=1048576 -timeout=10 -print_final_stats=1
