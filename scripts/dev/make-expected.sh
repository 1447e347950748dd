#!/usr/bin/env bash
# Regenerate tests/data/expected_pixels.tsv: the per-file pixel values that pydicom (the
# reference, independent of the Rust code) decodes from every sample file.
#
#   1. fetches the samples if missing (scripts/dev/fetch-samples.sh -> ${DP_VAR_DIR:-.var}/samples)
#   2. creates/updates the venv ${DP_VAR_DIR:-.var}/venv-reference with the exact pins of
#      scripts/dev/reference/requirements.txt (reused while that file is unchanged)
#   3. runs scripts/dev/reference/expected_pixels.py over the samples into the table
#
# Usage: scripts/dev/make-expected.sh [OUT]   (default: tests/data/expected_pixels.tsv)
#        scripts/dev/make-expected.sh --venv    only create the venv and print its python
#                                           (scripts/test.sh: the synth read-back test uses it)
# Needs python3 >= 3.11 with venv and network access to PyPI for the first run.
# Deterministic: rerunning with the same pins and samples rewrites a byte-identical table.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VAR="${DP_VAR_DIR:-$ROOT/.var}"
SAMPLES="$VAR/samples"
VENV="$VAR/venv-reference"
REQS="$ROOT/scripts/dev/reference/requirements.txt"
VENV_ONLY=0
if [ "${1:-}" = "--venv" ]; then VENV_ONLY=1; shift; fi
OUT="${1:-$ROOT/tests/data/expected_pixels.tsv}"
PYTHON="${DP_PYTHON:-python3}"

say() { printf '[expected] %s\n' "$*" >&2; }


# The stamp holds a copy of the requirements the venv was built from.
STAMP="$VENV/.requirements.installed"
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQS" "$STAMP"; then
  say "creating $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: -r "$REQS"
  "$VENV/bin/python" -m pip check --disable-pip-version-check >&2
  cp "$REQS" "$STAMP"
fi
if [ "$VENV_ONLY" = 1 ]; then
  echo "$VENV/bin/python"
  exit 0
fi

bash "$ROOT/scripts/dev/fetch-samples.sh" "$SAMPLES" >&2

mkdir -p "$(dirname "$OUT")"
tmp="$OUT.part$$"
trap 'rm -f "$tmp"' EXIT
# Hash seed fixed so nothing set-ordered can vary between runs.
PYTHONHASHSEED=0 "$VENV/bin/python" "$ROOT/scripts/dev/reference/expected_pixels.py" "$SAMPLES" >"$tmp"
mv "$tmp" "$OUT"
trap - EXIT
say "wrote $(($(wc -l <"$OUT") - 1)) rows to $OUT"
cut -f2 "$OUT" | tail -n +2 | sort | uniq -c | sed 's/^/[expected] /' >&2
