//! `backfill`'s command-line values: `--source NAME=PATH` and `--rate [NAME=]N`, and how
//! they (with the plain PATHs) become the list of [`Source`]s to walk.

use std::path::PathBuf;
use std::str::FromStr;

use thiserror::Error;

use super::Source;

/// A bad `backfill` argument. All permanent: the command line has to change.
#[derive(Debug, Error, PartialEq)]
pub enum ArgError {
    #[error("--source `{given}`: expected NAME=PATH")]
    ParseSource { given: String },
    #[error(
        "source name `{name}`: expected 1 to {MAX_NAME_LEN} characters, no `=`, no spaces or control characters"
    )]
    ParseSourceName { name: String },
    #[error("--rate `{given}`: expected N or NAME=N, N files per second (a number > 0, at most {MAX_RATE})")]
    ParseRate { given: String },
    #[error("--rate {name}=…: no source is named `{name}` (sources: {known})")]
    MatchRateSource { name: String, known: String },
    #[error("--rate is given twice for {which}")]
    DuplicateRate { which: String },
    #[error("nothing to walk: give PATHs and/or --source NAME=PATH")]
    NoSources,
    #[error("--max-unacked must be at least 1")]
    MaxUnacked,
}

/// Longest source name (it is the `source` column of every row of that source).
pub const MAX_NAME_LEN: usize = 128;
/// Highest `--rate` accepted (files per second); above it the limit means nothing.
pub const MAX_RATE: f64 = 1_000_000.0;

/// `--source NAME=PATH`: split at the first `=` (names cannot contain one, paths can).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceArg {
    pub name: String,
    pub path: PathBuf,
}

impl FromStr for SourceArg {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        let bad = || ArgError::ParseSource { given: s.into() };
        let (name, path) = s.split_once('=').ok_or_else(bad)?;
        if path.is_empty() {
            return Err(bad());
        }
        Ok(SourceArg {
            name: check_name(name)?.into(),
            path: PathBuf::from(path),
        })
    }
}

/// `--rate N` (every source) or `--rate NAME=N` (that source), in files per second.
#[derive(Debug, Clone, PartialEq)]
pub enum RateArg {
    All(f64),
    Named(String, f64),
}

impl FromStr for RateArg {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        let bad = || ArgError::ParseRate { given: s.into() };
        let number = |n: &str| {
            n.trim()
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0 && *r <= MAX_RATE)
                .ok_or_else(bad)
        };
        match s.split_once('=') {
            Some((name, n)) => {
                let name = check_name(name).map_err(|_| bad())?;
                Ok(RateArg::Named(name.into(), number(n)?))
            }
            None => Ok(RateArg::All(number(s)?)),
        }
    }
}

fn check_name(name: &str) -> Result<&str, ArgError> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_LEN
        && !name
            .chars()
            .any(|c| c == '=' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(name)
    } else {
        Err(ArgError::ParseSourceName { name: name.into() })
    }
}

