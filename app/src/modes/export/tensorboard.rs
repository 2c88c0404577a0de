//! `export --format tensorboard` (not written yet).

use std::path::Path;

use anyhow::{Result, bail};

/// Writes the export into `out` (an empty staging directory); returns a one-line summary.
pub fn write(input: &Path, _out: &Path) -> Result<String> {
    bail!(
        "--format tensorboard is not available yet ({})",
        input.display()
    )
}
