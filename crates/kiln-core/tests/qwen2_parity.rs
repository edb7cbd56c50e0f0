//! Parity with llama.cpp on the real Qwen2.5-Coder-0.5B-Instruct GGUF (`qwen2` architecture:
//! biases on the query/key/value projections, NeoX RoPE; byte-level BPE with Qwen's
//! pre-tokenizer; mixed Q5_0/Q4_K/Q6_K/Q8_0 layers): tokenization, chat rendering (its own
//! template, rendered by jinja2 as transformers does), greedy generation and logits. The
//! reference (tests/data/qwen2_reference.json) was written by
//! `scripts/reference/make_llama_reference.py --preset qwen2` running llama-cpp-python 0.3.36.
//! Greedy decoding is compared teacher-forced at every one of the 32 steps except llama.cpp's
//! own near-ties (see `smollm2_parity.rs` for why).

mod common;

use kiln_core::ChatModel;
use std::sync::OnceLock;

/// Below this logit margin between llama.cpp's top two tokens, a step is a near-tie.
const TIE_MARGIN: f64 = 0.5;
/// Largest difference allowed between kiln's and llama.cpp's top logits.
const LOGIT_TOLERANCE: f64 = 1.25;

fn model() -> &'static ChatModel {
    static MODEL: OnceLock<ChatModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        common::load_model(
            "KILN_QWEN2_GGUF",
            "models/Qwen2.5-Coder-0.5B-Instruct/qwen2.5-coder-0.5b-instruct.gguf",
            "Qwen2.5-Coder-0.5B-Instruct",
        )
    })
}

#[test]
fn architecture_is_read_from_the_file() {
    let c = model().model.config();
    assert_eq!(c.arch, "qwen2");
    assert_eq!(
        (c.layers, c.hidden, c.heads, c.kv_heads, c.head_dim),
        (24, 896, 14, 2, 64)
    );
    assert_eq!(c.sliding_window, None);
}

#[test]
fn tokenization_matches_llama_cpp() {
    common::check_tokenization(model(), &common::reference("qwen2_reference.json"));
}

#[test]
fn chat_template_renders_like_transformers() {
    common::check_chat_rendering(model(), &common::reference("qwen2_reference.json"));
}

#[test]
fn greedy_generation_and_logits_match_llama_cpp() {
    let r = common::reference("qwen2_reference.json");
    let (compared, total) =
        common::check_greedy_teacher_forced(model(), &r, TIE_MARGIN, LOGIT_TOLERANCE);
    eprintln!("greedy tokens identical at {compared} of {total} steps (the rest are near-ties)");
    assert!(
        compared * 10 >= total * 7,
        "only {compared} of {total} steps compared"
    );
}

/// The reference prompts on which kiln's free-running greedy output is llama.cpp's, token for
/// token, on every kernel path kiln has (packed AVX-512 VNNI, ggml-row VNNI, AVX2, plain:
/// `KILN_PACK=0`, `KILN_VNNI=0`, `KILN_SIMD=avx2|baseline`), found with the parity_report
/// example. On the others some path takes the other side of a near-tie step once (llama.cpp's
/// top-two margin there is under 0.11) and the continuation parts; the teacher-forced test above
/// covers every step of those.
const IDENTICAL_PROMPTS: [&str; 7] = [
    "plain_sentence",
    "code",
    "numbers_punctuation",
    "list",
    "long_repeated_paragraph",
    "single_user",
    "system_user",
];

#[test]
fn greedy_generation_is_identical_to_llama_cpp() {
    let r = common::reference("qwen2_reference.json");
    common::check_greedy_identical(model(), &r, &IDENTICAL_PROMPTS);
}

#[test]
fn streamed_text_equals_the_whole_decode() {
    common::check_text_stream(model());
}
