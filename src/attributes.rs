//! The one definition of what an instance record takes from its file: every attribute once,
//! with its type, its DICOM tag and how it is read.
//!
//! [`header_attributes!`] hands the table to a macro, which expands it into:
//! - `compute::InstanceMeta`, what derivation extracts (all three groups);
//! - both readers that fill it — the dicom-rs object path (`compute/header.rs`) and the
//!   direct read (`compute/direct.rs`, whose list of wanted tags comes from here too);
//! - `model::ImageRecord`, the `dicom.image` record, the `dicom_image` row, the Doris JSON
//!   line and `derive`'s output line (the `image` group), and the copy from one to the other.
//!
//! Adding an attribute is one line below plus one column in `sql/clickhouse.sql` and one in
//! `sql/doris.sql`; tests fail if the tables and the record disagree (`sink::clickhouse::
//! schema`, `sink::doris::service`), and the extraction tests compare both readers.
//!
//! Kinds: `text(TAG)` (trimmed, `\`-joined values; empty when absent), `uid(TAG, "Name")`
//! (required: absent or empty is `missing_uid`), `int(TAG)` (null when absent or empty),
//! `int_or(TAG, default)`, `float(TAG)` (the first value, null when absent), `floats(TAG)`
//! (every value, empty when absent).

/// Pass the attribute table to `$callback!`, after `($($args)*)`.
macro_rules! header_attributes {
    ($callback:ident ! ( $($args:tt)* )) => {
        $callback! {
            ( $($args)* )
            // In the image record (and row) and in what derivation extracts.
            image {
                /// PatientID (its HMAC pseudonym with `privacy.pseudonymize`).
                patient_id: String = text(PATIENT_ID),
                study_uid: String = uid(STUDY_INSTANCE_UID, "StudyInstanceUID"),
                series_uid: String = uid(SERIES_INSTANCE_UID, "SeriesInstanceUID"),
                sop_uid: String = uid(SOP_INSTANCE_UID, "SOPInstanceUID"),
                sop_class_uid: String = text(SOP_CLASS_UID),
                modality: String = text(MODALITY),
                rows: u16 = int_or(ROWS, 0),
                columns: u16 = int_or(COLUMNS, 0),
                /// Absent NumberOfFrames means a single-frame image (PS3.3 C.7.6.6).
                number_of_frames: u32 = int_or(NUMBER_OF_FRAMES, 1),
                bits_allocated: u16 = int_or(BITS_ALLOCATED, 0),
                bits_stored: u16 = int_or(BITS_STORED, 0),
                samples_per_pixel: u16 = int_or(SAMPLES_PER_PIXEL, 0),
                pixel_representation: u16 = int_or(PIXEL_REPRESENTATION, 0),
                photometric_interpretation: String = text(PHOTOMETRIC_INTERPRETATION),
                /// Null when the file has none (never a made-up 0).
                instance_number: Option<i32> = int(INSTANCE_NUMBER),
                /// As written (`YYYYMMDD`); `study_at` is the parsed date and time.
                study_date: String = text(STUDY_DATE),
                study_time: String = text(STUDY_TIME),
                series_number: Option<i32> = int(SERIES_NUMBER),
                acquisition_number: Option<i32> = int(ACQUISITION_NUMBER),
                frame_of_reference_uid: String = text(FRAME_OF_REFERENCE_UID),
                series_date: String = text(SERIES_DATE),
                series_time: String = text(SERIES_TIME),
                acquisition_date: String = text(ACQUISITION_DATE),
                acquisition_time: String = text(ACQUISITION_TIME),
                content_date: String = text(CONTENT_DATE),
                content_time: String = text(CONTENT_TIME),
                /// Row and column spacing in mm (PixelSpacing), empty when absent.
                pixel_spacing: Vec<f64> = floats(PIXEL_SPACING),
                slice_thickness: Option<f64> = float(SLICE_THICKNESS),
                /// ImagePositionPatient (x, y, z in mm), empty when absent.
                image_position: Vec<f64> = floats(IMAGE_POSITION_PATIENT),
                /// ImageOrientationPatient (row and column direction cosines).
                image_orientation: Vec<f64> = floats(IMAGE_ORIENTATION_PATIENT),
                rescale_slope: Option<f64> = float(RESCALE_SLOPE),
                rescale_intercept: Option<f64> = float(RESCALE_INTERCEPT),
                /// First window of WindowCenter / WindowWidth.
                window_center: Option<f64> = float(WINDOW_CENTER),
                window_width: Option<f64> = float(WINDOW_WIDTH),
                manufacturer: String = text(MANUFACTURER),
                manufacturer_model: String = text(MANUFACTURER_MODEL_NAME),
                station_name: String = text(STATION_NAME),
                body_part: String = text(BODY_PART_EXAMINED),
                protocol_name: String = text(PROTOCOL_NAME),
            }
            // Extracted for the series state record (`model::StateRecord`), not per image.
            state {
                patient_name: String = text(PATIENT_NAME),
                patient_sex: String = text(PATIENT_SEX),
                patient_birth_date: String = text(PATIENT_BIRTH_DATE),
                accession_number: String = text(ACCESSION_NUMBER),
                study_description: String = text(STUDY_DESCRIPTION),
                series_description: String = text(SERIES_DESCRIPTION),
                institution: String = text(INSTITUTION_NAME),
            }
            // What the derivation itself needs, recorded nowhere.
            internal {
                planar_configuration: u16 = int_or(PLANAR_CONFIGURATION, 0),
            }
        }
    };
}
pub(crate) use header_attributes;

