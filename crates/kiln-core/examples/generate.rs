//! Greedy generation from a GGUF decoder, with timings.
//!
//! `cargo run --release -p kiln-core --example generate -- MODEL.gguf "The capital of France is" 32`

use kiln_core::gguf_tokenizer::GgufTokenizer;
use kiln_core::models::llama::LlamaModel;
use kiln_core::weights::gguf::GgufFile;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: generate MODEL.gguf PROMPT [N]")?;
    let prompt = args.next().ok_or("usage: generate MODEL.gguf PROMPT [N]")?;
    let n: usize = args.next().map_or(Ok(32), |s| s.parse())?;
    let t = Instant::now();
    let file = GgufFile::read(path.as_ref())?;
    let tok = GgufTokenizer::from_gguf(&file)?;
    let model = LlamaModel::load(&file)?;
    drop(file);
    eprintln!("loaded in {:?}", t.elapsed());
    let ids = tok.encode(&prompt, true)?;
    eprintln!("prompt ids {ids:?}");
    let mut cache = model.new_cache(ids.len() + n);
    let t = Instant::now();
    let mut logits = model.forward(&ids, &mut cache)?;
    let ttft = t.elapsed();
    let mut out = Vec::new();
    let t = Instant::now();
    for _ in 0..n {
        let next = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
            .unwrap();
        out.push(next);
        if tok.is_stop(next) {
            break;
        }
        logits = model.forward(&[next], &mut cache)?;
    }
    let dt = t.elapsed();
    eprintln!(
        "first token {ttft:?}, decode {:.1} tokens/s",
        out.len() as f64 / dt.as_secs_f64()
    );
    println!("{out:?}");
    println!("{}", tok.decode(&out, false)?);
    Ok(())
}
