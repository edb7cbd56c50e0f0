//! Weight files: a format-neutral map of named tensors, and one reader per file format.
//!
//! Readers return a [`TensorMap`] of raw little-endian bytes; architectures convert the
//! tensors they need with [`TensorMap::f32`], which checks dtype, shape and length.

pub mod ggml;
pub mod gguf;
pub mod pickle;
pub mod safetensors;

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Element types a weights file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit IEEE float.
    F64,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// 16-bit signed integer.
    I16,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer.
    U8,
    /// Boolean stored as one byte.
    Bool,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }
}

/// One tensor as stored: dtype, shape and the little-endian bytes of its elements in row-major order.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.product() * dtype.size()` bytes.
    pub data: Vec<u8>,
}

impl RawTensor {
    /// Number of elements the shape implies, or `None` on overflow.
    pub fn numel(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Converts the elements to `f32` (floats only).
    fn to_f32(&self) -> Option<Vec<f32>> {
        let d = &self.data;
        Some(match self.dtype {
            DType::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => d
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => d
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32)
                .collect(),
            _ => return None,
        })
    }
}

/// Named tensors read from one weights file.
#[derive(Debug, Default)]
pub struct TensorMap {
    path: PathBuf,
    tensors: HashMap<String, RawTensor>,
}

impl TensorMap {
    /// Wraps tensors read from `path`, checking that every tensor's byte length matches its shape.
    pub fn new(path: impl Into<PathBuf>, tensors: HashMap<String, RawTensor>) -> Result<Self> {
        let path = path.into();
        for (name, t) in &tensors {
            let expected = t.numel().and_then(|n| n.checked_mul(t.dtype.size()));
            if expected != Some(t.data.len()) {
                return Err(Error::weights(
                    &path,
                    format!(
                        "tensor `{name}` has shape {:?} of {:?} but {} bytes of data",
                        t.shape,
                        t.dtype,
                        t.data.len()
                    ),
                ));
            }
        }
        Ok(Self { path, tensors })
    }

    /// Reads a weights file, choosing the reader by file name: `.safetensors`, or a PyTorch checkpoint.
    pub fn load(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => safetensors::read(path),
            Some("bin") | Some("pt") | Some("pth") => pickle::read_checkpoint(path),
            _ => Err(Error::weights(
                path,
                "unknown weights format (expected .safetensors, .bin, .pt or .pth)",
            )),
        }
    }

    /// Parses the bytes of a weights file, choosing the reader by the file name in `path`
    /// (which only names the format and labels errors): `.safetensors`, or a PyTorch checkpoint.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => safetensors::parse(path, bytes),
            Some("bin") | Some("pt") | Some("pth") => pickle::parse_checkpoint(path, bytes),
            _ => Err(Error::weights(
                path,
                "unknown weights format (expected .safetensors, .bin, .pt or .pth)",
            )),
        }
    }

    /// The file these tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of all tensors, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The raw tensor of this name, if any.
    pub fn raw(&self, name: &str) -> Option<&RawTensor> {
        self.tensors.get(name)
    }

    /// The tensor `name` converted to `f32`, checked against the `expected` shape.
    pub fn f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let t = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })?;
        if t.shape != expected {
            return Err(Error::ShapeMismatch {
                path: self.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                actual: t.shape.clone(),
            });
        }
        t.to_f32().ok_or_else(|| {
            Error::weights(
                &self.path,
                format!("tensor `{name}` has dtype {:?}, expected a float", t.dtype),
            )
        })
    }
}
