"""pydicom baseline for the compute benchmark (scripts/bench/compute.sh runs it).

Usage: pydicom_bench.py DIR
Single thread, warm page cache, over every *.dcm under DIR:
  header: dcmread(stop_before_pixels=True) + every attribute derive
          extracts (header_uids: + only the three UIDs)              -> files/s
  full:   dcmread + pixel_array + min/max/mean/std, percentiles and
          a BLAKE3 digest of the values (what `derive --mode full` does) -> files/s
Prints one JSON line.
"""

import json
import pathlib
import sys
import time

import blake3
import numpy as np
import pydicom


# The attributes `derive` extracts (InstanceMeta), by pydicom keyword.
FIELDS = [
    "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
    "Modality", "Rows", "Columns", "NumberOfFrames", "BitsAllocated", "BitsStored",
    "SamplesPerPixel", "PixelRepresentation", "PhotometricInterpretation", "InstanceNumber",
    "PlanarConfiguration", "FrameOfReferenceUID", "SeriesNumber", "AcquisitionNumber",
    "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "ContentDate",
    "ContentTime", "PixelSpacing", "SliceThickness", "ImagePositionPatient",
    "ImageOrientationPatient", "RescaleSlope", "RescaleIntercept", "WindowCenter",
    "WindowWidth", "ManufacturerModelName", "StationName", "ReferringPhysicianName",
    "PatientName", "PatientSex", "PatientBirthDate", "StudyDate", "StudyTime",
    "AccessionNumber", "StudyDescription", "SeriesDescription", "BodyPartExamined",
    "InstitutionName", "Manufacturer",
]


def header(path):
    """What `derive --mode header_only` extracts: every InstanceMeta attribute."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.file_meta.TransferSyntaxUID, [ds.get(k) for k in FIELDS]


def header_uids(path):
    """The least pydicom can do: parse, touch the three UIDs (values convert lazily)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID


def full(path):
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    flat = arr.ravel()
    stats = (flat.min(), flat.max(), flat.mean(), flat.std())
    pct = np.percentile(flat, [1, 50, 99], method="lower")
    digest = blake3.blake3(arr.astype("<u2").tobytes()).hexdigest()
    return stats, pct, digest


def rate(fn, files):
    for f in files[:5]:
        fn(f)  # warm-up
    t0 = time.perf_counter()
    for f in files:
        fn(f)
    return len(files) / (time.perf_counter() - t0)


def main():
    files = sorted(str(p) for p in pathlib.Path(sys.argv[1]).rglob("*.dcm"))
    print(json.dumps({
        "files": len(files),
        "header_files_per_s": round(rate(header, files), 1),
        "header_uids_files_per_s": round(rate(header_uids, files), 1),
        "full_files_per_s": round(rate(full, files), 1),
        "pydicom": pydicom.__version__,
    }))


if __name__ == "__main__":
    main()
