//! The `dicom-pipeline` command (see `cli`).

fn main() -> std::process::ExitCode {
    dicom_pipeline::cli::main()
}