/// `compute::InstanceMeta`: every attribute of the table, plus `$extra` fields.
macro_rules! define_instance_meta {
    (
        ( $(#[$smeta:meta])* struct $Name:ident { $($extra:tt)* } )
        $( $group:ident { $( $(#[$doc:meta])* $field:ident : $ty:ty = $kind:ident ( $($arg:tt)* ) ),* $(,)? } )*
    ) => {
        $(#[$smeta])*
        pub struct $Name {
            $( $( $(#[$doc])* pub $field: $ty, )* )*
            $($extra)*
        }
    };
}
pub(crate) use define_instance_meta;

/// `model::ImageRecord`: the `image` group, plus `$extra` fields (with their attributes).
macro_rules! define_image_record {
    (
        ( $(#[$smeta:meta])* struct $Name:ident { $($extra:tt)* } )
        image { $( $(#[$doc:meta])* $field:ident : $ty:ty = $kind:ident ( $($arg:tt)* ) ),* $(,)? }
        $( $group:ident { $($rest:tt)* } )*
    ) => {
        $(#[$smeta])*
        pub struct $Name {
            $( $(#[$doc])* pub $field: $ty, )*
            $($extra)*
        }
    };
}
pub(crate) use define_image_record;

/// An `ImageRecord` literal: the `image` group copied from `$meta`, then `$extra` fields.
macro_rules! image_record_from {
    (
        ( $meta:expr, { $($extra:tt)* } )
        image { $( $(#[$doc:meta])* $field:ident : $ty:ty = $kind:ident ( $($arg:tt)* ) ),* $(,)? }
        $( $group:ident { $($rest:tt)* } )*
    ) => {
        $crate::model::ImageRecord {
            $( $field: $meta.$field, )*
            $($extra)*
        }
    };
}
pub(crate) use image_record_from;

/// Every tag the table reads, in table order.
macro_rules! table_tags {
    (
        ( )
        $( $group:ident { $( $(#[$doc:meta])* $field:ident : $ty:ty = $kind:ident ( $tag:ident $(, $arg:expr)* ) ),* $(,)? } )*
    ) => {
        [ $( $( ::dicom_dictionary_std::tags::$tag, )* )* ]
    };
}

/// The column names of the `image` group, in table order (for tests and docs).
macro_rules! image_fields {
    (
        ( )
        image { $( $(#[$doc:meta])* $field:ident : $ty:ty = $kind:ident ( $($arg:tt)* ) ),* $(,)? }
        $( $group:ident { $($rest:tt)* } )*
    ) => {
        [ $( stringify!($field), )* ]
    };
}

/// The tags of the table, in table order.
pub const TAGS: &[dicom_core::Tag] = &header_attributes!(table_tags!());

/// The fields of the image group, in table order.
pub const IMAGE_FIELDS: &[&str] = &header_attributes!(image_fields!());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_is_read_once_and_image_fields_are_record_columns() {
        let mut tags = TAGS.to_vec();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), TAGS.len(), "a tag read twice");
        let columns = <crate::model::ImageRecord as clickhouse::Row>::COLUMN_NAMES;
        for f in IMAGE_FIELDS {
            assert!(columns.contains(f), "{f} is not an ImageRecord column");
        }
    }
}
