//! Hostile and broken model files: truncated, lying about sizes, counts and offsets, holding
//! non-finite weights, or pickles that try to run code. Every file is generated here, byte by
//! byte, and every case asserts the specific error kiln reports.
//!
//! The fuzzers in `fuzz/` found the inputs of the `fuzz_regression_*` tests.
//!
//! Non-finite weights (NaN, +-Inf) are loaded as stored, bit for bit, in every format: they are
//! values, not a malformed file, and real checkpoints hold them on purpose (attention-mask
//! buffers filled with -inf). Sampling skips non-finite logits (see `sampling.rs`).

use kiln_core::gguf_tokenizer::GgufTokenizer;
use kiln_core::tokenize::TextTokenizer;
use kiln_core::weights::gguf::GgufFile;
use kiln_core::weights::pickle::parse_checkpoint;
use kiln_core::weights::{safetensors, TensorMap};
use kiln_core::Error;
use std::io::Write;
use std::path::Path;

/// The message of an [`Error::Weights`], failing the test on any other outcome.
fn weights_error<T>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Weights { message, .. }) => message,
        Err(other) => panic!("expected Error::Weights, got {other:?}"),
        Ok(_) => panic!("expected Error::Weights, got Ok"),
    }
}

fn assert_contains(message: &str, needle: &str) {
    assert!(
        message.contains(needle),
        "`{message}` does not contain `{needle}`"
    );
}

// ------------------------------------------------------------------------------------- GGUF

const GGUF_U32: u32 = 4;
const GGUF_STRING: u32 = 8;
const GGUF_ARRAY: u32 = 9;
const GGML_F32: u32 = 0;

/// Writes GGUF v3 files field by field, so that any field can lie.
#[derive(Default)]
struct Gguf {
    kv: Vec<u8>,
    kv_count: u64,
    infos: Vec<u8>,
    tensor_count: u64,
    data: Vec<u8>,
}

fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Gguf {
    fn meta_u32(mut self, key: &str, v: u32) -> Self {
        gguf_string(&mut self.kv, key);
        self.kv.extend(GGUF_U32.to_le_bytes());
        self.kv.extend(v.to_le_bytes());
        self.kv_count += 1;
        self
    }

    fn meta_str(mut self, key: &str, v: &str) -> Self {
        gguf_string(&mut self.kv, key);
        self.kv.extend(GGUF_STRING.to_le_bytes());
        gguf_string(&mut self.kv, v);
        self.kv_count += 1;
        self
    }

    fn meta_strs(mut self, key: &str, items: &[&str]) -> Self {
        gguf_string(&mut self.kv, key);
        self.kv.extend(GGUF_ARRAY.to_le_bytes());
        self.kv.extend(GGUF_STRING.to_le_bytes());
        self.kv.extend((items.len() as u64).to_le_bytes());
        for s in items {
            gguf_string(&mut self.kv, s);
        }
        self.kv_count += 1;
        self
    }

    /// A tensor description with raw dims (innermost first, as stored), type and offset.
    fn info(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        gguf_string(&mut self.infos, name);
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.tensor_count += 1;
        self
    }

    /// An F32 tensor of these values, appended to the data section (32-byte aligned).
    fn f32_tensor(self, name: &str, values: &[f32]) -> Self {
        let offset = self.data.len() as u64;
        let mut g = self.info(name, &[values.len() as u64], GGML_F32, offset);
        g.data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        g.data.resize(g.data.len().next_multiple_of(32), 0);
        g
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(self.tensor_count.to_le_bytes());
        out.extend(self.kv_count.to_le_bytes());
        out.extend(&self.kv);
        out.extend(&self.infos);
        out.resize(out.len().next_multiple_of(32), 0);
        out.extend(&self.data);
        out
    }
}

fn parse_gguf(bytes: Vec<u8>) -> Result<GgufFile, Error> {
    GgufFile::parse(Path::new("hostile.gguf"), bytes)
}

fn small_gguf() -> Gguf {
    Gguf::default()
        .meta_str("general.architecture", "llama")
        .f32_tensor("a", &[1.0, 2.0, 3.0, 4.0])
        .f32_tensor("b", &[5.0; 8])
}

