#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/seeds/<target>/.

Small valid files, written byte by byte (no torch, gguf-py or safetensors needed), plus copies
of a few of kiln-core's small test fixtures. Run from anywhere: python3 fuzz/make_seeds.py
"""
import io
import json
import shutil
import struct
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORE = HERE.parent / "crates" / "kiln-core" / "tests" / "data"
SEEDS = HERE / "seeds"

# ---------------------------------------------------------------- GGUF

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(ty, v):
    fmt = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
           BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
    if ty == STR:
        return gguf_str(v)
    if ty == ARR:
        item_ty, items = v
        return struct.pack("<IQ", item_ty, len(items)) + b"".join(gguf_value(item_ty, x) for x in items)
    return struct.pack(fmt[ty], v)


def gguf(metadata, tensors, alignment=32):
    """metadata: [(key, type, value)]; tensors: [(name, shape outermost first, ggml type, data)]."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, ty, v in metadata:
        out += gguf_str(key) + struct.pack("<I", ty) + gguf_value(ty, v)
    offset, blobs = 0, b""
    for name, shape, ty, data in tensors:
        out += gguf_str(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in reversed(shape))
        out += struct.pack("<IQ", ty, offset)
        pad = (-len(data)) % alignment
        blobs += data + b"\0" * pad
        offset += len(data) + pad
    out += b"\0" * ((-len(out)) % alignment)
    return out + blobs


def f32s(values):
    return b"".join(struct.pack("<f", v) for v in values)


def q8_0_block(scale_f16_bits, start):
    return struct.pack("<H", scale_f16_bits) + bytes((start + i) % 256 for i in range(32))


GPT2_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "H", "e", "l", "o", "Ġ", "w",
               "r", "d", "He", "ll", "llo", "Hello", "Ġw", "Ġwor", "1", "2", "3", "!", "Ċ"]
GPT2_MERGES = ["H e", "l l", "ll o", "He llo", "Ġ w", "Ġw o", "Ġwo r"]
SPM_TOKENS = ["<unk>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<0x0A>", "<0x41>",
              "\u2581", "\u2581H", "ello", "\u2581Hello", "\u2581world", "w", "o", "r", "l", "d"]
SPM_TYPES = [2, 3, 3, 3, 3, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]


def gpt2_metadata(pre):
    return [
        ("general.architecture", STR, "llama"),
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.pre", STR, pre),
        ("tokenizer.ggml.tokens", ARR, (STR, GPT2_TOKENS)),
        ("tokenizer.ggml.token_type", ARR, (I32, [3, 3, 3] + [1] * (len(GPT2_TOKENS) - 3))),
        ("tokenizer.ggml.merges", ARR, (STR, GPT2_MERGES)),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.add_bos_token", BOOL, False),
    ]


def spm_metadata():
    return [
        ("general.architecture", STR, "gemma3"),
        ("tokenizer.ggml.model", STR, "llama"),
        ("tokenizer.ggml.tokens", ARR, (STR, SPM_TOKENS)),
        ("tokenizer.ggml.scores", ARR, (F32, [-float(i) for i in range(len(SPM_TOKENS))])),
        ("tokenizer.ggml.token_type", ARR, (I32, SPM_TYPES)),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.add_space_prefix", BOOL, True),
    ]


def gguf_seeds():
    small_tensors = [
        ("w.f32", [2, 3], 0, f32s([0.5, -1.0, 2.0, 3.5, 0.0, -0.25])),
        ("w.f16", [4], 1, b"\x00\x3c\x00\xc0\x00\x00\x00\x7c"),
        ("w.q8_0", [1, 32], 8, q8_0_block(0x3C00, 0)),
    ]
    meta = [("general.architecture", STR, "llama"), ("general.alignment", U32, 32),
            ("test.i64", I64, -5), ("test.f64", F64, 0.5), ("test.u8", U8, 7)]
    return {
        "small_tensors.gguf": gguf(meta, small_tensors),
        "align64.gguf": gguf([("general.alignment", U32, 64)], small_tensors[:1], 64),
        "tokenizer_gpt2.gguf": gguf(gpt2_metadata("qwen2"), []),
        "tokenizer_smollm.gguf": gguf(gpt2_metadata("smollm"), []),
        "tokenizer_spm.gguf": gguf(spm_metadata(), []),
    }

