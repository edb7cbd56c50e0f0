//! Checks shared by the llama.cpp parity tests: each reference file was written by
//! `scripts/reference/make_llama_reference.py` running llama-cpp-python 0.3.36 on a GGUF file.

use kiln_core::chat_template::ChatMessage;
use kiln_core::sampling::{Sampler, SamplingParams};
use kiln_core::ChatModel;
use serde_json::Value;
use std::path::PathBuf;

/// The path of a real model: `$env_var`, or `default` relative to the repository root.
pub fn model_path(env_var: &str, default: &str) -> PathBuf {
    std::env::var_os(env_var).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(default)
        },
        PathBuf::from,
    )
}

/// Loads the real model at `default` (relative to the repository root), or `$env_var`.
pub fn load_model(env_var: &str, default: &str, fetch_name: &str) -> ChatModel {
    let path = model_path(env_var, default);
    assert!(
        path.is_file(),
        "the real model is missing at {}: run `cargo run --release -p kiln-cli -- fetch {fetch_name}` (or scripts/test.sh)",
        path.display()
    );
    ChatModel::load(&path).unwrap()
}

/// The reference file `tests/data/NAME`.
pub fn reference(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Every reference string tokenizes to llama.cpp's ids (BOS as the model asks, special-token
/// text parsed), and those ids decode back to llama.cpp's text.
pub fn check_tokenization(m: &ChatModel, r: &Value) {
    let tok = &m.tokenizer;
    assert_eq!(
        tok.bos,
        Some(r["tokenizer"]["bos_id"].as_u64().unwrap() as u32)
    );
    assert_eq!(
        tok.eos,
        Some(r["tokenizer"]["eos_id"].as_u64().unwrap() as u32)
    );
    assert_eq!(
        tok.add_bos,
        r["tokenizer"]["add_bos_effective"].as_bool().unwrap()
    );
    let eot = r["tokenizer"]["eot_id"].as_i64().unwrap();
    if eot >= 0 {
        assert!(
            tok.is_stop(eot as u32),
            "the end-of-turn token {eot} must stop"
        );
    }
    let cases = r["tokenization"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected = ids(&case["ids_special"]);
        assert_eq!(tok.encode(text, true).unwrap(), expected, "{text:?}");
        assert_eq!(
            tok.decode(&expected, false).unwrap(),
            case["detokenized_special"].as_str().unwrap(),
            "decoding {text:?}"
        );
    }
}

/// kiln renders each conversation as the reference did, and tokenizes it to the same ids.
/// A reference rendered by llama.cpp's built-in template lacks the BOS text kiln's template
/// writes (llama.cpp adds BOS when tokenizing instead).
pub fn check_chat_rendering(m: &ChatModel, r: &Value) {
    let builtin = r["settings"]["chat_render"]
        .as_str()
        .unwrap()
        .contains("built-in");
    let bos_text = r["tokenizer"]["bos_text"].as_str().unwrap();
    let conversations = r["chat"]["conversations"].as_array().unwrap();
    assert!(conversations.len() >= 3);
    for conv in conversations {
        let messages: Vec<ChatMessage> = serde_json::from_value(conv["messages"].clone()).unwrap();
        let rendered = conv["rendered"].as_str().unwrap();
        let expected = if builtin {
            format!("{bos_text}{rendered}")
        } else {
            rendered.to_string()
        };
        assert_eq!(
            m.render_chat(&messages).unwrap(),
            expected,
            "{}",
            conv["name"]
        );
        assert_eq!(
            m.encode_chat(&messages).unwrap(),
            ids(&conv["prompt_ids"]),
            "{}",
            conv["name"]
        );
    }
}

/// Free-running greedy generation: for each prompt named in `names`, kiln generates on its own
/// (greedy [`Sampler`], its own tokens fed back, stopping early only on a stop token) and its
/// tokens must be exactly llama.cpp's, all of them.
pub fn check_greedy_identical(m: &ChatModel, r: &Value, names: &[&str]) {
    let mut items: Vec<&Value> = r["completions"].as_array().unwrap().iter().collect();
    items.extend(r["chat"]["conversations"].as_array().unwrap().iter());
    let mut tokens = 0;
    for &name in names {
        let item = items
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no prompt {name} in the reference"));
        let prompt = ids(&item["prompt_ids"]);
        let want = ids(&item["generated_ids"]);
        let mut sampler = Sampler::new(SamplingParams::greedy());
        let mut cache = m.model.new_cache(prompt.len() + want.len() + 1);
        let mut logits = m.model.forward(&prompt, &mut cache).unwrap();
        let mut got = Vec::new();
        while got.len() < want.len() {
            let next = sampler.sample(&logits, &got);
            got.push(next);
            if m.tokenizer.is_stop(next) || got.len() == want.len() {
                break;
            }
            logits = m.model.forward(&[next], &mut cache).unwrap();
        }
        assert_eq!(
            got, want,
            "{name}: kiln's greedy tokens differ from llama.cpp's"
        );
        tokens += want.len();
    }
    eprintln!(
        "{tokens} greedy tokens identical over {} prompts",
        names.len()
    );
}

/// Teacher-forced greedy comparison of every generation in the reference: llama.cpp's tokens
/// are fed back step by step, and at each step kiln's top logits must be within
/// `logit_tolerance` of llama.cpp's (first steps, where the reference keeps them) and kiln's
/// argmax must be llama.cpp's token unless llama.cpp's own top-two margin is below
/// `tie_margin`. Returns (steps where the argmax was compared, steps in all).
pub fn check_greedy_teacher_forced(
    m: &ChatModel,
    r: &Value,
    tie_margin: f64,
    logit_tolerance: f64,
) -> (usize, usize) {
    let mut items: Vec<&Value> = r["completions"].as_array().unwrap().iter().collect();
    items.extend(
        r["chat"]["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.get("generated_ids").is_some()),
    );
    assert!(items.len() >= 5, "the reference needs at least 5 prompts");
    let (mut compared, mut total) = (0, 0);
    for item in items {
        let name = item["name"].as_str().unwrap();
        if let Some(prompt) = item["prompt"].as_str() {
            assert_eq!(
                m.encode_prompt(prompt).unwrap(),
                ids(&item["prompt_ids"]),
                "{name} prompt ids"
            );
        }
        let prompt = ids(&item["prompt_ids"]);
        let generated = ids(&item["generated_ids"]);
        let margins = item["top2_margins"].as_array().unwrap();
        let top = item["top_logits"].as_array().unwrap();
        let mut cache = m.model.new_cache(prompt.len() + generated.len() + 1);
        let mut logits = m.model.forward(&prompt, &mut cache).unwrap();
        for (step, &want) in generated.iter().enumerate() {
            if let Some(top) = top.get(step) {
                for pair in top.as_array().unwrap() {
                    let (id, l) = (
                        pair[0].as_u64().unwrap() as usize,
                        pair[1].as_f64().unwrap(),
                    );
                    let got = logits[id] as f64;
                    assert!(
                        (got - l).abs() <= logit_tolerance,
                        "{name} step {step}: logit of {id} is {got}, llama.cpp {l}"
                    );
                }
            }
            let got = kiln_core::sampling::argmax(&logits);
            let margin = margins[step].as_f64().unwrap();
            total += 1;
            if margin >= tie_margin {
                assert_eq!(
                    got, want,
                    "{name}: greedy token {step} differs (llama.cpp margin {margin})"
                );
                compared += 1;
            }
            if step + 1 < generated.len() {
                logits = m.model.forward(&[want], &mut cache).unwrap();
            }
        }
    }
    (compared, total)
}

/// Streaming detokenization ([`kiln_core::text_stream::TextStream`]) gives the text of a whole
/// decode with the model's own tokenizer: for a multilingual text streamed one token at a time
/// and for random token ids (byte and control tokens included), what it has shown after each
/// token is the start of the whole decode, and at the end all of it.
pub fn check_text_stream(m: &ChatModel) {
    use kiln_core::testing::{random_id_sequences, stream_checked};
    let t = &m.tokenizer;
    let text = "The kiln's fire: Ünïcödé café — 日本語のテキスト, 한국어, émojis 🎉🦀🔥 and\n  indented code { x += 1; }";
    let ids = t.encode(text, false).unwrap();
    assert_eq!(stream_checked(t, &ids).0, t.decode(&ids, true).unwrap());
    for ids in random_id_sequences(t.vocab_size() as u32, 100, 48) {
        assert_eq!(
            stream_checked(t, &ids).0,
            t.decode(&ids, true).unwrap(),
            "ids {ids:?}"
        );
    }
}