#[test]
fn gguf_the_generated_file_is_valid() {
    let f = parse_gguf(small_gguf().bytes()).unwrap();
    assert_eq!(f.f32("a", &[4]).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(f.f32("b", &[8]).unwrap(), vec![5.0; 8]);
}

#[test]
fn gguf_every_truncation_is_named_truncated() {
    let good = small_gguf().bytes();
    // The last tensor ends the file, so every proper prefix misses bytes: a read runs out, or
    // a count is found larger than what is left.
    for cut in 0..good.len() {
        let message = weights_error(parse_gguf(good[..cut].to_vec()));
        assert!(
            message.contains("truncated") || message.contains("more than the file can hold"),
            "cut at {cut}: {message}"
        );
    }
}

#[test]
fn gguf_string_and_array_lengths_near_u64_max_are_refused() {
    for len in [u64::MAX, u64::MAX - 7, 1 << 62] {
        let mut b = small_gguf().bytes();
        // The first metadata key's length is at byte 24.
        b[24..32].copy_from_slice(&len.to_le_bytes());
        let message = weights_error(parse_gguf(b));
        assert_contains(
            &message,
            &format!("string length {len} is more than the file can hold"),
        );
    }
    let mut g = Gguf::default();
    gguf_string(&mut g.kv, "tokenizer.ggml.tokens");
    g.kv.extend(GGUF_ARRAY.to_le_bytes());
    g.kv.extend(GGUF_STRING.to_le_bytes());
    g.kv.extend(u64::MAX.to_le_bytes());
    g.kv_count = 1;
    let message = weights_error(parse_gguf(g.bytes()));
    assert_contains(&message, "metadata `tokenizer.ggml.tokens`");
    assert_contains(&message, "array length 18446744073709551615");
    // A u32 array whose length the file could hold as bytes but not as 4-byte items.
    let mut g = Gguf::default();
    gguf_string(&mut g.kv, "k");
    g.kv.extend(GGUF_ARRAY.to_le_bytes());
    g.kv.extend(GGUF_U32.to_le_bytes());
    g.kv.extend(100u64.to_le_bytes());
    g.kv.extend([0u8; 120]);
    g.kv_count = 1;
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "array length 100 is more than the file can hold",
    );
}

#[test]
fn gguf_counts_near_u64_max_are_refused() {
    let mut b = small_gguf().bytes();
    b[8..16].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert_contains(
        &weights_error(parse_gguf(b)),
        "tensor count 9223372036854775807 is more than the file can hold",
    );
    let mut b = small_gguf().bytes();
    b[16..24].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
    assert_contains(
        &weights_error(parse_gguf(b)),
        "metadata count 18446744073709551614 is more than the file can hold",
    );
}

#[test]
fn gguf_tensor_sizes_near_u64_max_are_refused() {
    // Element count overflows usize.
    let g = Gguf::default().info("huge", &[u64::MAX, 2], GGML_F32, 0);
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "tensor `huge`: element count overflows",
    );
    // Element count fits, bytes overflow.
    let g = Gguf::default().info("huge", &[1 << 62], GGML_F32, 0);
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "tensor `huge`: byte size overflows",
    );
    // Bytes fit in usize, but not in the file.
    let g = small_gguf().info("big", &[1 << 40], GGML_F32, 0);
    let message = weights_error(parse_gguf(g.bytes()));
    assert_contains(&message, "tensor `big` (4398046511104 bytes at offset");
    assert_contains(&message, "runs past the end of the file");
    // Too many dimensions, unknown storage type.
    let g = Gguf::default().info("t", &[1, 1, 1, 1, 1], GGML_F32, 0);
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "tensor `t` has 5 dimensions",
    );
    let g = Gguf::default().info("t", &[1], 99, 0);
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "tensor `t` has unknown ggml type 99",
    );
}

