//! PyTorch checkpoints (`pytorch_model.bin`, `.pt`) read without executing any pickle code.
//!
//! `torch.save` writes a zip archive: `<prefix>/data.pkl` (a pickle describing the state
//! dict) and `<prefix>/data/<key>` (the raw bytes of each storage). Python's unpickler would
//! import and call whatever the pickle names; this one is a small stack machine that knows the
//! opcodes state dicts use and resolves names only against an allow-list of the few torch
//! helpers that rebuild tensors. Anything else (`os.system`, `builtins.eval`, ...) is refused
//! with an error that names it. Every length and offset is checked, so a hostile or truncated
//! file is an error, never a panic or an unbounded allocation.

use super::{DType, RawTensor, TensorMap};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Most values on the unpickler's stack, memo entries, or container nesting levels.
const MAX_STACK: usize = 1 << 20;
const MAX_MEMO: usize = 1 << 20;
const MAX_DEPTH: usize = 64;
/// Largest `data.pkl` accepted (state-dict pickles are kilobytes to a few megabytes).
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// All entries of a checkpoint together may expand to this many times the archive's size
/// (plus [`EXPANSION_SLACK`]): `torch.save` stores entries uncompressed, so a real checkpoint
/// expands about 1×, while a zip bomb would make a small file demand gigabytes.
const MAX_EXPANSION: u64 = 4;

/// Bytes every archive may expand by beyond [`MAX_EXPANSION`] times its size.
const EXPANSION_SLACK: u64 = 64 << 20;

/// A callable or class the pickle may name: the allow-list.
#[derive(Debug, Clone, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Storage(DType),
}

fn resolve_global(module: &str, name: &str) -> std::result::Result<Global, String> {
    let storage = |d| Ok(Global::Storage(d));
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => Ok(Global::RebuildParameter),
        ("torch", "FloatStorage") => storage(DType::F32),
        ("torch", "HalfStorage") => storage(DType::F16),
        ("torch", "BFloat16Storage") => storage(DType::BF16),
        ("torch", "DoubleStorage") => storage(DType::F64),
        ("torch", "LongStorage") => storage(DType::I64),
        ("torch", "IntStorage") => storage(DType::I32),
        ("torch", "ShortStorage") => storage(DType::I16),
        ("torch", "CharStorage") => storage(DType::I8),
        ("torch", "ByteStorage") => storage(DType::U8),
        ("torch", "BoolStorage") => storage(DType::Bool),
        _ => Err(format!(
            "refused to load: the pickle references `{module}.{name}`, which kiln never calls \
             (only torch's tensor-rebuilding helpers are allowed)"
        )),
    }
}

/// A storage named by a persistent id: its element type and archive key.
#[derive(Debug, Clone, PartialEq)]
struct StorageRef {
    dtype: DType,
    key: String,
}

/// A tensor view onto a storage.
#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// The values the restricted unpickler can build.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>, usize),
    List(Vec<Value>, usize),
    Dict(Vec<(Value, Value)>, usize),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    /// Container nesting depth (scalars are 0).
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(_, d) | Value::List(_, d) | Value::Dict(_, d) => *d,
            _ => 0,
        }
    }
}

fn nested_depth<'a>(items: impl Iterator<Item = &'a Value>) -> usize {
    1 + items.map(Value::depth).max().unwrap_or(0)
}

/// Reads a PyTorch zip checkpoint without executing pickle code.
pub fn read_checkpoint(path: &Path) -> Result<TensorMap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    load_zip(path, file)
}

/// Parses the bytes of a PyTorch zip checkpoint without executing pickle code; `path` only
/// labels errors (for checkpoints already in memory, and for fuzzing).
pub fn parse_checkpoint(path: &Path, bytes: &[u8]) -> Result<TensorMap> {
    load_zip(path, std::io::Cursor::new(bytes))
}

