//! Choosing one token from a step's logits, at the vocabularies of SmolLM2 (49,152) and
//! Gemma 3 (262,144), for the sampling settings clients send: greedy, OpenAI's default
//! (temperature 1), `kiln chat`'s (temperature 0.7, top-p 0.9), top-k 40, min-p 0.05, and min-p
//! with top-p.
//!
//! `cargo bench -p kiln-core --bench sampling` prints the median time of one `sample` call.
//! The logits are drawn from a normal distribution (standard deviation 2.5) with a few
//! tokens well above the rest, as a language model's are: every token lies within the
//! sampler's cut of 40 (after temperature) below the best, the case real logits show.

use kiln_core::sampling::{Sampler, SamplingParams};
use std::hint::black_box;
use std::time::Instant;

fn median_us(mut f: impl FnMut(), runs: usize) -> f64 {
    for _ in 0..runs / 10 + 1 {
        f();
    }
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

/// Normal logits (Box-Muller over a xorshift generator) and eight tokens 6 to 13 above.
fn logits(vocab: usize) -> Vec<f32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut l: Vec<f32> = (0..vocab)
        .map(|_| {
            let (a, b) = (uniform(), uniform());
            ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos() * 2.5) as f32
        })
        .collect();
    for k in 0..8 {
        l[(k * 7919 + 13) % vocab] += 6.0 + k as f32;
    }
    l
}

fn main() {
    let settings = [
        ("greedy", SamplingParams::greedy()),
        ("temperature 1", SamplingParams::default()),
        (
            "temperature 0.7, top-p 0.9",
            SamplingParams {
                temperature: 0.7,
                top_p: 0.9,
                ..Default::default()
            },
        ),
        (
            "temperature 0.8, top-k 40",
            SamplingParams {
                temperature: 0.8,
                top_k: 40,
                ..Default::default()
            },
        ),
        (
            "temperature 1, min-p 0.05",
            SamplingParams {
                min_p: 0.05,
                ..Default::default()
            },
        ),
        (
            "temperature 0.7, top-p 0.95, min-p 0.05",
            SamplingParams {
                temperature: 0.7,
                top_p: 0.95,
                min_p: 0.05,
                ..Default::default()
            },
        ),
    ];
    println!("{:<44} {:>12}", "vocabulary, setting", "median us");
    for vocab in [49_152, 262_144] {
        let l = logits(vocab);
        for (name, params) in &settings {
            let mut sampler = Sampler::new(SamplingParams {
                seed: Some(7),
                ..params.clone()
            });
            let us = median_us(
                || {
                    black_box(sampler.sample(black_box(&l), &[]));
                },
                200,
            );
            println!("{:<44} {:>12.1}", format!("{vocab}, {name}"), us);
        }
    }
}
