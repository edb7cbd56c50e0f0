#!/usr/bin/env python3
"""CPU peer for the embeddings benchmark: ONNX Runtime (fp32) behind the same FastAPI shape.

Tokenizes with the `tokenizers` package from the model's tokenizer.json (truncation to
--max-seq-length, padding to the longest in the batch), runs the exported encoder
(bench/.cache/onnx/model_opt.onnx if present, else model.onnx; see export_onnx.py) with
--threads intra-op threads, then mean-pools over the attention mask and L2-normalizes.

    bench/.venv/bin/python bench/embeddings/onnx_server.py --model models/all-MiniLM-L6-v2 --port 8002
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import base_arg_parser, make_app, serve  # noqa: E402

DEFAULT_ONNX_DIR = os.path.join(os.path.dirname(HERE), ".cache", "onnx")


def main() -> None:
    p = base_arg_parser(__doc__.splitlines()[0])
    p.add_argument("--onnx", default=None, help="ONNX file (default: model_opt.onnx, else model.onnx, in bench/.cache/onnx)")
    args = p.parse_args()

    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    path = args.onnx
    if path is None:
        for name in ("model_opt.onnx", "model.onnx"):
            if os.path.exists(os.path.join(DEFAULT_ONNX_DIR, name)):
                path = os.path.join(DEFAULT_ONNX_DIR, name)
                break
    if path is None or not os.path.exists(path):
        sys.exit(f"onnx_server: no ONNX model; run bench/embeddings/export_onnx.py first (looked in {DEFAULT_ONNX_DIR})")

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    input_names = {i.name for i in sess.get_inputs()}
    print(f"onnx_server: {path}, onnxruntime {ort.__version__}, {args.threads} intra-op threads", flush=True)

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.enable_truncation(args.max_seq_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest in the batch
    name = os.path.basename(os.path.normpath(args.model))

    def embed(texts):
        enc = tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in input_names:
            feeds["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
        hidden = sess.run(None, feeds)[0]  # [batch, seq, dim]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled, int(mask.sum())

    serve(make_app(embed, name, args.serialize), args.host, args.port)


if __name__ == "__main__":
    main()