fn load_zip<R: Read + std::io::Seek>(path: &Path, mut reader: R) -> Result<TensorMap> {
    use std::io::SeekFrom;
    let archive_len = reader
        .seek(SeekFrom::End(0))
        .and_then(|len| reader.seek(SeekFrom::Start(0)).map(|_| len))
        .map_err(|e| Error::io(path, e))?;
    let mut budget = Budget {
        left: archive_len
            .saturating_mul(MAX_EXPANSION)
            .saturating_add(EXPANSION_SLACK),
        archive_len,
    };
    let mut zip = zip::ZipArchive::new(reader).map_err(|_| {
        Error::weights(
            path,
            "not a zip-format PyTorch checkpoint; legacy (pre-1.6) checkpoints are not supported: \
             re-save it with a current torch.save, or convert it to model.safetensors",
        )
    })?;
    let pickle_name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .ok_or_else(|| Error::weights(path, "the archive has no <name>/data.pkl"))?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut entry) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut order = String::new();
        entry
            .by_ref()
            .take(16)
            .read_to_string(&mut order)
            .map_err(|e| Error::weights(path, format!("reading byteorder: {e}")))?;
        if order.trim() != "little" {
            return Err(Error::weights(
                path,
                format!(
                    "byte order `{}` is not supported (only little-endian)",
                    order.trim()
                ),
            ));
        }
    }
    let pickle = read_entry(&mut zip, &pickle_name, MAX_PICKLE_BYTES, &mut budget, path)?;
    let root = Unpickler::new(&pickle)
        .run()
        .map_err(|m| Error::weights(path, format!("{pickle_name}: {m}")))?;
    let mut named = Vec::new();
    collect_tensors(&root, String::new(), &mut named);
    if named.is_empty() {
        return Err(Error::weights(path, "the checkpoint holds no tensors"));
    }
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = HashMap::new();
    for (name, t) in named {
        if !storages.contains_key(&t.storage.key) {
            let entry = format!("{prefix}data/{}", t.storage.key);
            let limit = zip.by_name(&entry).map(|e| e.size()).map_err(|_| {
                Error::weights(
                    path,
                    format!("tensor `{name}`: the archive has no storage {entry}"),
                )
            })?;
            let bytes = read_entry(&mut zip, &entry, limit, &mut budget, path)?;
            storages.insert(t.storage.key.clone(), bytes);
        }
        let storage = &storages[&t.storage.key];
        let raw = materialize(&t, storage)
            .map_err(|m| Error::weights(path, format!("tensor `{name}`: {m}")))?;
        tensors.insert(name, raw);
    }
    TensorMap::new(path, tensors)
}

/// Uncompressed bytes the entries not yet read may still take.
struct Budget {
    left: u64,
    archive_len: u64,
}

fn read_entry<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    limit: u64,
    budget: &mut Budget,
    path: &Path,
) -> Result<Vec<u8>> {
    let entry = zip
        .by_name(name)
        .map_err(|e| Error::weights(path, format!("{name}: {e}")))?;
    if entry.size() > limit {
        return Err(Error::weights(
            path,
            format!("{name} is larger than {limit} bytes"),
        ));
    }
    if entry.size() > budget.left {
        return Err(Error::weights(
            path,
            format!(
                "{name} expands to {} bytes, more than a {}-byte archive may hold                  ({MAX_EXPANSION}x its size plus {} MiB); refusing a possible zip bomb",
                entry.size(),
                budget.archive_len,
                EXPANSION_SLACK >> 20
            ),
        ));
    }
    budget.left -= entry.size();
    let declared = entry.size();
    let mut bytes = Vec::new();
    entry
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::weights(path, format!("{name}: {e}")))?;
    if bytes.len() as u64 != declared {
        return Err(Error::weights(path, format!("{name} is truncated")));
    }
    Ok(bytes)
}

/// Flattens nested dicts of tensors into dotted names (`{"state_dict": {"w": t}}` -> `state_dict.w`).
fn collect_tensors(v: &Value, prefix: String, out: &mut Vec<(String, TensorRef)>) {
    if let Value::Dict(items, _) = v {
        for (k, v) in items {
            let key = match k {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                _ => continue,
            };
            let name = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            match v {
                Value::Tensor(t) => out.push((name, t.clone())),
                Value::Dict(..) => collect_tensors(v, name, out),
                _ => {}
            }
        }
    }
}

