#!/usr/bin/env python3
"""Writes a tiny Qwen 3 checkpoint twice, as Hugging Face SafeTensors and as a Q8_0 GGUF file,
with transformers' own outputs for the SafeTensors one: the reference kiln's Qwen 3 tests check
against (llama.cpp's outputs for the GGUF file come from `make_llama_reference.py --preset
tiny-qwen3`).

No real Qwen 3 file is available from PyPI (see shared/MODELS.md), so this script makes one with
transformers itself, as `make_tiny_llama.py` does for Llama (same tokenizer, prompts and chats):
a 2-layer `Qwen3ForCausalLM` with grouped-query attention, per-head query/key norms, heads wider
than hidden / heads (32, not 16), tied embeddings and random weights. The GGUF file holds the
same weights the way llama.cpp's converter writes a Qwen 3 (architecture `qwen3`, NeoX RoPE so
no permutation, the tokenizer as `gpt2` BPE with Qwen's `qwen2` pre-tokenizer), its matrices
quantized to Q8_0 by the `gguf` package, and Qwen 3's own chat template in its metadata as a
real Qwen 3 file has it (`templates/qwen3.jinja`: the `chat_template` of Qwen/Qwen3-0.6B's
tokenizer_config.json, Apache-2.0, byte for byte; with tools, `<think>` reasoning, and a
namespace walked backwards), so that kiln's rendering of it is checked against jinja2's.

Run from the repository root (needs torch, transformers and gguf; CI does not run this):

    scripts/reference/.venv/bin/python scripts/reference/make_tiny_qwen3.py
    scripts/reference/.venv-llama/bin/python scripts/reference/make_llama_reference.py --preset tiny-qwen3

It writes crates/kiln-core/tests/data/tiny-qwen3/ (model files and reference.json) and, beside
it, crates/kiln-core/tests/data/tiny-qwen3.Q8_0.gguf.
"""
import json
import os

import gguf
import numpy as np
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from make_tiny_llama import save_with_reference, train_tokenizer

OUT = "crates/kiln-core/tests/data/tiny-qwen3"
GGUF = "crates/kiln-core/tests/data/tiny-qwen3.Q8_0.gguf"
QWEN3_TEMPLATE = os.path.join(os.path.dirname(__file__), "templates", "qwen3.jinja")
HEAD_DIM = 32
ROPE_THETA = 1_000_000.0


def write_gguf(model, tok, config):
    w = gguf.GGUFWriter(GGUF, "qwen3")
    w.add_name("tiny-qwen3")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)

    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for text, i in vocab.items():
        tokens[i] = text
    special = {t.content for t in tok.backend_tokenizer.get_added_tokens_decoder().values() if t.special}
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(
        [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    )
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.convert_tokens_to_ids("<|im_end|>"))
    w.add_add_bos_token(False)
    with open(QWEN3_TEMPLATE, encoding="utf-8") as f:
        w.add_chat_template(f.read())

    # The tensor names llama.cpp's converter gives a Qwen 3's parameters.
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, config.num_hidden_layers)
    for name, p in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied: llama.cpp reads the embeddings as the output matrix
        data = p.detach().float().numpy()
        out = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if data.ndim == 2:
            w.add_tensor(
                out,
                gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                raw_dtype=gguf.GGMLQuantizationType.Q8_0,
            )
        else:
            w.add_tensor(out, data.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", GGUF, os.path.getsize(GGUF), "bytes")


def main():
    torch.manual_seed(0)
    tok = train_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=HEAD_DIM,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_theta=ROPE_THETA,
        tie_word_embeddings=True,
        attention_bias=False,
        use_sliding_window=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        initializer_range=0.2,
    )
    model = Qwen3ForCausalLM(config).eval()
    save_with_reference(model, tok, OUT, "scripts/reference/make_tiny_qwen3.py")
    write_gguf(model, tok, config)


if __name__ == "__main__":
    main()