#[test]
fn gguf_wrong_offsets_are_refused() {
    let g = small_gguf().info("c", &[4], GGML_F32, !31u64);
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "tensor `c`: offset overflows",
    );
    let g = small_gguf().info("c", &[4], GGML_F32, 3);
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "tensor `c`: offset 3 is not aligned to 32",
    );
    let g = small_gguf().info("c", &[4], GGML_F32, 1 << 20);
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "tensor `c` (16 bytes at offset",
    );
    let g = small_gguf().meta_u32("general.alignment", 24);
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "general.alignment is not a power of two",
    );
}

#[test]
fn gguf_overlapping_and_duplicate_tensors_are_refused() {
    // `c` starts inside `a` (a holds 16 bytes at data offset 0; c is 32 bytes at 0).
    let g = small_gguf().info("c", &[8], GGML_F32, 0);
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "tensors `a` and `c` overlap in the file",
    );
    // `c` covers `b` exactly.
    let g = small_gguf().info("c", &[8], GGML_F32, 32);
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "tensors `b` and `c` overlap in the file",
    );
    // An empty tensor overlaps nothing.
    let f = parse_gguf(small_gguf().info("e", &[0], GGML_F32, 0).bytes()).unwrap();
    assert_eq!(f.f32("e", &[0]).unwrap(), Vec::<f32>::new());
    let g = small_gguf().info("a", &[4], GGML_F32, 64);
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "tensor `a` appears twice",
    );
    let g = small_gguf().meta_str("general.architecture", "evil");
    assert_contains(
        &weights_error(parse_gguf(g.bytes())),
        "metadata key `general.architecture` appears twice",
    );
}

#[test]
fn gguf_non_finite_weights_load_as_stored() {
    let values = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0];
    let f = parse_gguf(Gguf::default().f32_tensor("w", &values).bytes()).unwrap();
    let got = f.f32("w", &[4]).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&values));
}

#[test]
fn gguf_tokenizer_metadata_that_lies_is_refused() {
    let base = || Gguf::default().meta_str("tokenizer.ggml.model", "gpt2");
    // Tokens missing, or of the wrong type.
    let message = weights_error(GgufTokenizer::from_gguf(
        &parse_gguf(base().bytes()).unwrap(),
    ));
    assert_contains(&message, "metadata `tokenizer.ggml.tokens` is missing");
    let g = base().meta_str("tokenizer.ggml.tokens", "not an array");
    let message = weights_error(GgufTokenizer::from_gguf(&parse_gguf(g.bytes()).unwrap()));
    assert_contains(&message, "metadata `tokenizer.ggml.tokens` is missing");
    // SentencePiece with fewer scores than tokens.
    let mut g = Gguf::default()
        .meta_str("tokenizer.ggml.model", "llama")
        .meta_strs("tokenizer.ggml.tokens", &["<unk>", "a", "b"]);
    gguf_string(&mut g.kv, "tokenizer.ggml.scores");
    g.kv.extend(GGUF_ARRAY.to_le_bytes());
    g.kv.extend(6u32.to_le_bytes());
    g.kv.extend(1u64.to_le_bytes());
    g.kv.extend(0f32.to_le_bytes());
    g.kv_count += 1;
    match GgufTokenizer::from_gguf(&parse_gguf(g.bytes()).unwrap()) {
        Err(Error::Tokenizer(m)) => assert_contains(&m, "3 tokens but 1 scores"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a vocabulary without its scores loaded"),
    }
    // An unknown tokenizer model.
    let g = Gguf::default()
        .meta_str("tokenizer.ggml.model", "rwkv")
        .meta_strs("tokenizer.ggml.tokens", &["a"]);
    match GgufTokenizer::from_gguf(&parse_gguf(g.bytes()).unwrap()) {
        Err(Error::Unsupported(m)) => assert_contains(&m, "tokenizer model `rwkv`"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("an unknown tokenizer model loaded"),
    }
}

// ------------------------------------------------------------------------------ SafeTensors

fn safetensors_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn parse_st(bytes: &[u8]) -> Result<TensorMap, Error> {
    safetensors::parse(Path::new("hostile.safetensors"), bytes)
}

fn valid_st() -> Vec<u8> {
    safetensors_file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
        &[0u8; 12],
    )
}

#[test]
fn safetensors_every_truncation_is_refused() {
    let good = valid_st();
    assert!(parse_st(&good).is_ok());
    for cut in 0..good.len() {
        let message = weights_error(parse_st(&good[..cut]));
        assert_contains(&message, "not a valid safetensors file");
    }
}

#[test]
fn safetensors_huge_header_length_is_refused() {
    for len in [u64::MAX, u64::MAX - 8, 1 << 40] {
        let mut b = valid_st();
        b[..8].copy_from_slice(&len.to_le_bytes());
        let message = weights_error(parse_st(&b));
        assert_contains(&message, "not a valid safetensors file");
        assert_contains(&message.to_lowercase(), "header");
    }
}

#[test]
fn safetensors_huge_shapes_are_refused() {
    let huge = format!(
        r#"{{"a":{{"dtype":"F32","shape":[{},{}],"data_offsets":[0,8]}}}}"#,
        u64::MAX,
        u64::MAX
    );
    let message = weights_error(parse_st(&safetensors_file(&huge, &[0; 8])));
    assert_contains(&message, "not a valid safetensors file");
    let lying = r#"{"a":{"dtype":"F32","shape":[1000000],"data_offsets":[0,8]}}"#;
    let message = weights_error(parse_st(&safetensors_file(lying, &[0; 8])));
    assert_contains(&message, "not a valid safetensors file");
}

#[test]
fn safetensors_wrong_and_overlapping_offsets_are_refused() {
    for header in [
        // Overlapping.
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        // Past the end.
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,18446744073709551615]}}"#,
        // Backwards.
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
    ] {
        let message = weights_error(parse_st(&safetensors_file(header, &[0; 12])));
        assert_contains(&message, "not a valid safetensors file");
        assert_contains(&message, "offset");
    }
}