/// Copies a (possibly strided) view out of its storage into row-major bytes.
fn materialize(t: &TensorRef, storage: &[u8]) -> std::result::Result<RawTensor, String> {
    let es = t.storage.dtype.size();
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("its size overflows")?;
    let bytes = numel.checked_mul(es).ok_or("its byte size overflows")?;
    // Views that repeat storage elements (stride 0, as `expand` makes) could otherwise turn a
    // few stored bytes into terabytes; no state dict needs a view larger than its storage.
    if bytes > storage.len() {
        return Err(format!(
            "its {numel} elements ({bytes} bytes) need more than its storage's {} bytes",
            storage.len()
        ));
    }
    let storage_elems = storage.len() / es;
    if numel > 0 {
        let last = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |a, (&s, &st)| {
                (s - 1).checked_mul(st).and_then(|x| x.checked_add(a))
            })
            .ok_or("its strides overflow")?;
        if last >= storage_elems {
            return Err(format!(
                "it reaches element {last} of a storage of {storage_elems} elements"
            ));
        }
    }
    let mut data = Vec::with_capacity(bytes);
    let mut index = vec![0usize; t.size.len()];
    for _ in 0..numel {
        let elem = t.offset
            + index
                .iter()
                .zip(&t.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        data.extend_from_slice(&storage[elem * es..(elem + 1) * es]);
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(RawTensor {
        dtype: t.storage.dtype,
        shape: t.size.clone(),
        data,
    })
}

/// The restricted stack machine.
struct Unpickler<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

type Step<T> = std::result::Result<T, String>;

impl<'a> Unpickler<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.input.len())
            .ok_or_else(|| {
                format!(
                    "truncated pickle: needs {n} more bytes at offset {}",
                    self.pos
                )
            })?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Step<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Step<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Step<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Step<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| "bad length")?))
    }

    fn line(&mut self) -> Step<&'a str> {
        let rest = &self.input[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated pickle: unterminated GLOBAL name")?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| "GLOBAL name is not UTF-8")?;
        self.pos += end + 1;
        Ok(s)
    }

    fn string(&mut self, len: usize) -> Step<Value> {
        let b = self.take(len)?;
        Ok(Value::Str(
            std::str::from_utf8(b)
                .map_err(|_| "string is not valid UTF-8")?
                .to_string(),
        ))
    }

    fn push(&mut self, v: Value) -> Step<()> {
        if self.stack.len() >= MAX_STACK {
            return Err("pickle stack too deep".into());
        }
        if v.depth() > MAX_DEPTH {
            return Err(format!("containers nested deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Step<Value> {
        match self.stack.pop() {
            Some(Value::Mark) | None => Err("pickle stack underflow".into()),
            Some(v) => Ok(v),
        }
    }

    fn pop_mark(&mut self) -> Step<Vec<Value>> {
        let mark = self
            .stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or("MARK missing")?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&mut self) -> Step<&mut Value> {
        match self.stack.last_mut() {
            Some(Value::Mark) | None => Err("pickle stack underflow".into()),
            Some(v) => Ok(v),
        }
    }

    fn memoize(&mut self, key: u32) -> Step<()> {
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return Err("pickle memo too large".into());
        }
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn tuple(&mut self, items: Vec<Value>) -> Step<()> {
        let d = nested_depth(items.iter());
        self.push(Value::Tuple(items, d))
    }

    fn add_to_list(&mut self, items: Vec<Value>) -> Step<()> {
        let extra = nested_depth(items.iter());
        match self.top()? {
            Value::List(v, d) => {
                *d = (*d).max(extra);
                v.extend(items);
            }
            other => return Err(format!("APPEND to a {}", kind(other))),
        }
        self.check_top_depth()
    }

    fn add_to_dict(&mut self, items: Vec<Value>) -> Step<()> {
        if !items.len().is_multiple_of(2) {
            return Err("SETITEMS with an odd number of values".into());
        }
        let extra = nested_depth(items.iter());
        match self.top()? {
            Value::Dict(v, d) => {
                *d = (*d).max(extra);
                let mut it = items.into_iter();
                while let (Some(k), Some(val)) = (it.next(), it.next()) {
                    v.push((k, val));
                }
            }
            other => return Err(format!("SETITEM on a {}", kind(other))),
        }
        self.check_top_depth()
    }

    fn check_top_depth(&mut self) -> Step<()> {
        if self.top()?.depth() > MAX_DEPTH {
            return Err(format!("containers nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn run(mut self) -> Step<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64()?;
                }
                b'.' => return self.pop(),
                b'(' => self.push(Value::Mark)?,
                b'}' => self.push(Value::Dict(Vec::new(), 1))?,
                b']' => self.push(Value::List(Vec::new(), 1))?,
                b')' => self.push(Value::Tuple(Vec::new(), 1))?,
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v.into()))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v.into()))?
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    if n > 8 {
                        return Err("LONG1 wider than 64 bits".into());
                    }
                    let b = self.take(n)?;
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xff; 8]
                    } else {
                        [0; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.push(Value::Int(i64::from_le_bytes(buf)))?
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().map_err(|_| "bad length")?);
                    self.push(Value::Float(v))?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.push(s)?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.push(s)?
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| "string too long")?;
                    let s = self.string(n)?;
                    self.push(s)?
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))?
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.tuple(items)?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.tuple(items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.add_to_list(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.add_to_list(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.add_to_dict(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.add_to_dict(items)?
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memoize(k.into())?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memoize(k)?
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len()).map_err(|_| "memo overflow")?;
                    self.memoize(k)?
                }
                b'h' | b'j' => {
                    let k = if op == b'h' {
                        self.u8()?.into()
                    } else {
                        self.u32()?
                    };
                    let v = self
                        .memo
                        .get(&k)
                        .cloned()
                        .ok_or_else(|| format!("memo key {k} missing"))?;
                    self.push(v)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = resolve_global(module, name)?;
                    self.push(Value::Global(g))?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err("STACK_GLOBAL needs two strings".into());
                    };
                    let g = resolve_global(&module, &name)?;
                    self.push(Value::Global(g))?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let s = persistent_storage(pid)?;
                    self.push(Value::Storage(s))?
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args)?;
                    self.push(v)?
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let v = reduce(class, args)?;
                    self.push(v)?
                }
                b'b' => {
                    // BUILD sets object state; state dicts carry only `_metadata`, which kiln ignores.
                    self.pop()?;
                    match self.top()? {
                        Value::Dict(..) | Value::Tensor(_) => {}
                        other => return Err(format!("BUILD on a {}", kind(other))),
                    }
                }
                other => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{other:02x} at offset {}",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Mark => "mark",
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "str",
        Value::Bytes(_) => "bytes",
        Value::Tuple(..) => "tuple",
        Value::List(..) => "list",
        Value::Dict(..) => "dict",
        Value::Global(_) => "global",
        Value::Storage(_) => "storage",
        Value::Tensor(_) => "tensor",
    }
}

