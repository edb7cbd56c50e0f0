#!/usr/bin/env python3
"""Writes kiln-core's GGUF fixtures with the `gguf` Python package (llama.cpp's own gguf-py).

    scripts/reference/.venv/bin/pip install gguf numpy
    scripts/reference/.venv/bin/python scripts/reference/make_gguf_fixtures.py

Writes crates/kiln-core/tests/data/gguf/quants.gguf (metadata of every value type, one tensor
per storage type with random blocks whose scale fields are sane) and quants.json, the values
gguf-py's own `dequantize` gives for each tensor: the reference for kiln's dequantization
(gguf-py cannot dequantize Q8_K; kiln tests that type by hand).
"""
import json

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

OUT = "crates/kiln-core/tests/data/gguf"
rng = np.random.default_rng(7)

# Byte offsets of f16 scale fields inside one block, per type (f32 for Q8_K).
SCALE_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def random_blocks(qtype, rows, cols):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    nblocks = rows * cols // block_elems
    raw = rng.integers(0, 256, size=(nblocks, block_bytes), dtype=np.uint8)
    for off in SCALE_FIELDS.get(qtype, []):
        scales = rng.uniform(0.001, 0.05, size=nblocks).astype(np.float16)
        raw[:, off:off + 2] = scales.view(np.uint8).reshape(nblocks, 2)
    if qtype == T.Q8_K:
        scales = rng.uniform(0.001, 0.05, size=nblocks).astype(np.float32)
        raw[:, 0:4] = scales.view(np.uint8).reshape(nblocks, 4)
    return raw.reshape(rows, -1)


def main():
    w = gguf.GGUFWriter(f"{OUT}/quants.gguf", arch="llama")
    w.add_name("kiln quant fixture")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 0.25)
    w.add_uint64("test.u64", 2**60)
    w.add_int64("test.i64", -(2**60))
    w.add_float64("test.f64", 1e-300)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo ✓")
    w.add_array("test.array_i32", [1, -2, 3])
    w.add_array("test.array_str", ["a", "bc", ""])
    expected = {}
    rows, cols = 2, 256
    for qtype in [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]:
        name = f"t.{qtype.name.lower()}"
        if qtype in (T.F32, T.F16):
            dt = np.float32 if qtype == T.F32 else np.float16
            data = rng.standard_normal((rows, cols)).astype(dt)
            w.add_tensor(name, data)
            values = data.astype(np.float64)
        else:
            if qtype == T.BF16:
                raw = (rng.standard_normal((rows, cols)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
                raw = raw.view(np.uint8).reshape(rows, -1)
            else:
                raw = random_blocks(qtype, rows, cols)
            w.add_tensor(name, raw, raw_dtype=qtype)
            values = gguf.quants.dequantize(raw, qtype).astype(np.float64)
        expected[name] = {"type": qtype.name, "shape": [rows, cols], "values": [float(v) for v in values.flatten()]}
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(f"{OUT}/quants.json", "w") as f:
        json.dump({"gguf_py_version": getattr(gguf, "__version__", "unknown"), "tensors": expected}, f)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