#[test]
fn safetensors_unsupported_dtype_is_named() {
    let header = r#"{"q":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}"#;
    let message = weights_error(parse_st(&safetensors_file(header, &[0; 4])));
    assert_contains(&message, "tensor `q` has unsupported dtype F8_E4M3");
}

#[test]
fn safetensors_non_finite_weights_load_as_stored() {
    let values = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.5];
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let map = parse_st(&safetensors_file(header, &data)).unwrap();
    let got = map.f32("w", &[4]).unwrap();
    assert!(got[0].is_nan());
    assert_eq!(&got[1..], &[f32::INFINITY, f32::NEG_INFINITY, 1.5]);
}

// ---------------------------------------------------------------------- PyTorch checkpoints

fn short_str(p: &mut Vec<u8>, s: &str) {
    p.push(0x8c);
    p.push(s.len() as u8);
    p.extend(s.as_bytes());
}

/// The pickle opcodes that rebuild one tensor `name` from storage `key` (protocol 2).
fn tensor_ops(p: &mut Vec<u8>, name: &str, key: &str, size: &[u8], stride: &[u8]) {
    short_str(p, name);
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    short_str(p, "storage");
    p.extend(b"ctorch\nFloatStorage\n");
    short_str(p, key);
    short_str(p, "cpu");
    p.extend([b'K', 4, b't', b'Q', b'K', 0, b'(']);
    for s in size {
        p.extend([b'K', *s]);
    }
    p.extend([b't', b'(']);
    for s in stride {
        p.extend([b'K', *s]);
    }
    p.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
}

/// `{name: tensor}` as torch.save pickles a state dict.
fn state_dict(name: &str, size: &[u8], stride: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    tensor_ops(&mut p, name, "0", size, stride);
    p.extend(b"u.");
    p
}

/// A torch.save-style zip archive (entries stored, as torch.save writes them).
fn archive(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    archive_with(zip::CompressionMethod::Stored, pickle, storages)
}

/// A torch.save-style zip archive whose entries are compressed with `method`.
fn archive_with(
    method: zip::CompressionMethod,
    pickle: &[u8],
    storages: &[(&str, &[u8])],
) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(true);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(pickle).unwrap();
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

