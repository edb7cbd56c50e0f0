#!/usr/bin/env python3
"""Writes a tiny Llama checkpoint in Hugging Face's SafeTensors layout, with transformers'
own outputs for it: the reference kiln's SafeTensors-decoder test checks against.

No real SafeTensors decoder checkpoint is available from PyPI (see shared/MODELS.md), so this
script makes one with transformers itself: a byte-level BPE tokenizer trained on a few
sentences, a 2-layer Llama with grouped-query attention and random weights (scaled up so that
greedy choices are not near-ties), saved with `save_pretrained` (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json with a ChatML template). It records
the tokenization and chat rendering of transformers' tokenizer, and the float32 logits and
greedy tokens of `LlamaForCausalLM`.

Run from the repository root (needs torch and transformers; CI does not run this):

    scripts/reference/.venv/bin/python scripts/reference/make_tiny_llama.py

It writes crates/kiln-core/tests/data/tiny-llama/ (model files and reference.json).
"""
import json
import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

OUT = "crates/kiln-core/tests/data/tiny-llama"
CORPUS = [
    "The kiln was fired for three days and three nights.",
    "Potters fed the firebox with split pine while the temperature climbed.",
    "When the bricks cooled, they opened the door and found the glazes had run together.",
    "A small model runs fast on a laptop CPU, and a large one needs a server.",
    "def add(a, b):\n    return a + b\n",
    "Caf\u00e9 au lait and croissants are a fine breakfast.",
] * 20
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
PROMPTS = ["The kiln was", "Potters fed the", "def add(a, b):", "Caf\u00e9 and croissants"]
CHATS = [
    [{"role": "user", "content": "Hello there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Fire the kiln?"}],
]
N_GEN = 16


def train_tokenizer():
    """The byte-level BPE tokenizer trained on CORPUS, with the ChatML template."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<s>", "</s>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", add_bos_token=True
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def randomize_norms(model):
    """Norm weights near 1 but not 1, so that a norm read wrongly changes the outputs."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))


def main():
    torch.manual_seed(0)
    tok = train_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        initializer_range=0.2,
    )
    save_with_reference(LlamaForCausalLM(config).eval(), tok, OUT, "scripts/reference/make_tiny_llama.py")


def save_with_reference(model, tok, out, script):
    """Randomizes the norms of `model`, saves it and `tok` in `out` and writes the reference."""
    randomize_norms(model)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    write_reference(model, tok, out, script)


def write_reference(model, tok, out, script):
    """Records transformers' tokenization, chat rendering, logits and greedy tokens in
    `out`/reference.json."""

    def greedy(ids):
        ids = list(ids)
        gen, logits_steps, margins = [], [], []
        with torch.no_grad():
            for _ in range(N_GEN):
                logits = model(torch.tensor([ids])).logits[0, -1].float()
                top = torch.topk(logits, 2)
                t = int(top.indices[0])
                margins.append(float(top.values[0] - top.values[1]))
                logits_steps.append([round(float(v), 6) for v in logits])
                gen.append(t)
                ids.append(t)
        return gen, logits_steps, margins

    completions = []
    for p in PROMPTS:
        ids = tok(p)["input_ids"]
        gen, steps, margins = greedy(ids)
        completions.append(
            {"name": p, "prompt": p, "prompt_ids": ids, "generated_ids": gen, "logits": steps, "top2_margins": margins}
        )
    chats = []
    for messages in CHATS:
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        chats.append(
            {
                "messages": messages,
                "rendered": rendered,
                "prompt_ids": tok(rendered, add_special_tokens=False)["input_ids"],
            }
        )
    tokenization = [
        {"text": t, "ids": tok(t)["input_ids"], "decoded": tok.decode(tok(t)["input_ids"])}
        for t in PROMPTS + ["", " spaces  and\ttabs\n", "<|im_start|>user\nhi<|im_end|>", "unseen: \u00fc\u00df \U0001F525"]
    ]
    ref = {
        "generated_by": script,
        "torch_version": torch.__version__,
        "transformers_version": __import__("transformers").__version__,
        "completions": completions,
        "chats": chats,
        "tokenization": tokenization,
    }
    with open(os.path.join(out, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False)
    print("wrote", out, sorted(os.listdir(out)))
    for c in completions:
        print(repr(c["prompt"]), "->", repr(tok.decode(c["generated_ids"])), "min margin", min(c["top2_margins"]))


if __name__ == "__main__":
    main()
