//! A new user's first hour: exit codes, one clear line when a service is unreachable (and
//! quickly), `check`, configuration errors that name what to fix, no patient data on
//! stdout from `derive`, logs that stay quiet and JSON when asked, and `--help`.

use std::process::Command;
use std::time::{Duration, Instant};

use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec};
use dicom_pipeline::config::PrivacyConfig;
use dicom_pipeline::privacy::Pseudonymizer;

use crate::common::*;

const KEY: &str = "first-hour-test-key-0123456789abcdef";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `derive`: 0 when every file is derived, 1 when any failed, 2 when a path does not exist
/// (after deriving the others, as ripgrep does).
#[test]
fn derive_exit_codes_tell_missing_paths_from_failed_files() {
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good.dcm");
    std::fs::write(&good, ct_file_bytes(&CtSpec::default())).unwrap();
    let bad = work.path().join("bad.dcm");
    std::fs::write(&bad, b"not dicom").unwrap();
    let derive = |paths: &[&std::path::Path]| {
        let mut c = bin();
        c.args(["derive", "--mode", "header_only"]).args(paths);
        c.output().unwrap()
    };
    assert_eq!(derive(&[&good]).status.code(), Some(0));
    assert_eq!(derive(&[&good, &bad]).status.code(), Some(1));
    let missing = work.path().join("nowhere");
    let out = derive(&[&missing, &good]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nowhere: no such file or directory"));
    // The existing path was still derived.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// Every command loads the configuration: `derive` refuses a missing config file and an
/// unknown key (exit 78, the key named once), like `run` does.
#[test]
fn derive_and_synth_load_and_validate_the_configuration() {
    let work = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["--config", "/nonexistent.toml", "derive"])
        .arg(work.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent.toml"),
        "{}",
        stderr(&out)
    );

    let file = work.path().join("c.toml");
    std::fs::write(&file, "[pipeline]\nworkerz = 3\n").unwrap();
    for command in [&["derive", "."][..], &["synth", "--out", "x"][..]] {
        let out = bin()
            .arg("--config")
            .arg(&file)
            .args(command)
            .current_dir(work.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.matches("workerz").count(), 1, "named once: {err}");
        assert!(err.contains("c.toml: key `pipeline.workerz`"), "{err}");
    }
    assert!(!work.path().join("x").exists(), "synth wrote files");

    // A bad value from the environment names the variable as the user wrote it.
    let out = bin()
        .args(["--print-config", "schema"])
        .env("DICOM_PIPELINE_PIPELINE__WORKERS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(err.contains("DICOM_PIPELINE_PIPELINE__WORKERS"), "{err}");
    assert!(!err.contains("PIPELINE.WORKERS"), "{err}");
}

/// With pseudonymization on, `derive` prints the pseudonyms `run` writes, never PatientID in
/// clear (its line is the `dicom.image` record, which has no name or accession number).
#[test]
fn derive_pseudonymizes_when_the_configuration_says_so() {
    let work = tempfile::tempdir().unwrap();
    let spec = CtSpec::default();
    std::fs::write(work.path().join("a.dcm"), ct_file_bytes(&spec)).unwrap();
    let out = bin()
        .args(["derive", "--mode", "header_only"])
        .arg(work.path())
        .env("DICOM_PIPELINE_PRIVACY__PSEUDONYMIZE", "true")
        .env("DICOM_PIPELINE_PRIVACY__KEY", KEY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(&spec.patient_id), "{text}");
    assert!(!text.contains("Doe"), "{text}");
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let p = Pseudonymizer::new(&PrivacyConfig {
        pseudonymize: true,
        key: KEY.into(),
    });
    assert_eq!(line["patient_id"], p.pseudonym(&spec.patient_id));
    assert!(line.get("patient_name").is_none(), "{line}");
    // Without the setting, the clear values (what `derive` is for on a test archive).
    let out = bin().args(["derive"]).arg(work.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&spec.patient_id));
}

fn unreachable_env(c: &mut Command, port: u16) -> &mut Command {
    c.env("KAFKA_BROKERS", format!("127.0.0.1:{port}"))
        .env("DICOM_PIPELINE_CLICKHOUSE__DATABASE", "first_hour_none")
}

/// A broker nobody answers: every command that needs it fails within about 10 s with one
/// line naming the address and the cause — no librdkafka error flood — and a SIGTERM during
/// `run`'s start-up is honoured at once. (Before: `run` was silent for 60 s and then named
/// neither; SIGTERM at 20 s waited until 60 s; `status` printed 196 `AllBrokersDown` lines.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_named_within_seconds() {
    let port = free_port();
    let root = tempfile::tempdir().unwrap();
    for args in [
        vec!["schema"],
        vec!["lag"],
        vec!["status"],
        vec!["verify"],
        vec!["run", "--storage-root", root.path().to_str().unwrap()],
    ] {
        let mut c = bin();
        unreachable_env(&mut c, port).args(&args);
        let started = Instant::now();
        let out = output_of(c).await;
        let took = started.elapsed();
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(took < Duration::from_secs(15), "{args:?} took {took:?}");
        assert!(
            err.contains(&format!("127.0.0.1:{port}")),
            "{args:?}: no address in {err}"
        );
        assert!(
            err.contains("Connection refused") || err.contains("refused"),
            "{args:?}: no cause in {err}"
        );
        assert!(
            err.matches("AllBrokersDown").count() <= 1 && err.lines().count() <= 6,
            "{args:?}: a flood of {} lines:\n{err}",
            err.lines().count()
        );
    }
    // SIGTERM 2 s into the start-up: gone at once, exit 0, nothing consumed.
    let mut c = bin();
    unreachable_env(&mut c, port)
        .args(["run", "--storage-root", root.path().to_str().unwrap()])
        .stderr(std::process::Stdio::piped());
    let mut p = Proc::spawn(c);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopping = Instant::now();
    sigterm(p.id());
    let status = p.wait(Duration::from_secs(10)).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "took {:?}",
        stopping.elapsed()
    );
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// An unreachable ClickHouse is named by its URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_clickhouse_is_named_by_its_url() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut c = bin();
    c.args(["schema"])
        .env("KAFKA_BROKERS", brokers())
        .env("CLICKHOUSE_URL", &url);
    let started = Instant::now();
    let out = output_of(c).await;
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(15));
    let err = stderr(&out);
    assert!(err.contains("ClickHouse") && err.contains(&url), "{err}");
}