/// `('storage', <StorageType>, key, location, numel)` -> the storage it names.
fn persistent_storage(pid: Value) -> Step<StorageRef> {
    let Value::Tuple(items, _) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(Global::Storage(dtype)), key, _location, _numel]
            if tag == "storage" =>
        {
            let key = match key {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                _ => return Err("storage key is not a string".into()),
            };
            if key.contains('/') || key.contains("..") {
                return Err(format!("storage key `{key}` is not a plain name"));
            }
            Ok(StorageRef { dtype: *dtype, key })
        }
        _ => Err("persistent id is not a torch storage reference".into()),
    }
}

fn usize_list(v: &Value, what: &str) -> Step<Vec<usize>> {
    let Value::Tuple(items, _) = v else {
        return Err(format!("{what} is not a tuple"));
    };
    items
        .iter()
        .map(|i| match i {
            Value::Int(n) => {
                usize::try_from(*n).map_err(|_| format!("{what} has a negative entry"))
            }
            _ => Err(format!("{what} holds a non-integer")),
        })
        .collect()
}

/// Applies an allow-listed callable to its arguments.
fn reduce(callable: Value, args: Value) -> Step<Value> {
    let Value::Global(g) = callable else {
        return Err(format!(
            "REDUCE on a {}, not an allowed callable",
            kind(&callable)
        ));
    };
    let Value::Tuple(args, _) = args else {
        return Err("REDUCE arguments are not a tuple".into());
    };
    match g {
        Global::OrderedDict => Ok(Value::Dict(Vec::new(), 1)),
        Global::RebuildParameter => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Global::RebuildTensor => {
            let [storage, offset, size, stride, ..] = args.as_slice() else {
                return Err("_rebuild_tensor_v2 needs storage, offset, size and stride".into());
            };
            let Value::Storage(storage) = storage else {
                return Err("_rebuild_tensor_v2 without a storage".into());
            };
            let Value::Int(offset) = offset else {
                return Err("tensor offset is not an integer".into());
            };
            let size = usize_list(size, "tensor size")?;
            let stride = usize_list(stride, "tensor stride")?;
            if size.len() != stride.len() {
                return Err("tensor size and stride differ in length".into());
            }
            Ok(Value::Tensor(TensorRef {
                storage: storage.clone(),
                offset: usize::try_from(*offset).map_err(|_| "negative tensor offset")?,
                size,
                stride,
            }))
        }
        Global::Storage(_) => Err("constructing a storage directly is not allowed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pickle equivalent to what torch.save writes for {"w": tensor of 2x3 f32}.
    fn state_dict_pickle() -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
        p.extend([0x8c, 1, b'w']);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n");
        p.extend([b'(', b'(']);
        p.extend([0x8c, 7]);
        p.extend(b"storage");
        p.extend(b"ctorch\nFloatStorage\n");
        p.extend([0x8c, 1, b'0', 0x8c, 3]);
        p.extend(b"cpu");
        p.extend([
            b'K', 6, b't', b'Q', b'K', 0, b'K', 2, b'K', 3, 0x86, b'K', 3, b'K', 1, 0x86,
        ]);
        p.extend([0x89, b'c']);
        p.extend(b"collections\nOrderedDict\n");
        p.extend([b')', b'R', b't', b'R', b'u', b'.']);
        p
    }

    #[test]
    fn parses_a_state_dict_pickle() {
        let v = Unpickler::new(&state_dict_pickle()).run().unwrap();
        let mut out = Vec::new();
        collect_tensors(&v, String::new(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "w");
        assert_eq!(out[0].1.size, vec![2, 3]);
        assert_eq!(out[0].1.stride, vec![3, 1]);
        assert_eq!(out[0].1.storage.dtype, DType::F32);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let p = state_dict_pickle();
        for cut in 0..p.len() {
            assert!(
                Unpickler::new(&p[..cut]).run().is_err(),
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let p = state_dict_pickle();
        for i in 0..p.len() {
            for b in [0u8, 0x7f, 0xff, b'R', b'.', b'(', 0x93] {
                let mut q = p.clone();
                q[i] = b;
                let _ = Unpickler::new(&q).run();
            }
        }
    }

    #[test]
    fn dangerous_globals_are_refused_by_name() {
        for (module, name) in [
            ("os", "system"),
            ("builtins", "eval"),
            ("posix", "system"),
            ("subprocess", "Popen"),
        ] {
            let mut p = vec![0x80, 2, b'c'];
            p.extend(format!("{module}\n{name}\n").as_bytes());
            p.extend([0x8c, 4]);
            p.extend(b"echo");
            p.extend([0x85, b'R', b'.']);
            let err = Unpickler::new(&p).run().unwrap_err();
            assert!(err.contains(&format!("`{module}.{name}`")), "{err}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', 1000));
        p.extend(std::iter::repeat_n(b'a', 999));
        p.push(b'.');
        let err = Unpickler::new(&p).run().unwrap_err();
        assert!(err.contains("nested"), "{err}");
    }

    #[test]
    fn strided_views_are_copied_in_row_major_order() {
        // Storage 0..6 as f32; view: transpose of a 2x3 matrix -> shape [3, 2], stride [1, 3].
        let storage: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let t = TensorRef {
            storage: StorageRef {
                dtype: DType::F32,
                key: "0".into(),
            },
            offset: 0,
            size: vec![3, 2],
            stride: vec![1, 3],
        };
        let raw = materialize(&t, &storage).unwrap();
        let vals: Vec<f32> = raw
            .data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(vals, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let too_far = TensorRef {
            offset: 1,
            size: vec![6],
            stride: vec![1],
            ..t
        };
        assert!(materialize(&too_far, &storage)
            .unwrap_err()
            .contains("element 6"));
    }
}
