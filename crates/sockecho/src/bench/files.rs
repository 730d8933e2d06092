//! `report merge` and `report plot`'s inputs: `bench --json` files (or
//! `--json-stream` files, by their `end` line) read and merged, one file
//! given twice refused.

use sockecho_measure::report::BenchReport;

use crate::error::Error;

/// Reads `bench --json` files and merges them into one report, with what
/// to warn of ([`sockecho_measure::merge::merge_named`]): inputs that
/// measured different things are refused, naming both.
///
/// One file given twice, under any name (`a.json ./a.json`, a link), is
/// refused ([`Error::Config`]): its run would count twice.
pub fn merge_files(paths: &[std::path::PathBuf]) -> Result<sockecho_measure::merge::Merged, Error> {
    merge_reports(&read_reports(paths, true)?)
}

/// Merges reports read by [`read_reports`]: inputs that measured different
/// things are refused ([`Error::Config`], naming both).
pub fn merge_reports(
    inputs: &[(String, BenchReport)],
) -> Result<sockecho_measure::merge::Merged, Error> {
    sockecho_measure::merge::merge_named(inputs).map_err(|e| match e {
        // Already `cannot merge B with A: WHY`.
        e @ sockecho_measure::report::ReportError::Incompatible { .. } => {
            Error::Config(e.to_string())
        }
        e => Error::invalid("cannot merge the reports", &e),
    })
}

/// Reads `bench --json` files, each named as given. With `distinct`, one
/// file given twice under any name is refused ([`Error::Config`]).
pub fn read_reports(
    paths: &[std::path::PathBuf],
    distinct: bool,
) -> Result<Vec<(String, BenchReport)>, Error> {
    use std::os::unix::fs::MetadataExt as _;
    let mut seen: Vec<((u64, u64), &std::path::Path)> = Vec::with_capacity(paths.len());
    for path in paths.iter().filter(|_| distinct) {
        // A file that cannot be read is reported below, when reading it.
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let file = (meta.dev(), meta.ino());
        if let Some((_, first)) = seen.iter().find(|(id, _)| *id == file) {
            return Err(Error::Config(format!(
                "cannot merge {} with {}: it is the same file, whose run would count twice",
                path.display(),
                first.display()
            )));
        }
        seen.push((file, path));
    }
    let mut reports = Vec::with_capacity(paths.len());
    for path in paths {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read {what}"), e))?;
        // A `--json-stream` file: its report is the `end` event's line.
        let end = text
            .lines()
            .rev()
            .find(|line| line.trim_start().starts_with(r#"{"event":"end""#));
        let report =
            BenchReport::from_json(end.unwrap_or(&text)).map_err(|e| Error::invalid(&what, &e))?;
        reports.push((what, report));
    }
    Ok(reports)
}
