#!/usr/bin/env bash
# Fetch real DICOM files (MIT-licensed test data shipped in PyPI wheels) into an ignored folder:
#   DEST/pydicom/       pydicom 3.0.2 test_files (small files, many transfer syntaxes, some broken on purpose)
#   DEST/pydicom-data/  pydicom-data 1.0.0 data files (larger CR/CT/MR/US images)
# Usage: scripts/fetch-samples.sh [DEST]   (default .var/samples). Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-${DP_VAR_DIR:-$ROOT/.var}/samples}"
# The marker sits beside DEST, not in it: everything inside DEST is sample data.
MARKER="$DEST.fetched-pydicom-3.0.2-data-1.0.0"
if [ -f "$MARKER" ]; then
  echo "[samples] present: $(find "$DEST" -type f | wc -l) files in $DEST" >&2
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" pydicom==3.0.2 pydicom-data==1.0.0
mkdir -p "$DEST"
python3 - "$tmp" "$DEST" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1:]
def extract(wheel_glob, prefix, sub):
    (wheel,) = glob.glob(os.path.join(tmp, wheel_glob))
    n = 0
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if not name.startswith(prefix) or name.endswith("/"):
                continue
            rel = name[len(prefix):]
            if rel.endswith((".py", ".pyc", ".json")) or "__pycache__" in rel:
                continue
            out = os.path.join(dest, sub, rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                dst.write(src.read())
            n += 1
    print(f"[samples] {sub}: {n} files", file=sys.stderr)
extract("pydicom-3.0.2-*.whl", "pydicom/data/test_files/", "pydicom")
extract("pydicom_data-1.0.0-*.whl", "data_store/data/", "pydicom-data")
PY
touch "$MARKER"