# ---------------------------------------------------------------- SafeTensors


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, data)]."""
    header, blobs = {}, b""
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blobs), len(blobs) + len(data)]}
        blobs += data
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + blobs


def safetensors_seeds():
    return {
        "dtypes.safetensors": safetensors([
            ("a.f32", "F32", [2, 2], f32s([1.0, -2.0, 0.5, 4.0])),
            ("b.f16", "F16", [3], b"\x00\x3c\x00\xc0\x00\x7e"),
            ("c.bf16", "BF16", [2], b"\x80\x3f\x00\xc0"),
            ("d.f64", "F64", [1], struct.pack("<d", 3.25)),
            ("e.i64", "I64", [2], struct.pack("<qq", -1, 7)),
            ("f.u8", "U8", [1, 3], b"\x01\x02\x03"),
            ("g.bool", "BOOL", [2], b"\x00\x01"),
            ("h.i32", "I32", [1], struct.pack("<i", -9)),
        ], {"format": "pt"}),
        "empty_tensor.safetensors": safetensors([("z", "F32", [0, 4], b""), ("s", "F32", [], f32s([1.0]))]),
        "single.safetensors": safetensors([("w", "F32", [1], f32s([2.0]))]),
    }

# ---------------------------------------------------------------- PyTorch pickle


def short_str(s):
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def tensor_pickle(name, storage_global, key, numel, shape, stride, offset=0):
    """The part of a torch.save state-dict pickle that rebuilds one tensor (protocol 2 opcodes)."""
    def small_int(n):
        return b"K" + bytes([n]) if n < 256 else b"M" + struct.pack("<H", n)

    p = short_str(name) + b"ctorch._utils\n_rebuild_tensor_v2\n(("
    p += short_str("storage") + b"ctorch\n" + storage_global.encode() + b"\n"
    p += short_str(key) + short_str("cpu") + small_int(numel) + b"tQ"
    p += small_int(offset)
    p += b"(" + b"".join(small_int(d) for d in shape) + b"t"
    p += b"(" + b"".join(small_int(d) for d in stride) + b"t"
    p += b"\x89ccollections\nOrderedDict\n)RtR"
    return p


def state_dict_pickle():
    p = b"\x80\x02ccollections\nOrderedDict\n)Rq\x00("
    p += tensor_pickle("w", "FloatStorage", "0", 6, [2, 3], [3, 1])
    p += tensor_pickle("h", "HalfStorage", "1", 32, [4], [2], offset=1)
    p += tensor_pickle("t", "FloatStorage", "0", 6, [3, 2], [1, 3])
    p += tensor_pickle("b", "ByteStorage", "2", 3, [3], [1])
    p += tensor_pickle("nested", "LongStorage", "3", 32, [2, 2], [2, 1])
    p += b"u}q\x01" + short_str("ignored") + b"Ns" + b"b."
    return p


def torch_zip(pickle, storages, prefix="archive"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", pickle)
        z.writestr(f"{prefix}/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"{prefix}/data/{key}", data)
        z.writestr(f"{prefix}/version", "3\n")
    return buf.getvalue()


def pickle_seeds():
    p = state_dict_pickle()
    storages = {"0": bytes(range(24)), "1": bytes(range(64)), "2": b"\x01\x02\x03", "3": bytes(256)}
    return {
        # Raw pickles: the target wraps them in an archive with the storages above.
        "state_dict.pkl": p,
        "minimal.pkl": b"\x80\x02}q\x00(" + tensor_pickle("w", "FloatStorage", "0", 6, [6], [1])[:-len(b"\x89ccollections\nOrderedDict\n)RtR")] + b"\x89}tRu.",
        # Whole archives.
        "state_dict.pt": torch_zip(p, storages),
        "deflated.pt": (lambda: _deflated(p, storages))(),
    }


def _deflated(p, storages):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model/data.pkl", p)
        for key, data in storages.items():
            z.writestr(f"model/data/{key}", data)
    return buf.getvalue()

# ---------------------------------------------------------------- tokenizer.json


def wordpiece_json():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "h", "##e", "##llo", "!"]
    special = lambda i, c: {"id": i, "content": c, "single_word": False, "lstrip": False,
                            "rstrip": False, "normalized": False, "special": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                                              "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": {t: i for i, t in enumerate(vocab)}},
    }


def bpe_json():
    vocab = {t: i for i, t in enumerate(GPT2_TOKENS)}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(GPT2_TOKENS[:3])],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": GPT2_MERGES},
    }


def unigram_json():
    pieces = [["<unk>", 0.0], ["\u2581", -1.0], ["\u2581hello", -2.0], ["\u2581world", -2.5], ["h", -3.0],
              ["e", -3.0], ["l", -3.0], ["o", -3.0]]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "post_processor": None,
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": 0, "vocab": pieces, "byte_fallback": False},
    }


def tokenizer_seeds(gguf_files):
    js = lambda v: json.dumps(v, ensure_ascii=False).encode()
    seeds = {"wordpiece.json": js(wordpiece_json()), "bpe.json": js(bpe_json()), "unigram.json": js(unigram_json())}
    seeds.update({k: v for k, v in gguf_files.items() if k.startswith("tokenizer_")})
    return seeds

# ----------------------------------------------------------------


def main():
    g = gguf_seeds()
    sets = {
        "gguf": g,
        "safetensors": safetensors_seeds(),
        "pickle": pickle_seeds(),
        "tokenizer": tokenizer_seeds(g),
    }
    copies = {
        "gguf": [CORE / "gguf" / "quants.gguf"],
        "pickle": [CORE / "pickle" / "variety.bin", CORE / "pickle" / "short_storage.bin"],
        "tokenizer": [CORE / "tiny-llama" / "tokenizer.json"],
    }
    for target, files in sets.items():
        d = SEEDS / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            assert len(data) < 100_000, name
            (d / name).write_bytes(data)
        for src in copies.get(target, []):
            shutil.copy(src, d / (src.parent.name + "_" + src.name))
    for target in sets:
        files = sorted((SEEDS / target).iterdir())
        print(target, len(files), "files,", sum(f.stat().st_size for f in files), "bytes")


if __name__ == "__main__":
    main()