/// The sources of one backfill, in order of first mention: the plain `paths` form the source
/// `default_name` (`pipeline.source`), each `--source` names one; a name given more than once
/// walks all its paths, in order. A bare rate applies to every source that has no rate of
/// its own.
pub fn plan_sources(
    default_name: &str,
    paths: &[PathBuf],
    sources: &[SourceArg],
    rates: &[RateArg],
) -> Result<Vec<Source>, ArgError> {
    let mut out: Vec<Source> = Vec::new();
    let mut add = |name: &str, path: &PathBuf| match out.iter_mut().find(|s| s.name == name) {
        Some(s) => s.roots.push(path.clone()),
        None => out.push(Source {
            name: name.into(),
            roots: vec![path.clone()],
            rate: None,
        }),
    };
    for p in paths {
        add(default_name, p);
    }
    for s in sources {
        add(&s.name, &s.path);
    }
    if out.is_empty() {
        return Err(ArgError::NoSources);
    }
    let mut all = None;
    for r in rates {
        match r {
            RateArg::All(n) => {
                if all.replace(*n).is_some() {
                    return Err(ArgError::DuplicateRate {
                        which: "every source (a bare N)".into(),
                    });
                }
            }
            RateArg::Named(name, n) => {
                let known = out
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let Some(s) = out.iter_mut().find(|s| &s.name == name) else {
                    return Err(ArgError::MatchRateSource {
                        name: name.clone(),
                        known,
                    });
                };
                if s.rate.replace(*n).is_some() {
                    return Err(ArgError::DuplicateRate {
                        which: format!("source `{name}`"),
                    });
                }
            }
        }
    }
    if let Some(n) = all {
        for s in &mut out {
            s.rate.get_or_insert(n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_args_split_at_the_first_equals_sign() {
        let s: SourceArg = "pacs-a=/mnt/a=b".parse().unwrap();
        assert_eq!(
            (s.name.as_str(), s.path),
            ("pacs-a", PathBuf::from("/mnt/a=b"))
        );
        for bad in ["", "pacs", "=/mnt/a", "pacs=", "pa cs=/x", "p\tq=/x"] {
            let err = bad.parse::<SourceArg>().unwrap_err();
            assert!(
                matches!(
                    err,
                    ArgError::ParseSource { .. } | ArgError::ParseSourceName { .. }
                ),
                "{bad}: {err}"
            );
            assert!(!err.to_string().is_empty());
        }
        let long = format!("{}=/x", "n".repeat(MAX_NAME_LEN + 1));
        assert!(long.parse::<SourceArg>().is_err());
        assert_eq!(
            "x".parse::<SourceArg>().unwrap_err().to_string(),
            "--source `x`: expected NAME=PATH"
        );
    }

    #[test]
    fn rate_args_are_bare_or_named_and_positive() {
        assert_eq!("30".parse::<RateArg>().unwrap(), RateArg::All(30.0));
        assert_eq!("0.5".parse::<RateArg>().unwrap(), RateArg::All(0.5));
        assert_eq!(
            "pacs=12.5".parse::<RateArg>().unwrap(),
            RateArg::Named("pacs".into(), 12.5)
        );
        for bad in [
            "", "0", "-3", "fast", "NaN", "inf", "1e9", "pacs=", "=5", "pacs=0", "a b=3",
        ] {
            let err = bad.parse::<RateArg>().unwrap_err();
            assert_eq!(err, ArgError::ParseRate { given: bad.into() }, "{bad}");
            assert!(err.to_string().contains("files per second"), "{err}");
        }
    }

    fn src(name: &str, path: &str) -> SourceArg {
        SourceArg {
            name: name.into(),
            path: path.into(),
        }
    }

    #[test]
    fn paths_and_sources_become_named_sources_with_their_rates() {
        let plan = plan_sources(
            "backfill",
            &["/p1".into(), "/p2".into()],
            &[src("a", "/a1"), src("b", "/b"), src("a", "/a2")],
            &[RateArg::Named("b".into(), 5.0), RateArg::All(30.0)],
        )
        .unwrap();
        let got: Vec<(&str, Vec<&str>, Option<f64>)> = plan
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.roots.iter().map(|r| r.to_str().unwrap()).collect(),
                    s.rate,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("backfill", vec!["/p1", "/p2"], Some(30.0)),
                ("a", vec!["/a1", "/a2"], Some(30.0)),
                ("b", vec!["/b"], Some(5.0)),
            ]
        );
        // No rate: unlimited.
        let plan = plan_sources("backfill", &["/p".into()], &[], &[]).unwrap();
        assert_eq!(plan[0].rate, None);
    }

    #[test]
    fn bad_plans_are_explained() {
        assert_eq!(
            plan_sources("backfill", &[], &[], &[]).unwrap_err(),
            ArgError::NoSources
        );
        let err = plan_sources(
            "backfill",
            &[],
            &[src("a", "/a")],
            &[RateArg::Named("x".into(), 1.0)],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--rate x=…: no source is named `x` (sources: a)"
        );
        let err = plan_sources(
            "backfill",
            &[],
            &[src("a", "/a")],
            &[RateArg::All(1.0), RateArg::All(2.0)],
        )
        .unwrap_err();
        assert!(matches!(err, ArgError::DuplicateRate { .. }), "{err}");
        let err = plan_sources(
            "backfill",
            &[],
            &[src("a", "/a")],
            &[
                RateArg::Named("a".into(), 1.0),
                RateArg::Named("a".into(), 2.0),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("source `a`"), "{err}");
    }
}
