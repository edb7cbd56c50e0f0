//! Checks of the tiny SafeTensors decoders against transformers: each `tiny-*/reference.json`
//! was written by the `scripts/reference/make_tiny_*.py` script that made the checkpoint with
//! transformers (its tokenization, chat renderings, float32 logits and greedy tokens).

use crate::common::ids;
use kiln_core::chat_template::ChatMessage;
use kiln_core::ChatModel;
use serde_json::Value;

/// A tiny SafeTensors checkpoint's tokenizer and chat template against transformers' own
/// (`reference.json` of `make_tiny_llama.py` or `make_tiny_qwen3.py`): every reference text
/// tokenizes to transformers' ids and decodes back to its text, and every chat renders to its
/// text and ids.
pub fn check_transformers_tokenizer(m: &ChatModel, r: &Value) {
    for case in r["tokenization"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        assert_eq!(m.encode_prompt(text).unwrap(), want, "{text:?}");
        assert_eq!(
            m.tokenizer.decode(&want, false).unwrap(),
            case["decoded"].as_str().unwrap()
        );
    }
    for chat in r["chats"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = serde_json::from_value(chat["messages"].clone()).unwrap();
        assert_eq!(
            m.render_chat(&messages).unwrap(),
            chat["rendered"].as_str().unwrap()
        );
        assert_eq!(m.encode_chat(&messages).unwrap(), ids(&chat["prompt_ids"]));
    }
}

/// A tiny SafeTensors checkpoint's logits against transformers' float32 ones, teacher-forced
/// with transformers' greedy tokens: every logit of every step within 1e-3, and every argmax
/// transformers' token.
pub fn check_transformers_logits(m: &ChatModel, r: &Value) {
    let mut worst = 0.0f64;
    for item in r["completions"].as_array().unwrap() {
        let prompt = ids(&item["prompt_ids"]);
        let generated = ids(&item["generated_ids"]);
        let mut cache = m.model.new_cache(prompt.len() + generated.len());
        let mut logits = m.model.forward(&prompt, &mut cache).unwrap();
        for (step, want_logits) in item["logits"].as_array().unwrap().iter().enumerate() {
            let want: Vec<f64> = want_logits
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(want.len(), logits.len());
            for (g, w) in logits.iter().zip(&want) {
                worst = worst.max((*g as f64 - w).abs());
            }
            let argmax = kiln_core::sampling::argmax(&logits);
            assert_eq!(argmax, generated[step], "{} step {step}", item["name"]);
            if step + 1 < generated.len() {
                logits = m.model.forward(&[generated[step]], &mut cache).unwrap();
            }
        }
    }
    eprintln!("largest logit difference from transformers: {worst:.2e}");
    assert!(worst < 1e-3, "logits differ from transformers by {worst}");
}
