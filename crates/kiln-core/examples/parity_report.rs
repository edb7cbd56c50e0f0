//! Compares kiln's logits with a llama.cpp reference file written by
//! `scripts/reference/make_llama_reference.py`, teacher-forcing llama.cpp's greedy tokens:
//! at each step it reports whether kiln's argmax is llama.cpp's token and how far the top
//! logits are apart.
//!
//! `cargo run --release -p kiln-core --example parity_report -- REFERENCE.json MODEL.gguf`

use kiln_core::ChatModel;
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, reference, model] = args.as_slice() else {
        return Err("usage: parity_report REFERENCE.json MODEL.gguf".into());
    };
    let r: Value = serde_json::from_str(&std::fs::read_to_string(reference)?)?;
    let m = ChatModel::load(std::path::Path::new(model))?;
    let mut items: Vec<&Value> = r["completions"].as_array().unwrap().iter().collect();
    items.extend(
        r["chat"]["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.get("generated_ids").is_some()),
    );
    let (mut worst, mut steps, mut agree) = (0.0f64, 0, 0);
    for item in items {
        let prompt = ids(&item["prompt_ids"]);
        let gen = ids(&item["generated_ids"]);
        let top = item["top_logits"].as_array().unwrap();
        let margins = item["top2_margins"].as_array().unwrap();
        let mut cache = m.model.new_cache(prompt.len() + gen.len() + 1);
        let mut logits = m.model.forward(&prompt, &mut cache)?;
        let mut first_miss = None;
        let mut item_worst = 0.0f64;
        for (step, &want) in gen.iter().enumerate() {
            if let Some(t) = top.get(step) {
                for p in t.as_array().unwrap() {
                    let (id, l) = (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap());
                    item_worst = item_worst.max((logits[id] as f64 - l).abs());
                }
            }
            let got = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .unwrap()
                .0 as u32;
            steps += 1;
            if got == want {
                agree += 1;
            } else if first_miss.is_none() {
                first_miss = Some((step, margins[step].as_f64().unwrap()));
            }
            if step + 1 < gen.len() {
                logits = m.model.forward(&[want], &mut cache)?;
            }
        }
        worst = worst.max(item_worst);
        println!(
            "{:28} {:3} prompt, {:2} steps, max top-logit diff {:.4}, first argmax miss {:?}",
            item["name"].as_str().unwrap(),
            prompt.len(),
            gen.len(),
            item_worst,
            first_miss
        );
    }
    println!(
        "argmax agrees on {agree}/{steps} teacher-forced steps; worst top-logit diff {worst:.4}"
    );
    Ok(())
}
