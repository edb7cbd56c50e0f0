//! Parity with llama.cpp on the real SmolLM2-135M-Instruct GGUF (Q4_1): tokenization,
//! chat-template rendering (its own ChatML template, rendered by jinja2 as transformers does),
//! greedy generation and logits. The reference (tests/data/smollm2_reference.json) was written
//! by scripts/reference/make_llama_reference.py running llama-cpp-python 0.3.36.
//!
//! kiln computes Q4_1/Q8_0 layers as llama.cpp does (8-bit activations, f16 KV cache), yet its
//! logits still differ from llama.cpp's by up to about 0.95 on logits of 20 to 40 with the
//! packed layout of AVX-512 VNNI CPUs, 0.7 with the ggml-row layout (measured 2026-12-02 with
//! `cargo run --release -p kiln-core --example parity_report`), the size of llama.cpp's own
//! variation between its configurations (up to 0.5 with flash attention on).
//! So greedy decoding is compared teacher-forced, at every one of the 32 steps, except where
//! llama.cpp's own top-two margin is below [`TIE_MARGIN`].

mod common;

use kiln_core::ChatModel;
use std::sync::OnceLock;

/// Below this logit margin between llama.cpp's top two tokens, a step is a near-tie.
const TIE_MARGIN: f64 = 0.5;
/// Largest difference allowed between kiln's and llama.cpp's top logits.
const LOGIT_TOLERANCE: f64 = 1.0;

fn model() -> &'static ChatModel {
    static MODEL: OnceLock<ChatModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        common::load_model(
            "KILN_SMOLLM2_GGUF",
            "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct",
        )
    })
}

#[test]
fn tokenization_matches_llama_cpp() {
    let r = common::reference("smollm2_reference.json");
    common::check_tokenization(model(), &r);
    // SmolLM2 ends on EOS `<|endoftext|>` (0) and on `<|im_end|>` (2).
    assert!(model().tokenizer.is_stop(0) && model().tokenizer.is_stop(2));
}

#[test]
fn chat_template_renders_like_transformers() {
    common::check_chat_rendering(model(), &common::reference("smollm2_reference.json"));
}

#[test]
fn greedy_generation_and_logits_match_llama_cpp() {
    let r = common::reference("smollm2_reference.json");
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
const IDENTICAL_PROMPTS: [&str; 1] = ["long_repeated_paragraph"];

#[test]
fn greedy_generation_is_identical_to_llama_cpp() {
    let r = common::reference("smollm2_reference.json");
    common::check_greedy_identical(model(), &r, &IDENTICAL_PROMPTS);
}

#[test]
fn streamed_text_equals_the_whole_decode() {
    common::check_text_stream(model());
}