/// `check`: one line per check; 0 when everything `run` needs is there, 78 otherwise, with
/// the failing line saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lists_what_run_needs_and_fails_with_78() {
    let root = tempfile::tempdir().unwrap();
    let cfg = test_config(2, vec![root.path().to_path_buf()]);
    let check = |cfg: &dicom_pipeline::config::Config, extra: &[&str]| {
        let mut c = bin();
        kafka_env(&mut c, cfg)
            .env("CLICKHOUSE_URL", &cfg.clickhouse.url)
            .env(
                "DICOM_PIPELINE_CLICKHOUSE__DATABASE",
                &cfg.clickhouse.database,
            )
            .args(["check", "--storage-root", root.path().to_str().unwrap()])
            .args(extra);
        c
    };
    // Nothing created yet: topics and tables missing.
    let out = output_of(check(&cfg, &[])).await;
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("ok    kafka:"), "{text}");
    assert!(
        text.contains(&format!("FAIL  topic {}: missing", cfg.kafka.input_topic)),
        "{text}"
    );
    assert!(text.contains("FAIL  table dicom_image: missing"), "{text}");
    assert!(text.contains("dicom-pipeline schema"), "{text}");

    dicom_pipeline::pipeline::ensure_schema(&cfg).await.unwrap();
    let out = output_of(check(&cfg, &[])).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok")).count(),
        13,
        "{text}"
    );

    // A column the sink writes, gone: named.
    ch(&cfg)
        .query("ALTER TABLE dicom_store DROP COLUMN sop_uid")
        .execute()
        .await
        .unwrap();
    let mut c = check(&cfg, &[]);
    c.arg("--storage-root").arg("/nonexistent-root");
    let out = output_of(c).await;
    assert_eq!(out.status.code(), Some(78));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("FAIL  table dicom_store: lacks columns sop_uid"),
        "{text}"
    );
    assert!(
        text.contains("FAIL  storage root /nonexistent-root"),
        "{text}"
    );
    drop_database(&cfg).await;
}

/// Logs: a JPEG 2000 file adds no codec INFO lines by default; `--log-level debug` turns on
/// this program's debug lines only; with `--log-format json` every stderr line is JSON, the
/// summary included.
#[test]
fn logs_are_quiet_by_default_and_json_when_asked() {
    let j2k = samples_dir().join("pydicom/MR_small_jp2klossless.dcm");
    let out = bin().args(["derive"]).arg(&j2k).output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("jpeg2k"), "{err}");
    assert_eq!(err.lines().count(), 1, "only the summary: {err}");

    let out = bin()
        .args(["--log-format", "json", "derive"])
        .arg(&j2k)
        .arg("/nonexistent")
        .output()
        .unwrap();
    let err = stderr(&out);
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.is_object(), "{line}");
    }
    assert!(err.contains("\"summary\":\"derive\""), "{err}");
}

/// `--help`: global options under their own heading, every flag described, examples;
/// `--print-config run` without a root prints the configuration and what is missing, and
/// `--print-config synth` writes nothing.
#[test]
fn help_and_print_config_help_a_newcomer() {
    let help = |args: &[&str]| {
        String::from_utf8_lossy(&bin().args(args).arg("--help").output().unwrap().stdout)
            .into_owned()
    };
    let synth = help(&["synth"]);
    let own = synth.split("Global options").next().unwrap();
    assert!(
        !own.contains("--brokers") && !own.contains("--group"),
        "{synth}"
    );
    assert!(synth.contains("Global options"), "{synth}");
    assert!(synth.contains("Example"), "{synth}");
    for line in own.lines().filter(|l| l.trim_start().starts_with("--")) {
        assert!(
            line.split("  ").filter(|p| !p.trim().is_empty()).count() >= 2,
            "undescribed flag: {line}"
        );
    }
    assert!(help(&[]).contains("Examples:"));
    assert!(help(&["derive"]).contains("Exits 0 when every file was derived"));

    let out = bin().args(["--print-config", "run"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[kafka]"), "{text}");
    assert!(
        text.contains("# run would not start as configured"),
        "{text}"
    );
    assert!(text.contains("storage-root"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["--print-config", "synth", "--out"])
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!dir.path().join("s").exists());
}
