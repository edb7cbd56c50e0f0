#!/usr/bin/env python3
"""Writes llama.cpp's SwiGLU, `silu(gate) * up`, for a set of inputs: the reference of
crates/kiln-kernels/tests/swiglu_parity.rs.

It calls `ggml_vec_swiglu_f32` of the ggml CPU library that llama-cpp-python 0.3.36 ships (the
function llama.cpp's SmolLM2 and Qwen2.5 feed-forward blocks run), through ctypes, and stores
inputs and outputs as `f32` bit patterns. It needs the library built for an AVX-512 CPU: the chat
benchmark's build of `scripts/reference/.venv-llama` (bench/README.md: `CMAKE_ARGS="-DGGML_NATIVE=ON"
pip install --no-binary llama-cpp-python llama-cpp-python==0.3.36` on an AVX-512 machine; the
`GGML_NATIVE=OFF` build of make_llama_reference.py compiles ggml's AVX2 path instead). It checks
that llama.cpp's system info reports `AVX512 = 1` and stores that line. 4099 values, so that the
last 3 take ggml's scalar tail (the C library's expf).

    scripts/reference/.venv-llama/bin/python scripts/reference/make_swiglu_reference.py
"""
import ctypes
import json
import pathlib
import struct

import llama_cpp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/kiln-kernels/tests/data/swiglu_reference.json"


def bits(a):
    return [struct.unpack("<I", struct.pack("<f", float(v)))[0] for v in a]


def main():
    info = llama_cpp.llama_print_system_info().decode()
    if "AVX512 = 1" not in info:
        raise SystemExit(f"this llama-cpp-python was not built for AVX-512: {info}")
    lib = ctypes.CDLL(str(pathlib.Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so"))
    f = lib.ggml_vec_swiglu_f32
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    f.restype = None
    rng = np.random.default_rng(7)
    gate = np.concatenate([
        np.linspace(-30.0, 30.0, 2000),           # where feed-forward gates live
        rng.normal(0.0, 4.0, 1500),
        np.linspace(-120.0, 120.0, 560),          # past exp's overflow and underflow
        [87.5, 88.5, 89.0, -103.0, -104.0, 0.0, -0.0, 1e-30, -1e-30, 150.0, -150.0, 200.0,
         -200.0, 1e-3, -1e-3, 0.5, -0.5, 7.0, -7.0, 3.25, 40.0, -40.0, 1.0, -1.0],
    ]).astype(np.float32)
    gate = np.concatenate([gate, rng.normal(0.0, 2.0, 4099 - len(gate)).astype(np.float32)])
    up = rng.normal(0.0, 1.5, len(gate)).astype(np.float32)
    out = np.zeros_like(gate)
    f(len(gate), out.ctypes.data, gate.ctypes.data, up.ctypes.data)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "source": f"ggml_vec_swiglu_f32 of llama-cpp-python {llama_cpp.__version__}'s libggml-cpu.so",
        "system_info": info.strip(),
        "gate": bits(gate), "up": bits(up), "out": bits(out),
    }) + "\n")
    print(f"wrote {OUT} ({len(gate)} values)")


if __name__ == "__main__":
    main()