#[test]
fn pickle_a_zip_bomb_is_refused_before_it_expands() {
    // 256 MiB of zeros deflate to well under 1 MiB: the archive may expand to 4x its size
    // plus 64 MiB, so the storage is refused from its declared size, never inflated.
    let zeros = vec![0u8; 256 << 20];
    let bomb = archive_with(
        zip::CompressionMethod::Deflated,
        &state_dict("w", &[2, 2], &[2, 1]),
        &[("0", &zeros)],
    );
    drop(zeros);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let message = weights_error(parse_pt(&bomb));
    assert_contains(&message, "zip bomb");
    assert_contains(&message, "archive/data/0 expands to 268435456 bytes");
}

fn parse_pt(bytes: &[u8]) -> Result<TensorMap, Error> {
    parse_checkpoint(Path::new("hostile.pt"), bytes)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn pickle_the_generated_checkpoint_is_valid_stored_or_compressed() {
    let storage = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    for method in [
        zip::CompressionMethod::Stored,
        zip::CompressionMethod::Deflated,
    ] {
        let map = parse_pt(&archive_with(
            method,
            &state_dict("w", &[2, 2], &[2, 1]),
            &[("0", &storage)],
        ))
        .unwrap();
        assert_eq!(map.f32("w", &[2, 2]).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    }
}

/// A pickle that calls `module.name(command)`, by GLOBAL or STACK_GLOBAL, then REDUCE, inside
/// the state dict where a tensor would be.
fn calling_pickle(module: &str, name: &str, command: &str, stack_global: bool) -> Vec<u8> {
    let mut p = vec![0x80, 4, b'}', b'('];
    short_str(&mut p, "w");
    if stack_global {
        short_str(&mut p, module);
        short_str(&mut p, name);
        p.push(0x93);
    } else {
        p.push(b'c');
        p.extend(format!("{module}\n{name}\n").as_bytes());
    }
    p.push(b'X');
    p.extend((command.len() as u32).to_le_bytes());
    p.extend(command.as_bytes());
    p.extend([0x85, b'R', b'u', b'.']);
    p
}

#[test]
fn pickle_calls_to_code_are_refused_by_name_and_never_made() {
    let dir = tempfile::tempdir().unwrap();
    let witness = dir.path().join("pwned");
    let command = format!("touch {}", witness.display());
    for (module, name) in [
        ("os", "system"),
        ("posix", "system"),
        ("nt", "system"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("__builtin__", "eval"),
        ("subprocess", "Popen"),
        ("subprocess", "check_output"),
        ("torch", "load"),
        ("torch._utils", "_rebuild_tensor_v2_evil"),
    ] {
        for stack_global in [false, true] {
            let pickle = calling_pickle(module, name, &command, stack_global);
            let bytes = archive(&pickle, &[]);
            let message = weights_error(parse_pt(&bytes));
            assert_contains(&message, "refused to load");
            assert_contains(&message, &format!("`{module}.{name}`"));
            // The same through the file path a server loads from.
            let file = dir.path().join("pytorch_model.bin");
            std::fs::write(&file, &bytes).unwrap();
            let message = weights_error(TensorMap::load(&file));
            assert_contains(&message, &format!("`{module}.{name}`"));
        }
    }
    assert!(!witness.exists(), "a pickle ran `{command}`");
}

#[test]
fn pickle_other_ways_to_call_code_are_refused() {
    // INST (`i`) and OBJ (`o`) build objects from a class named inline; EXT1 looks a callable
    // up in the copyreg registry; none is an opcode a state dict needs.
    for (pickle, opcode) in [
        (b"\x80\x02(S'touch x'\nios\nsystem\n.".to_vec(), "0x53"),
        (b"\x80\x02(ios\nsystem\n.".to_vec(), "0x69"),
        (b"\x80\x02(o.".to_vec(), "0x6f"),
        (b"\x80\x02\x82\x01.".to_vec(), "0x82"),
    ] {
        let message = weights_error(parse_pt(&archive(&pickle, &[])));
        assert_contains(&message, &format!("unsupported pickle opcode {opcode}"));
    }
    // REDUCE on something that is not an allow-listed callable.
    let mut p = vec![0x80, 2];
    short_str(&mut p, "os.system");
    p.extend([b')', b'R', b'.']);
    assert_contains(
        &weights_error(parse_pt(&archive(&p, &[]))),
        "REDUCE on a str, not an allowed callable",
    );
    // An allow-listed storage class called directly.
    let p = b"\x80\x02ctorch\nFloatStorage\n)R.".to_vec();
    assert_contains(
        &weights_error(parse_pt(&archive(&p, &[]))),
        "constructing a storage directly is not allowed",
    );
}

#[test]
fn pickle_storage_keys_cannot_leave_the_archive() {
    let mut p = vec![0x80, 2, b'}', b'('];
    tensor_ops(&mut p, "w", "../../etc/passwd", &[1], &[1]);
    p.extend(b"u.");
    assert_contains(
        &weights_error(parse_pt(&archive(&p, &[]))),
        "storage key `../../etc/passwd` is not a plain name",
    );
}

#[test]
fn pickle_views_larger_than_their_storage_are_refused() {
    let storage = f32_bytes(&[1.0]);
    // Stride 0 repeats one element 255 * 255 times: 260 KB from 4 bytes.
    let p = state_dict("w", &[255, 255], &[0, 0]);
    let message = weights_error(parse_pt(&archive(&p, &[("0", &storage)])));
    assert_contains(
        &message,
        "tensor `w`: its 65025 elements (260100 bytes) need more",
    );
    // A view reaching past its storage.
    let storage = f32_bytes(&[1.0, 2.0]);
    let p = state_dict("w", &[2], &[1]);
    let mut q = p.clone();
    // offset 0 -> 1: elements 1 and 2 of a 2-element storage.
    let at = q.windows(3).position(|w| w == [b'Q', b'K', 0]).unwrap();
    q[at + 2] = 1;
    let message = weights_error(parse_pt(&archive(&q, &[("0", &storage)])));
    assert_contains(&message, "it reaches element 2 of a storage of 2 elements");
    assert!(parse_pt(&archive(&p, &[("0", &storage)])).is_ok());
}

#[test]
fn pickle_missing_and_truncated_parts_are_named() {
    let p = state_dict("w", &[2], &[1]);
    assert_contains(
        &weights_error(parse_pt(&archive(&p, &[]))),
        "tensor `w`: the archive has no storage archive/data/0",
    );
    let good = archive(&p, &[("0", &f32_bytes(&[1.0, 2.0]))]);
    for cut in 0..good.len() {
        assert!(parse_pt(&good[..cut]).is_err(), "cut at {cut}");
    }
    for cut in 0..p.len() {
        let message = weights_error(parse_pt(&archive(&p[..cut], &[])));
        assert_contains(&message, "archive/data.pkl: ");
    }
    assert_contains(
        &weights_error(parse_pt(b"\x80\x02}q\x00.")),
        "not a zip-format PyTorch checkpoint",
    );
}

#[test]
fn pickle_non_finite_weights_load_as_stored() {
    let storage = f32_bytes(&[f32::NAN, f32::NEG_INFINITY]);
    let map = parse_pt(&archive(&state_dict("w", &[2], &[1]), &[("0", &storage)])).unwrap();
    let got = map.f32("w", &[2]).unwrap();
    assert!(got[0].is_nan());
    assert_eq!(got[1], f32::NEG_INFINITY);
}

// ---------------------------------------------------------------------------- tokenizer.json

#[test]
fn tokenizer_json_that_is_broken_is_a_tokenizer_error() {
    for (json, needle) in [
        (&b"{"[..], "EOF while parsing"),
        (b"\xff\xfe", "expected value"),
        (br#"{"model": {"type": "Nonsense"}}"#, ""),
        (
            br#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":null,"model":{"type":"BPE","vocab":{"a":0},"merges":["a b"]}}"#,
            "",
        ),
    ] {
        match TextTokenizer::from_bytes(json, 16, false) {
            Err(Error::Tokenizer(m)) => assert_contains(&m, needle),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("{} loaded", String::from_utf8_lossy(json)),
        }
        let null = serde_json::Value::Null;
        match GgufTokenizer::from_hf_parts(json, &null, &null) {
            Err(Error::Tokenizer(m)) => assert_contains(&m, needle),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("{} loaded", String::from_utf8_lossy(json)),
        }
    }
}

/// Found by `fuzz/fuzz_targets/tokenizer.rs` in its first seconds: invalid UTF-8 inside the
/// `"decoder"` object made the `tokenizers` crate panic (`expect("Helper")`) instead of
/// returning an error.
#[test]
fn fuzz_regression_tokenizer_json_with_invalid_utf8_in_the_decoder() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz/tokenizer-decoder-invalid-utf8.json");
    let json = std::fs::read(path).unwrap();
    match TextTokenizer::from_bytes(&json, 16, false) {
        Err(Error::Tokenizer(m)) => assert_contains(&m, "tokenizer.json is not valid JSON"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("loaded"),
    }
    let null = serde_json::Value::Null;
    match GgufTokenizer::from_hf_parts(&json, &null, &null) {
        Err(Error::Tokenizer(m)) => assert_contains(&m, "tokenizer.json is not valid JSON"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("loaded"),
    }
}

/// Found by the tokenizer fuzzer: a template naming a special token missing from
/// `special_tokens` loaded, then the `tokenizers` crate panicked on encoding ("no entry found
/// for key").
#[test]
fn fuzz_regression_template_naming_an_unknown_special_token() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz/tokenizer-template-unknown-special.json");
    let json = std::fs::read(path).unwrap();
    let needle = "post_processor: the single template names special token";
    match TextTokenizer::from_bytes(&json, 16, false) {
        Err(Error::Tokenizer(m)) => assert_contains(&m, needle),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("loaded"),
    }
    let null = serde_json::Value::Null;
    match GgufTokenizer::from_hf_parts(&json, &null, &null) {
        Err(Error::Tokenizer(m)) => assert_contains(&m, needle),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("loaded"),
    }
}

/// Templates the `tokenizers` crate would index out of bounds with: sequence B in the single
/// template, a pair template without B, a special token with more ids than tokens.
#[test]
fn template_processing_that_would_index_out_of_bounds_is_refused() {
    let json = |post: &str| {
        format!(
            r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":null,"post_processor":{post},"decoder":null,"model":{{"type":"WordLevel","vocab":{{"a":0,"[UNK]":1}},"unk_token":"[UNK]"}}}}"#
        )
    };
    let seq = |id: &str| format!(r#"{{"Sequence":{{"id":"{id}","type_id":0}}}}"#);
    let cls = r#"{"SpecialToken":{"id":"[CLS]","type_id":0}}"#;
    let good_specials = r#"{"[CLS]":{"id":"[CLS]","ids":[0],"tokens":["a"]}}"#;
    let template = |single: String, pair: String, specials: &str| {
        json(&format!(
            r#"{{"type":"TemplateProcessing","single":[{single}],"pair":[{pair}],"special_tokens":{specials}}}"#
        ))
    };
    let ab = format!("{},{}", seq("A"), seq("B"));
    let ok = template(format!("{cls},{}", seq("A")), ab.clone(), good_specials);
    TextTokenizer::from_bytes(ok.as_bytes(), 16, false).unwrap();
    for (bad, needle) in [
        (
            template(seq("B"), ab.clone(), good_specials),
            "the single template uses sequence B",
        ),
        (
            template(seq("A"), seq("A"), good_specials),
            "the pair template does not use both sequences",
        ),
        (
            template(
                format!("{cls},{}", seq("A")),
                ab.clone(),
                r#"{"[CLS]":{"id":"[CLS]","ids":[0,1],"tokens":["a"]}}"#,
            ),
            "special token `[CLS]` has a different number of ids and tokens",
        ),
        (
            json(&format!(
                r#"{{"type":"Sequence","processors":[{{"type":"TemplateProcessing","single":[{cls}],"pair":[{ab}],"special_tokens":{{}}}}]}}"#
            )),
            "names special token `[CLS]`",
        ),
    ] {
        match TextTokenizer::from_bytes(bad.as_bytes(), 16, false) {
            Err(Error::Tokenizer(m)) => assert_contains(&m, needle),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("{bad} loaded"),
        }
    }
}
