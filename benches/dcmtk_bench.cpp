// DCMTK baseline for scripts/bench/compute.sh, one thread, warm page cache, every *.dcm under
// DIR (sorted), after 5 warm-up files:
//   header: DcmFileFormat::loadFileUntilTag(PixelData) + every attribute `derive` extracts
//           (findAndGetOFStringArray)                                        -> files/s
//   full:   DcmFileFormat::loadFile + the same attributes + PixelData as explicit VR little
//           endian (chooseRepresentation: decodes compressed data; a no-op for the
//           uncompressed CT this is run on) + min / max / mean of the 16-bit
//           stored values                                                    -> files/s
// Prints one JSON line. Build: scripts/bench/compute.sh (g++ against Debian's libdcmtk-dev).
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/oflog/oflog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

static const DcmTagKey FIELDS[] = {
    DCM_PatientID, DCM_StudyInstanceUID, DCM_SeriesInstanceUID, DCM_SOPInstanceUID,
    DCM_SOPClassUID, DCM_Modality, DCM_Rows, DCM_Columns, DCM_NumberOfFrames,
    DCM_BitsAllocated, DCM_BitsStored, DCM_SamplesPerPixel, DCM_PixelRepresentation,
    DCM_PhotometricInterpretation, DCM_InstanceNumber, DCM_PlanarConfiguration,
    DCM_FrameOfReferenceUID, DCM_SeriesNumber, DCM_AcquisitionNumber, DCM_SeriesDate,
    DCM_SeriesTime, DCM_AcquisitionDate, DCM_AcquisitionTime, DCM_ContentDate,
    DCM_ContentTime, DCM_PixelSpacing, DCM_SliceThickness, DCM_ImagePositionPatient,
    DCM_ImageOrientationPatient, DCM_RescaleSlope, DCM_RescaleIntercept, DCM_WindowCenter,
    DCM_WindowWidth, DCM_ManufacturerModelName, DCM_StationName, DCM_ReferringPhysicianName,
    DCM_PatientName, DCM_PatientSex, DCM_PatientBirthDate, DCM_StudyDate, DCM_StudyTime,
    DCM_AccessionNumber, DCM_StudyDescription, DCM_SeriesDescription, DCM_BodyPartExamined,
    DCM_InstitutionName, DCM_Manufacturer,
};

static size_t attributes(DcmDataset *ds) {
    OFString value;
    size_t found = 0;
    for (const DcmTagKey &key : FIELDS)
        found += ds->findAndGetOFStringArray(key, value).good() ? 1 : 0;
    return found;
}

static bool header(const std::string &path) {
    DcmFileFormat ff;
    if (ff.loadFileUntilTag(path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength,
                            ERM_autoDetect, DCM_PixelData)
            .bad())
        return false;
    return attributes(ff.getDataset()) > 0;
}

template <typename T>
static void stats(const T *v, unsigned long n, double &sink) {
    T lo = v[0], hi = v[0];
    double sum = 0;
    for (unsigned long i = 0; i < n; i++) {
        lo = std::min(lo, v[i]);
        hi = std::max(hi, v[i]);
        sum += v[i];
    }
    sink += double(lo) + double(hi) + sum / n;
}

static bool full(const std::string &path, double &sink) {
    DcmFileFormat ff;
    if (ff.loadFile(path.c_str()).bad())
        return false;
    DcmDataset *ds = ff.getDataset();
    if (attributes(ds) == 0 || ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr).bad())
        return false;
    const Uint16 *words = nullptr;
    unsigned long count = 0;
    Uint16 signedness = 0;
    ds->findAndGetUint16(DCM_PixelRepresentation, signedness);
    if (ds->findAndGetUint16Array(DCM_PixelData, words, &count).bad() || count == 0)
        return false;
    if (signedness == 1)
        stats(reinterpret_cast<const Sint16 *>(words), count, sink);
    else
        stats(words, count, sink);
    return true;
}

template <typename F>
static double rate(const std::vector<std::string> &files, F fn) {
    for (size_t i = 0; i < files.size() && i < 5; i++)
        fn(files[i]);
    auto t0 = std::chrono::steady_clock::now();
    for (const auto &f : files)
        if (!fn(f)) {
            std::fprintf(stderr, "dcmtk_bench: failed on %s\n", f.c_str());
            std::exit(1);
        }
    std::chrono::duration<double> secs = std::chrono::steady_clock::now() - t0;
    return files.size() / secs.count();
}

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: dcmtk_bench DIR\n");
        return 2;
    }
    std::vector<std::string> files;
    for (const auto &e : std::filesystem::recursive_directory_iterator(argv[1]))
        if (e.is_regular_file() && e.path().extension() == ".dcm")
            files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    if (files.empty()) {
        std::fprintf(stderr, "dcmtk_bench: no .dcm files under %s\n", argv[1]);
        return 1;
    }
    OFLog::configure(OFLogger::ERROR_LOG_LEVEL);
    double sink = 0;
    double h = rate(files, header);
    double f = rate(files, [&](const std::string &p) { return full(p, sink); });
    std::printf("{\"files\": %zu, \"header_files_per_s\": %.1f, \"full_files_per_s\": %.1f, "
                "\"dcmtk\": \"%s\", \"checksum\": %.3f}\n",
                files.size(), h, f, OFFIS_DCMTK_VERSION_STRING, sink);
    return 0;
}
