//! Embeds the sentences given on the command line with a model directory and prints timings.
//!
//! `cargo run --release -p kiln-core --example embed -- models/all-MiniLM-L6-v2 "a sentence" ...`

use kiln_core::{EmbedderOptions, SentenceEmbedder};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: embed MODEL_DIR TEXT...")?;
    let texts: Vec<String> = args.collect();
    let t = Instant::now();
    let model = SentenceEmbedder::load(dir.as_ref(), &EmbedderOptions::default())?;
    eprintln!("loaded in {:?}", t.elapsed());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut times = Vec::new();
    let mut out = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        out = model.embed(&refs)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    eprintln!(
        "median {:.3} ms over {} runs",
        times[times.len() / 2],
        times.len()
    );
    for v in &out {
        println!("{:?}", &v[..8]);
    }
    Ok(())
}
