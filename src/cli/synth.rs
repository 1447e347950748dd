//! `synth`: write synthetic instances for load tests.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};

use super::args::SynthArgs;
use super::Output;
use crate::compute::synth::{ct_file_bytes, CtSpec};

pub fn synth(a: &SynthArgs, out: Output) -> Result<ExitCode> {
    let started = Instant::now();
    let mut files = 0u64;
    let mut bytes = 0u64;
    for p in 1..=a.patients {
        for st in 1..=a.studies_per_patient {
            for se in 1..=a.series_per_study {
                let dir = a.out.join(format!("p{p:06}/st{st:03}/se{se:03}"));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                for i in 1..=a.instances_per_series {
                    let spec = CtSpec {
                        rows: a.rows,
                        columns: a.columns,
                        transfer_syntax: a.transfer_syntax,
                        modality: a.modality.clone(),
                        ..CtSpec::numbered(&a.uid_root, p, st, se, i)
                    };
                    let data = ct_file_bytes(&spec);
                    let path = dir.join(format!("i{i:05}.dcm"));
                    std::fs::write(&path, &data)
                        .with_context(|| format!("writing {}", path.display()))?;
                    files += 1;
                    bytes += data.len() as u64;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = files as f64 / secs.max(1e-9);
    out.summary(
        "synth",
        &format!(
            "synth: files={files} bytes={bytes} elapsed={secs:.1}s rate={rate:.0}/s out={}",
            a.out.display()
        ),
        serde_json::json!({
            "files": files,
            "bytes": bytes,
            "elapsed_s": secs,
            "rate_per_s": rate,
            "out": a.out.display().to_string(),
        }),
    );
    Ok(ExitCode::SUCCESS)
}
