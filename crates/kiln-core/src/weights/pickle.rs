//! PyTorch checkpoint reader (placeholder until the restricted unpickler lands).

use super::TensorMap;
use crate::error::{Error, Result};
use std::path::Path;

/// Reads a PyTorch `.bin`/`.pt` checkpoint without executing pickle code.
pub fn read_checkpoint(path: &Path) -> Result<TensorMap> {
    Err(Error::weights(
        path,
        "PyTorch checkpoints are not supported yet",
    ))
}
