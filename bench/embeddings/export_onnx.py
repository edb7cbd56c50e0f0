#!/usr/bin/env python3
"""Exports the model's transformer to ONNX (fp32) for onnx_server.py, into bench/.cache/onnx/.

Writes <out>/model.onnx (torch.onnx export of the BERT encoder: input_ids, attention_mask,
token_type_ids -> last_hidden_state, dynamic batch and sequence axes) and, when ONNX Runtime's
transformer optimizer succeeds, <out>/model_opt.onnx (fused attention/LayerNorm/GELU, still
fp32), which onnx_server.py prefers. Each file is checked against torch before it is kept.

    bench/.venv/bin/python bench/embeddings/export_onnx.py --model models/all-MiniLM-L6-v2
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
REPO = os.path.dirname(BENCH)

SAMPLES = [
    "This is a test sentence.",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "hello",
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(REPO, "models", "all-MiniLM-L6-v2"))
    p.add_argument("--out", default=os.path.join(BENCH, ".cache", "onnx"))
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--force", action="store_true", help="re-export even if the files exist")
    args = p.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    os.makedirs(args.out, exist_ok=True)
    plain = os.path.join(args.out, "model.onnx")
    opt = os.path.join(args.out, "model_opt.onnx")
    if os.path.exists(plain) and not args.force:
        print(f"export_onnx: {plain} exists (use --force to redo)")
        return 0

    torch.set_num_threads(2)
    # eager attention exports the classic BERT pattern that ORT's optimizer can fuse into Attention
    model = AutoModel.from_pretrained(args.model, attn_implementation="eager").eval()
    cfg = model.config

    class Encoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.enable_truncation(256)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(SAMPLES)
    feeds = {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }
    tfeeds = tuple(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    with torch.inference_mode():
        ref = Encoder(model)(*tfeeds).numpy()

    names = ["input_ids", "attention_mask", "token_type_ids"]
    dyn = {n: {0: "batch", 1: "sequence"} for n in names}
    dyn["last_hidden_state"] = {0: "batch", 1: "sequence"}
    tmp = plain + ".tmp"
    try:
        torch.onnx.export(
            Encoder(model), tfeeds, tmp, input_names=names, output_names=["last_hidden_state"],
            dynamic_axes=dyn, opset_version=args.opset, do_constant_folding=True, dynamo=False,
        )
        how = "torch.onnx.export (TorchScript exporter)"
    except Exception as e:  # the legacy exporter may be gone in newer torch: use the dynamo one
        print(f"export_onnx: TorchScript exporter failed ({type(e).__name__}: {e}); trying dynamo=True")
        batch = torch.export.Dim("batch", min=1, max=1024)
        seq = torch.export.Dim("sequence", min=1, max=512)
        shapes = {n: {0: batch, 1: seq} for n in names}
        torch.onnx.export(
            Encoder(model), tfeeds, tmp, input_names=names, output_names=["last_hidden_state"],
            dynamic_shapes=shapes, opset_version=max(args.opset, 18), dynamo=True, external_data=False,
        )
        how = "torch.onnx.export(dynamo=True)"

    def check(path: str) -> float:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        want = {i.name for i in sess.get_inputs()}
        out = sess.run(None, {k: v for k, v in feeds.items() if k in want})[0]
        return float(np.abs(out - ref).max())

    err = check(tmp)
    if err > 1e-3:
        print(f"export_onnx: exported model differs from torch (max abs {err:.2e}); not kept", file=sys.stderr)
        return 1
    os.replace(tmp, plain)
    info = {"exporter": how, "torch": torch.__version__, "opset": args.opset, "max_abs_diff_vs_torch": err}
    print(f"export_onnx: wrote {plain} via {how}; max |onnx - torch| = {err:.2e}")

    try:
        from onnxruntime.transformers.optimizer import optimize_model

        m = optimize_model(
            plain, model_type="bert", num_heads=cfg.num_attention_heads, hidden_size=cfg.hidden_size,
            opt_level=1, use_gpu=False, only_onnxruntime=False,
        )
        m.save_model_to_file(opt + ".tmp")
        err2 = check(opt + ".tmp")
        if err2 > 1e-3:
            raise RuntimeError(f"optimized model differs from torch (max abs {err2:.2e})")
        os.replace(opt + ".tmp", opt)
        info["optimized"] = {"fused_ops": m.get_fused_operator_statistics(), "max_abs_diff_vs_torch": err2}
        print(f"export_onnx: wrote {opt} (ORT transformer optimizer); max |onnx - torch| = {err2:.2e}")
    except Exception as e:
        print(f"export_onnx: ORT transformer optimizer skipped ({type(e).__name__}: {e}); serving {plain}")
        if os.path.exists(opt + ".tmp"):
            os.remove(opt + ".tmp")
    with open(os.path.join(args.out, "export_info.json"), "w") as f:
        json.dump(info, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
