//! GGUF (v2 and v3) files: metadata, tensor descriptions, and the bytes of each tensor.
//!
//! The parser trusts nothing in the file: every count is bounded by the bytes that remain,
//! every tensor must lie inside the data section, and every error names what is wrong.

use super::ggml::GgmlType;
use crate::error::{Error, Result};
use kiln_kernels::quant::QuantFormat;
use kiln_kernels::quant_packed;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (ggml's own limit).
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// Unsigned integer (u8, u16, u32 or u64 in the file).
    UInt(u64),
    /// Signed integer (i8, i16, i32 or i64 in the file).
    Int(i64),
    /// Float (f32 or f64 in the file).
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array of values.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            MetaValue::UInt(v) => Some(*v),
            MetaValue::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MetaValue::Float(v) => Some(*v),
            MetaValue::UInt(v) => Some(*v as f64),
            MetaValue::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array, if it is one.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// Where one tensor lies and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Dimensions, outermost first (GGUF stores them innermost first).
    pub shape: Vec<usize>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Byte offset from the start of the file.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// Whether [`GgufFile::pack_for_kernels`] rearranged the bytes into kiln-kernels' packed
    /// layout (readers of this crate unpack them where they need ggml's).
    pub packed: bool,
}

impl GgufTensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed GGUF file, holding its bytes.
pub struct GgufFile {
    path: PathBuf,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata, sorted by key.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensors in file order.
    pub tensors: Vec<GgufTensorInfo>,
    bytes: std::sync::Arc<Vec<u8>>,
}

impl GgufFile {
    /// Reads and parses a `.gguf` file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, bytes)
    }

    /// Parses the bytes of a GGUF file; `path` only labels errors.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let fail = |m: String| Error::weights(path, m);
        let mut r = Reader {
            bytes: &bytes,
            pos: 0,
        };
        if r.take(4).map_err(&fail)? != MAGIC {
            return Err(fail(
                "not a GGUF file (the magic bytes are not `GGUF`)".into(),
            ));
        }
        let version = r.u32().map_err(&fail)?;
        if !(2..=3).contains(&version) {
            return Err(fail(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        // A tensor description takes at least 32 bytes (name length, one dimension, type,
        // offset); a metadata entry at least 13 (key length, type, one byte of value).
        let tensor_count = r.count("tensor count", 32).map_err(&fail)?;
        let kv_count = r.count("metadata count", 13).map_err(&fail)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string().map_err(&fail)?;
            let ty = r.u32().map_err(&fail)?;
            let value = r
                .value(ty, 0)
                .map_err(|m| fail(format!("metadata `{key}`: {m}")))?;
            if metadata.contains_key(&key) {
                return Err(fail(format!("metadata key `{key}` appears twice")));
            }
            metadata.insert(key, value);
        }
        let mut raw = Vec::with_capacity(tensor_count);
        let mut names = std::collections::HashSet::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let name = r.string().map_err(&fail)?;
            if !names.insert(name.clone()) {
                return Err(fail(format!("tensor `{name}` appears twice")));
            }
            let n_dims = r.u32().map_err(&fail)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(fail(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = r.u64().map_err(&fail)?;
                dims.push(
                    usize::try_from(d)
                        .map_err(|_| fail(format!("tensor `{name}` is too large")))?,
                );
            }
            let ty = r.u32().map_err(&fail)?;
            let ggml_type = GgmlType::from_id(ty)
                .ok_or_else(|| fail(format!("tensor `{name}` has unknown ggml type {ty}")))?;
            let offset = r.u64().map_err(&fail)?;
            dims.reverse();
            raw.push((name, dims, ggml_type, offset));
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .filter(|a| *a > 0 && a.is_power_of_two())
                .ok_or_else(|| fail("general.alignment is not a power of two".into()))?,
        };
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, shape, ggml_type, offset) in raw {
            let numel = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| fail(format!("tensor `{name}`: element count overflows")))?;
            let size = ggml_type
                .byte_size(numel, shape.last().copied().unwrap_or(1))
                .map_err(|m| fail(format!("tensor `{name}`: {m}")))?;
            if !offset.is_multiple_of(alignment) {
                return Err(fail(format!(
                    "tensor `{name}`: offset {offset} is not aligned to {alignment}"
                )));
            }
            let start = data_start
                .checked_add(offset)
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| fail(format!("tensor `{name}`: offset overflows")))?;
            let end = start
                .checked_add(size)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| {
                    fail(format!(
                        "tensor `{name}` ({size} bytes at offset {start}) runs past the end of the file ({} bytes): truncated or corrupt",
                        bytes.len()
                    ))
                })?;
            debug_assert!(end <= bytes.len());
            tensors.push(GgufTensorInfo {
                name,
                shape,
                ggml_type,
                offset: start,
                size,
                packed: false,
            });
        }
        check_overlaps(&tensors).map_err(fail)?;
        Ok(Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            bytes: std::sync::Arc::new(bytes),
        })
    }

    /// The file the tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata value of `key`.
    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// The description of the tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The whole file's bytes, shared (layers that keep their blocks as stored point into it
    /// instead of copying them; tensor offsets index it).
    pub fn shared_bytes(&self) -> std::sync::Arc<Vec<u8>> {
        self.bytes.clone()
    }

    /// The bytes of a tensor as held: as stored, or packed if `info.packed` (bounds were
    /// checked when parsing).
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> &[u8] {
        &self.bytes[info.offset..info.offset + info.size]
    }

    /// The bytes of a tensor in ggml's layout (unpacked into a copy if it was packed).
    fn ggml_bytes(&self, info: &GgufTensorInfo) -> std::borrow::Cow<'_, [u8]> {
        let held = self.tensor_bytes(info);
        match (info.packed, packed_format(info.ggml_type)) {
            (true, Some(format)) => {
                let mut bytes = held.to_vec();
                quant_packed::unpack_in_place(format, info.shape[0], info.shape[1], &mut bytes);
                bytes.into()
            }
            _ => held.into(),
        }
    }

    /// Packs, in place, every matrix that this CPU multiplies faster in kiln-kernels' packed
    /// layout (Q4_1, Q5_0, Q8_0, Q4_K and Q6_K on AVX-512 VNNI, see `kiln_kernels::quant_packed`),
    /// and returns how many. Does nothing while the bytes are shared (after
    /// [`Self::shared_bytes`]).
    pub fn pack_for_kernels(&mut self) -> usize {
        self.pack_matrices(quant_packed::packs)
    }

    /// Packs, in place, every matrix that has a packed layout and for which `choose(format,
    /// out_features, in_features)` holds; returns how many. Does nothing while the bytes are
    /// shared.
    pub fn pack_matrices(&mut self, choose: impl Fn(QuantFormat, usize, usize) -> bool) -> usize {
        let Some(bytes) = std::sync::Arc::get_mut(&mut self.bytes) else {
            return 0;
        };
        let mut count = 0;
        for t in &mut self.tensors {
            let Some(format) = packed_format(t.ggml_type) else {
                continue;
            };
            if t.packed
                || t.shape.len() != 2
                || !quant_packed::packable(format, t.shape[0], t.shape[1])
                || !choose(format, t.shape[0], t.shape[1])
            {
                continue;
            }
            quant_packed::pack_in_place(
                format,
                t.shape[0],
                t.shape[1],
                &mut bytes[t.offset..t.offset + t.size],
            );
            t.packed = true;
            count += 1;
        }
        count
    }

    /// The tensor `name` dequantized to `f32`, checked against the `expected` shape.
    pub fn f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let info = self.tensor(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })?;
        if info.shape != expected {
            return Err(Error::ShapeMismatch {
                path: self.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                actual: info.shape.clone(),
            });
        }
        info.ggml_type
            .dequantize(&self.ggml_bytes(info), info.numel())
            .map_err(|m| Error::weights(&self.path, format!("tensor `{name}`: {m}")))
    }

    /// Total number of weights over all tensors.
    pub fn parameter_count(&self) -> usize {
        self.tensors.iter().map(GgufTensorInfo::numel).sum()
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// The kiln-kernels format of a ggml type that has a packed layout.
fn packed_format(t: GgmlType) -> Option<QuantFormat> {
    match t {
        GgmlType::Q4_1 => Some(QuantFormat::Q4_1),
        GgmlType::Q5_0 => Some(QuantFormat::Q5_0),
        GgmlType::Q8_0 => Some(QuantFormat::Q8_0),
        GgmlType::Q4K => Some(QuantFormat::Q4K),
        GgmlType::Q6K => Some(QuantFormat::Q6K),
        _ => None,
    }
}

/// The fewest bytes a metadata value of type `ty` takes in the file.
fn value_min_bytes(ty: u32) -> usize {
    match ty {
        2 | 3 => 2,
        4..=6 => 4,
        // Strings and arrays start with a u64 length.
        8..=12 => 8,
        _ => 1,
    }
}

/// Refuses tensors whose bytes overlap: each stored byte belongs to at most one tensor, so a
/// small file cannot describe many large tensors over the same bytes.
fn check_overlaps(tensors: &[GgufTensorInfo]) -> std::result::Result<(), String> {
    let mut spans: Vec<(usize, usize, &str)> = tensors
        .iter()
        .filter(|t| t.size > 0)
        .map(|t| (t.offset, t.offset + t.size, t.name.as_str()))
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        let ((_, end, a), (start, _, b)) = (pair[0], pair[1]);
        if start < end {
            return Err(format!(
                "tensors `{a}` and `{b}` overlap in the file (bytes {start}..{end})"
            ));
        }
    }
    Ok(())
}

