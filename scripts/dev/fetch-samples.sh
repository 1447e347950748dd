#!/usr/bin/env bash
# Fetch real DICOM files (MIT-licensed test data shipped inside two PyPI wheels) for the quick
# start and the tests, into a git-ignored folder:
#   DEST/pydicom/       everything under pydicom 3.0.2's pydicom/data/test_files/ (~176 small
#                       files: many transfer syntaxes and VRs, DICOMDIRs, some broken on purpose)
#   DEST/pydicom-data/  pydicom-data 1.0.0's data_store/data/*.dcm (68 larger CR/CT/MR/US/SC files)
#
# Usage: scripts/dev/fetch-samples.sh [DEST]    (default: ${DP_VAR_DIR:-<repo>/.var}/samples)
#
# Idempotent: a marker file beside DEST records a complete fetch; rerunning then only counts.
# Files are written atomically (temp file + rename), so a refetch never shows a half-written
# file to a test reading DEST at the same time. Needs python3 and pip (any interpreter: the
# wheels are only downloaded and unpacked, never installed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${1:-${DP_VAR_DIR:-$ROOT/.var}/samples}"
DEST="${DEST%/}"
PYTHON="${DP_PYTHON:-python3}"

PYDICOM=pydicom==3.0.2
PYDICOM_DATA=pydicom-data==1.0.0
# The marker sits beside DEST, not inside it: everything inside DEST is sample data. Its name
# names the pinned versions and the layout (v2: test_files/** in full, JSON files included).
MARKER="$DEST.fetched-pydicom-3.0.2-data-1.0.0-v2"

say() { printf '[samples] %s\n' "$*" >&2; }

count_files() { find "$DEST" -type f | wc -l | tr -d ' '; }

if [ -f "$MARKER" ] && [ -d "$DEST/pydicom" ] && [ -d "$DEST/pydicom-data" ]; then
  echo "samples already present: $(count_files) files in $DEST"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say "downloading $PYDICOM $PYDICOM_DATA (~36 MB of wheels)"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  -d "$tmp" "$PYDICOM" "$PYDICOM_DATA"

mkdir -p "$DEST"
# Unpack with Python's zipfile (always there with pip; `unzip` may not be installed).
"$PYTHON" - "$tmp" "$DEST" <<'PY'
import glob, os, shutil, sys, zipfile

tmp, dest = sys.argv[1:]


def extract(wheel_glob: str, prefix: str, sub: str, only_suffix: str = "") -> int:
    """Copy the wheel's files under `prefix` to dest/sub, keeping their relative paths."""
    (wheel,) = glob.glob(os.path.join(tmp, wheel_glob))
    n = 0
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith(prefix) or not name.endswith(only_suffix):
                continue
            rel = name[len(prefix):]
            if "__pycache__" in rel.split("/") or rel.endswith((".py", ".pyc")):
                continue  # code, not data (none today; guards future wheel layouts)
            out = os.path.join(dest, sub, *rel.split("/"))
            os.makedirs(os.path.dirname(out), exist_ok=True)
            part = f"{out}.part{os.getpid()}"
            with z.open(info) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(part, out)
            n += 1
    if n == 0:
        sys.exit(f"no files under {prefix} in {os.path.basename(wheel)}")
    return n


a = extract("pydicom-3.0.2-*.whl", "pydicom/data/test_files/", "pydicom")
b = extract("pydicom_data-1.0.0-*.whl", "data_store/data/", "pydicom-data", ".dcm")
print(f"fetched {a + b} files into {dest} (pydicom: {a}, pydicom-data: {b})")
PY

# Earlier layouts' markers (v1 skipped the two DICOM-JSON files) are superseded.
rm -f "$DEST.fetched-pydicom-3.0.2-data-1.0.0"
touch "$MARKER"
