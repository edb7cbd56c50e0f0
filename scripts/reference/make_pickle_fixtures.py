#!/usr/bin/env python3
"""Writes the PyTorch-checkpoint fixtures of kiln-core's pickle tests with real torch.save.

Run from the repository root (needs torch and safetensors; CI does not run this):

    cargo run -p kiln-core --example write_tiny_bert -- /tmp/kiln-tiny-bert
    scripts/reference/.venv/bin/python scripts/reference/make_pickle_fixtures.py /tmp/kiln-tiny-bert

Writes into crates/kiln-core/tests/data/pickle/:
- tiny_bert.safetensors / tiny_bert.bin: kiln's tiny BERT, and the same tensors saved by torch.save
- variety.bin + variety.json: tensors of many dtypes, views into a larger storage, a transposed
  (non-contiguous) tensor, two tensors sharing one storage, a 0-d scalar, and the expected values
- hostile_os_system.bin, hostile_eval.bin: checkpoints whose pickle calls os.system / builtins.eval
- truncated_pickle.bin: a checkpoint whose data.pkl is cut short
- short_storage.bin: a checkpoint whose storage holds fewer bytes than its tensor needs
- legacy.bin: a checkpoint in the pre-1.6 (non-zip) format
"""
import io
import json
import os
import shutil
import sys
import zipfile

import torch
from safetensors.torch import load_file

OUT = "crates/kiln-core/tests/data/pickle"


class CallsSystem:
    def __reduce__(self):
        return (os.system, ("touch /tmp/kiln_pwned",))


class CallsEval:
    def __reduce__(self):
        import builtins

        return (builtins.eval, ("__import__('os').system('touch /tmp/kiln_pwned')",))


def rewrite_entry(src, dst, name_suffix, transform):
    """Copies zip `src` to `dst`, passing the bytes of the entry ending in `name_suffix` through `transform`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith(name_suffix):
                data = transform(data)
            zout.writestr(item, data)


def main():
    tiny_dir = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    shutil.copy(os.path.join(tiny_dir, "model.safetensors"), f"{OUT}/tiny_bert.safetensors")
    torch.save(load_file(f"{OUT}/tiny_bert.safetensors"), f"{OUT}/tiny_bert.bin")

    base = torch.arange(24, dtype=torch.float32) / 4 - 3
    shared = torch.arange(10, dtype=torch.int64) * 7 - 20
    variety = {
        "f32_matrix": torch.linspace(-1, 1, 12, dtype=torch.float32).reshape(3, 4),
        "f16": torch.tensor([0.5, -1.25, 3.0, 65504.0], dtype=torch.float16),
        "bf16": torch.tensor([[1.5, -2.0], [0.0078125, 100.0]], dtype=torch.bfloat16),
        "f64": torch.tensor([1e-300, -2.5], dtype=torch.float64),
        "i64": torch.tensor([-(2**40), 0, 2**40], dtype=torch.int64),
        "i32": torch.tensor([-7, 7], dtype=torch.int32),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.25),
        "view_of_bigger_storage": base[5:11],
        "transposed": base[:12].reshape(3, 4).t(),
        "shared_a": shared[:4],
        "shared_b": shared[2:9],
    }
    torch.save(variety, f"{OUT}/variety.bin")
    expected = {
        name: {
            "dtype": str(t.dtype).replace("torch.", ""),
            "shape": list(t.shape),
            "values": t.to(torch.float64).flatten().tolist(),
        }
        for name, t in variety.items()
    }
    with open(f"{OUT}/variety.json", "w") as f:
        json.dump(expected, f, indent=1)

    torch.save({"weight": torch.ones(2), "payload": CallsSystem()}, f"{OUT}/hostile_os_system.bin")
    torch.save({"weight": torch.ones(2), "payload": CallsEval()}, f"{OUT}/hostile_eval.bin")

    small = f"{OUT}/_small.bin"
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, small)
    rewrite_entry(small, f"{OUT}/truncated_pickle.bin", "data.pkl", lambda b: b[: len(b) // 2])
    rewrite_entry(small, f"{OUT}/short_storage.bin", "/data/0", lambda b: b[:8])
    os.remove(small)

    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf, _use_new_zipfile_serialization=False)
    with open(f"{OUT}/legacy.bin", "wb") as f:
        f.write(buf.getvalue())
    print("wrote fixtures to", OUT, "with torch", torch.__version__)


if __name__ == "__main__":
    main()
