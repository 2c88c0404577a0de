//! `export --format csv`: the session (a live one as far as it is written) through the
//! sessions crate's CSV writer.

use std::path::Path;

use anyhow::Result;
use wsdscope_sessions::export::{self, Export, csv};

/// Writes the export into `out` (an empty staging directory); returns a one-line summary.
pub fn write(input: &Path, out: &Path) -> Result<String> {
    let e = export::read(input)?;
    let w = csv::write(&e, out)?;
    Ok(format!(
        "{} CSV files, {} rows with {} values{}",
        w.files,
        w.records,
        w.values,
        cut_note(&e)
    ))
}

/// What the summary says of a session whose writer was mid-flush.
pub(super) fn cut_note(e: &Export) -> String {
    match e.cut_at {
        Some(n) => format!(
            " (the session is still being written: its first {n} events, up to the last complete flush)"
        ),
        None => String::new(),
    }
}
