//! Parity with llama.cpp on the real Gemma 3 270M GGUF (Q4_K_M, `gemma3` architecture,
//! SentencePiece tokenizer): tokenization, chat rendering, greedy generation and logits. The
//! reference (tests/data/gemma3_reference.json) was written by
//! `scripts/reference/make_llama_reference.py --preset gemma3` running llama-cpp-python 0.3.36.
//!
//! All of the file's quantized layers (Q5_0, Q4_K, Q6_K, Q8_0) are computed as llama.cpp
//! computes them (8-bit activations, integer block sums). With every matrix in the packed
//! layout (AVX-512 VNNI CPUs), kiln's argmax equals llama.cpp's token at 279 of the 288
//! teacher-forced steps, all others near-ties, and its top logits come within 0.91 of
//! llama.cpp's in six of the nine prompts and within 1.41 in the other three (the long
//! paragraph and the two conversations); with ggml's row layout (`KILN_PACK=0`, or CPUs
//! without VNNI), 278 steps and within 0.86 (measured 2026-12-02 with `cargo run --release -p
//! kiln-core --example parity_report -- crates/kiln-core/tests/data/gemma3_reference.json
//! MODEL`). The packed kernels sum each block (or K super-block) exactly in integers and
//! scale it once, where llama.cpp (and the row layout) scale several partial sums per block:
//! the two layouts' outputs differ by about 1e-6 (`tests/packed_layout.rs`), and such
//! differences flip discrete roundings downstream (8-bit activation quantization, the f16 KV
//! cache, the f16 GELU table), which Gemma amplifies, as it does llama.cpp's own differences
//! from kiln.
//!
//! The file carries no chat template; kiln uses Gemma's own, and the reference rendering is
//! llama.cpp's built-in `gemma` template. Greedy decoding is compared teacher-forced at every
//! one of the 32 steps except llama.cpp's own near-ties (see `smollm2_parity.rs` for why).

mod common;

use kiln_core::ChatModel;
use std::sync::OnceLock;

/// Below this logit margin between llama.cpp's top two tokens, a step is a near-tie.
const TIE_MARGIN: f64 = 0.5;
/// Largest difference allowed between kiln's and llama.cpp's top logits (which run 6 to 30):
/// 1.25 before the packed layout (see above), which moves the worst prompt to 1.41.
const LOGIT_TOLERANCE: f64 = 2.0;

fn model() -> &'static ChatModel {
    static MODEL: OnceLock<ChatModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        common::load_model(
            "KILN_GEMMA3_GGUF",
            "models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
            "gemma-3-270m",
        )
    })
}

#[test]
fn architecture_is_read_from_the_file() {
    let c = model().model.config();
    assert_eq!(c.arch, "gemma3");
    assert_eq!(
        (c.layers, c.hidden, c.heads, c.kv_heads, c.head_dim),
        (18, 640, 4, 1, 256)
    );
    assert_eq!(c.sliding_window, Some((512, 10_000.0)));
    let global: Vec<usize> = (0..c.layers)
        .filter(|&l| c.window_of(l).is_none())
        .collect();
    assert_eq!(global, [5, 11, 17], "every sixth layer attends globally");
}

#[test]
fn sentencepiece_tokenization_matches_llama_cpp() {
    let r = common::reference("gemma3_reference.json");
    common::check_tokenization(model(), &r);
    assert!(model().tokenizer.add_bos, "Gemma prompts start with <bos>");
}

#[test]
fn built_in_gemma_template_renders_like_llama_cpp() {
    common::check_chat_rendering(model(), &common::reference("gemma3_reference.json"));
}

#[test]
fn greedy_generation_and_logits_match_llama_cpp() {
    let r = common::reference("gemma3_reference.json");
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
const IDENTICAL_PROMPTS: [&str; 3] = ["code", "numbers_punctuation", "system_user"];

#[test]
fn greedy_generation_is_identical_to_llama_cpp() {
    let r = common::reference("gemma3_reference.json");
    common::check_greedy_identical(model(), &r, &IDENTICAL_PROMPTS);
}

#[test]
fn streamed_text_equals_the_whole_decode() {
    common::check_text_stream(model());
}
