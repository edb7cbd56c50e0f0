//! A Llama decoder from a Hugging Face SafeTensors checkpoint (config.json, model.safetensors,
//! tokenizer.json, chat_template.jinja), against transformers' own outputs for it.
//!
//! No real SafeTensors decoder can be fetched here (shared/MODELS.md), so
//! `scripts/reference/make_tiny_llama.py` made a tiny one with transformers 5.24 (2 layers,
//! grouped-query attention, random weights, a byte-level BPE tokenizer trained for it) and
//! recorded transformers' tokenization, chat rendering, float32 logits and greedy tokens.

// The parity tests' helpers; only some are used here.
#[allow(dead_code)]
mod common;
mod tiny_reference;

use kiln_core::ChatModel;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-llama")
}

#[test]
fn config_and_tokenizer_come_from_the_checkpoint() {
    let m = ChatModel::load(&dir()).unwrap();
    let c = m.model.config();
    assert_eq!(
        (c.arch.as_str(), c.layers, c.hidden, c.heads, c.kv_heads),
        ("llama", 2, 64, 4, 2)
    );
    assert!(c.rope_neox && !c.f16_kv);
    assert!(m.tokenizer.is_stop(1), "</s> ends generation");
    tiny_reference::check_transformers_tokenizer(
        &m,
        &common::reference("tiny-llama/reference.json"),
    );
}

#[test]
fn logits_and_greedy_tokens_match_transformers() {
    let m = ChatModel::load(&dir()).unwrap();
    tiny_reference::check_transformers_logits(&m, &common::reference("tiny-llama/reference.json"));
}

#[test]
fn unsupported_checkpoints_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(dir().join(f), tmp.path().join(f)).unwrap();
    }
    let config = std::fs::read_to_string(dir().join("config.json")).unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        config.replace("\"llama\"", "\"gpt_neox\""),
    )
    .unwrap();
    let err = ChatModel::load(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("gpt_neox"), "{err}");
    std::fs::write(
        tmp.path().join("config.json"),
        config.replace("\"hidden_size\": 64", "\"hidden_size\": 48"),
    )
    .unwrap();
    let err = ChatModel::load(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("shape") || err.contains("expected"), "{err}");
}

/// Several prompts in one batched step get, bit for bit, the logits each gets alone, and so
/// does the decoding step after them. The batch is large enough (4 × 100 rows) that the
/// row-by-row passes (rope, the activation) are split over the kernel threads, while each
/// prompt alone is not.
#[test]
fn a_batch_of_prompts_gets_each_prompts_logits_bit_for_bit() {
    use kiln_core::models::llama::SequenceStep;
    let m = ChatModel::load(&dir()).unwrap();
    let vocab = m.model.config().vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..4u32)
        .map(|s| {
            (0..100u32)
                .map(|i| (i * 7919 + s * 31 + 3) % vocab)
                .collect()
        })
        .collect();
    let next = [5u32, 17, 40, 99];
    let alone: Vec<(Vec<f32>, Vec<f32>)> = prompts
        .iter()
        .zip(next)
        .map(|(p, t)| {
            let mut cache = m.model.new_cache(p.len() + 1);
            let first = m.model.forward(p, &mut cache).unwrap();
            let second = m.model.forward(&[t], &mut cache).unwrap();
            (first, second)
        })
        .collect();
    let mut caches: Vec<_> = prompts
        .iter()
        .map(|p| m.model.new_cache(p.len() + 1))
        .collect();
    let mut steps: Vec<SequenceStep<'_>> = prompts
        .iter()
        .zip(caches.iter_mut())
        .map(|(p, cache)| SequenceStep::new(p, cache))
        .collect();
    let firsts = m.model.forward_batch(&mut steps).unwrap();
    let mut steps: Vec<SequenceStep<'_>> = next
        .iter()
        .zip(caches.iter_mut())
        .map(|(t, cache)| SequenceStep::new(std::slice::from_ref(t), cache))
        .collect();
    let seconds = m.model.forward_batch(&mut steps).unwrap();
    let n = vocab as usize;
    for (s, (first, second)) in alone.iter().enumerate() {
        assert_eq!(&firsts[s * n..(s + 1) * n], &first[..], "prompt {s}");
        assert_eq!(
            &seconds[s * n..(s + 1) * n],
            &second[..],
            "step after prompt {s}"
        );
    }
}

/// A step in which no sequence wants logits (prompt chunks before their last) computes none:
/// the logits are left as they were, the caches still take the tokens. In a batch where some
/// sequences want logits, theirs are those of each prompt alone, bit for bit.
#[test]
fn a_step_that_wants_no_logits_fills_the_caches_and_skips_the_output_layer() {
    use kiln_core::models::llama::{LogitsWanted, SequenceStep};
    let m = ChatModel::load(&dir()).unwrap();
    let vocab = m.model.config().vocab_size;
    let prompts: Vec<Vec<u32>> = (0..4u32)
        .map(|s| {
            (0..40u32)
                .map(|i| (i * 131 + s * 17 + 1) % vocab as u32)
                .collect()
        })
        .collect();
    let (next, last) = ([3u32, 8, 21, 34], [5u32, 13, 55, 89]);
    let alone: Vec<[Vec<f32>; 2]> = prompts
        .iter()
        .enumerate()
        .map(|(s, p)| {
            let mut cache = m.model.new_cache(p.len() + 2);
            m.model.forward(p, &mut cache).unwrap();
            let second = m.model.forward(&[next[s]], &mut cache).unwrap();
            [second, m.model.forward(&[last[s]], &mut cache).unwrap()]
        })
        .collect();
    let mut caches: Vec<_> = prompts
        .iter()
        .map(|p| m.model.new_cache(p.len() + 2))
        .collect();
    const UNTOUCHED: f32 = 12345.0;
    let step = |tokens: Vec<&[u32]>, caches: &mut [_], wanted: &dyn Fn(usize) -> LogitsWanted| {
        let mut steps: Vec<SequenceStep<'_>> = tokens
            .into_iter()
            .zip(caches.iter_mut())
            .enumerate()
            .map(|(s, (t, cache))| SequenceStep {
                wanted: wanted(s),
                ..SequenceStep::new(t, cache)
            })
            .collect();
        let mut logits = vec![UNTOUCHED; 4 * vocab];
        m.model.forward_batch_into(&mut steps, &mut logits).unwrap();
        logits
    };
    let logits = step(
        prompts.iter().map(|p| &p[..]).collect(),
        &mut caches,
        &|_| LogitsWanted::Nothing,
    );
    assert!(
        logits.iter().all(|&v| v == UNTOUCHED),
        "a step wanting no logits computed some"
    );
    let wanted = |s: usize| {
        if s % 2 == 1 {
            LogitsWanted::Nothing
        } else {
            LogitsWanted::All
        }
    };
    let logits = step(
        next.iter().map(std::slice::from_ref).collect(),
        &mut caches,
        &wanted,
    );
    for (s, [second, _]) in alone.iter().enumerate() {
        if wanted(s) == LogitsWanted::All {
            assert_eq!(
                &logits[s * vocab..(s + 1) * vocab],
                &second[..],
                "step after prompt {s}"
            );
        }
    }
    let logits = step(
        last.iter().map(std::slice::from_ref).collect(),
        &mut caches,
        &|_| LogitsWanted::All,
    );
    for (s, [_, third]) in alone.iter().enumerate() {
        assert_eq!(
            &logits[s * vocab..(s + 1) * vocab],
            &third[..],
            "third step of prompt {s}"
        );
    }
}
