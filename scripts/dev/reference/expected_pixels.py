#!/usr/bin/env python3
"""Write the reference pixel table (tests/data/expected_pixels.tsv) for a samples folder.

Usage: expected_pixels.py SAMPLES_DIR > expected_pixels.tsv

Independent of the Rust code: pydicom 3 (with the pylibjpeg / pyjpegls plugins) is the
reference. One row per regular file under SAMPLES_DIR (recursively, sorted by relative path,
'/'-separated), whatever the file is. The column definitions are in README.md beside this
script; keep the two in step.
"""

from __future__ import annotations

import os
import sys
import warnings

import blake3
import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, pixel_array

COLUMNS = [
    "path",
    "status",
    "sop_uid",
    "transfer_syntax",
    "rows",
    "columns",
    "frames",
    "samples",
    "bits_allocated",
    "bits_stored",
    "pixel_representation",
    "photometric",
    "lossy",
    "pixel_min",
    "pixel_max",
    "pixel_mean",
    "pixel_std",
    "modality_min",
    "modality_max",
    "modality_mean",
    "modality_std",
    "p01",
    "p50",
    "p99",
    "pixel_digest",
    "note",
]

# Transfer syntaxes whose compression may be lossy (J2K .90 and JPEG-LS .80 are lossless-only).
LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.203",  # HTJ2K
}

PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel, Float Pixel, Double Float


def clean(value: object) -> str:
    """A TSV-safe one-line string: tabs, CR and LF become spaces; runs of spaces collapse."""
    text = "" if value is None else str(value)
    for ch in "\t\r\n":
        text = text.replace(ch, " ")
    return " ".join(text.split())


def note_for(exc: BaseException) -> str:
    msg = clean(exc)
    if len(msg) > 200:
        msg = msg[:197] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def int_or_empty(ds: pydicom.Dataset, keyword: str) -> str:
    """The element's value as a decimal integer; empty when absent, empty or not an integer."""
    try:
        value = ds.get(keyword)
    except Exception:  # a value that cannot be converted (broken files)
        return ""
    if value is None or value == "":
        return ""
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return ""


def str_or_empty(ds: pydicom.Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    return "" if value is None else clean(value)


def canonical_dtype(bits_allocated: int, signed: bool) -> str:
    if bits_allocated <= 8:
        width = 1
    elif bits_allocated <= 16:
        width = 2
    elif bits_allocated <= 32:
        width = 4
    else:
        width = 8
    return f"<{'i' if signed else 'u'}{width}"


def stats(arr: np.ndarray) -> list[str]:
    """min, max, mean, population std over every element, as float64 reprs."""
    a = np.asarray(arr, dtype=np.float64).ravel()
    return [repr(float(a.min())), repr(float(a.max())), repr(float(a.mean())), repr(float(a.std()))]


def row_for(root: str, rel: str) -> dict[str, str]:
    row = {c: "" for c in COLUMNS}
    row["path"] = rel
    path = os.path.join(root, *rel.split("/"))

    try:
        ds = pydicom.dcmread(path, force=True)
        sop_uid = ds.get("SOPInstanceUID")
    except Exception as exc:
        row["status"] = "unreadable"
        row["note"] = note_for(exc)
        return row
    if not sop_uid:
        row["status"] = "unreadable"
        row["note"] = "no SOPInstanceUID"
        return row

    file_meta = getattr(ds, "file_meta", None)
    tsyntax = ""
    if file_meta is not None:
        tsyntax = str_or_empty(file_meta, "TransferSyntaxUID")

    row["sop_uid"] = clean(sop_uid)
    row["transfer_syntax"] = tsyntax
    row["rows"] = int_or_empty(ds, "Rows")
    row["columns"] = int_or_empty(ds, "Columns")
    # NumberOfFrames: absent or empty -> 1; present but not an integer (e.g. '1A') -> empty.
    row["frames"] = int_or_empty(ds, "NumberOfFrames")
    if not row["frames"] and str_or_empty(ds, "NumberOfFrames") == "":
        row["frames"] = "1"
    row["samples"] = int_or_empty(ds, "SamplesPerPixel")
    row["bits_allocated"] = int_or_empty(ds, "BitsAllocated")
    row["bits_stored"] = int_or_empty(ds, "BitsStored")
    row["pixel_representation"] = int_or_empty(ds, "PixelRepresentation")
    row["photometric"] = str_or_empty(ds, "PhotometricInterpretation")
    lossy_flag = str_or_empty(ds, "LossyImageCompression")
    row["lossy"] = "1" if tsyntax in LOSSY_SYNTAXES or lossy_flag == "01" else "0"

    has_pixels = any(tag in ds for tag in PIXEL_DATA_TAGS)
    if not has_pixels or not row["rows"] or not row["columns"]:
        row["status"] = "no_pixels"
        return row

    try:
        # pydicom 3: Dataset-based decode; raw=True skips the YCbCr -> RGB conversion.
        arr = pixel_array(ds, raw=True)
    except Exception as exc:
        row["status"] = "decode_error"
        row["note"] = note_for(exc)
        return row

    row["status"] = "ok"
    row["pixel_min"], row["pixel_max"], row["pixel_mean"], row["pixel_std"] = stats(arr)

    flat = arr.ravel()
    row["p01"], row["p50"], row["p99"] = (
        str(int(np.percentile(flat, q, method="lower"))) for q in (1, 50, 99)
    )

    bits_allocated = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if arr.dtype.kind == "f":  # Float / Double Float Pixel Data (none in today's samples)
        canon = arr.astype(f"<f{bits_allocated // 8}")
    else:
        canon = arr.astype(canonical_dtype(bits_allocated, signed))
        if not np.array_equal(canon, arr):  # would mean a silent wrap-around: say so
            row["note"] = "digest: stored values do not fit the canonical integer type"
    row["pixel_digest"] = blake3.blake3(np.ascontiguousarray(canon).tobytes()).hexdigest()

    if int(ds.get("SamplesPerPixel", 1) or 1) == 1:
        try:
            mod = apply_modality_lut(arr, ds)
            (
                row["modality_min"],
                row["modality_max"],
                row["modality_mean"],
                row["modality_std"],
            ) = stats(mod)
        except Exception as exc:
            row["note"] = (row["note"] + "; " if row["note"] else "") + "modality LUT: " + note_for(exc)
    return row


def main(argv: list[str]) -> int:
    # pydicom warns about many of the deliberately broken samples; the table records outcomes.
    warnings.simplefilter("ignore")
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = argv[1]
    rels = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full):
                rels.append(os.path.relpath(full, root).replace(os.sep, "/"))
    rels.sort()

    out = sys.stdout
    out.write("\t".join(COLUMNS) + "\n")
    for rel in rels:
        row = row_for(root, rel)
        out.write("\t".join(row[c] for c in COLUMNS) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