/// A cursor over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type Step<T> = std::result::Result<T, String>;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated: needs {n} more bytes at offset {}", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Step<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Step<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items of at least `min_item_bytes` each, bounded by the bytes that remain.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Step<usize> {
        let n = self.u64()?;
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n > remaining / min_item_bytes.max(1) as u64 {
            return Err(format!("{what} {n} is more than the file can hold"));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Step<String> {
        let n = self.count("string length", 1)?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "a string is not valid UTF-8".to_string())
    }

    fn value(&mut self, ty: u32, depth: u32) -> Step<MetaValue> {
        Ok(match ty {
            0 => MetaValue::UInt(self.array::<1>()?[0].into()),
            1 => MetaValue::Int((self.array::<1>()?[0] as i8).into()),
            2 => MetaValue::UInt(u16::from_le_bytes(self.array()?).into()),
            3 => MetaValue::Int(i16::from_le_bytes(self.array()?).into()),
            4 => MetaValue::UInt(self.u32()?.into()),
            5 => MetaValue::Int(i32::from_le_bytes(self.array()?).into()),
            6 => MetaValue::Float(f32::from_le_bytes(self.array()?).into()),
            7 => MetaValue::Bool(self.array::<1>()?[0] != 0),
            8 => MetaValue::String(self.string()?),
            9 => {
                if depth > 0 {
                    return Err("nested arrays are not supported".into());
                }
                let item_ty = self.u32()?;
                let n = self.count("array length", value_min_bytes(item_ty))?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(item_ty, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::UInt(self.u64()?),
            11 => MetaValue::Int(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.array()?)),
            other => return Err(format!("unknown value type {other}")),
        })
    }
}
