//! SafeTensors reader, built on the `safetensors` crate (which validates header and offsets).

use super::{DType, RawTensor, TensorMap};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Reads every tensor of a `.safetensors` file.
pub fn read(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes)
}

/// Parses the bytes of a `.safetensors` file; `path` only labels errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<TensorMap> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::weights(path, format!("not a valid safetensors file: {e}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::I64 => DType::I64,
            safetensors::Dtype::I32 => DType::I32,
            safetensors::Dtype::I16 => DType::I16,
            safetensors::Dtype::I8 => DType::I8,
            safetensors::Dtype::U8 => DType::U8,
            safetensors::Dtype::BOOL => DType::Bool,
            other => {
                return Err(Error::weights(
                    path,
                    format!("tensor `{name}` has unsupported dtype {other:?}"),
                ))
            }
        };
        tensors.insert(
            name,
            RawTensor {
                dtype,
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
            },
        );
    }
    TensorMap::new(path, tensors)
}
