#!/usr/bin/env python3
"""Python baseline for the embeddings benchmark: sentence-transformers behind FastAPI/uvicorn.

What a Python team would deploy: SentenceTransformer(model).encode(...) in a FastAPI `def`
endpoint, one uvicorn worker, torch limited to --threads intra-op threads (2 by default).

    bench/.venv/bin/python bench/embeddings/python_server.py --model models/all-MiniLM-L6-v2 --port 8001
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import base_arg_parser, make_app, serve  # noqa: E402


def main() -> None:
    args = base_arg_parser(__doc__.splitlines()[0]).parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_seq_length
    model.eval()
    tokenizer = model.tokenizer
    name = os.path.basename(os.path.normpath(args.model))

    def embed(texts):
        # usage.prompt_tokens, counted the way the model sees the input (with [CLS]/[SEP], truncated)
        enc = tokenizer(texts, truncation=True, max_length=args.max_seq_length)
        tokens = sum(len(ids) for ids in enc["input_ids"])
        vectors = model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
        return vectors, tokens

    serve(make_app(embed, name, args.serialize), args.host, args.port)


if __name__ == "__main__":
    main()
