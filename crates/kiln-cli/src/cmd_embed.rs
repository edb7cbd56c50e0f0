//! `kiln embed`: embed texts from the command line.

use crate::args::EmbedArgs;
use crate::model_source::resolve;
use anyhow::Result;
use kiln_core::{EmbedderOptions, SentenceEmbedder};
use serde_json::json;

/// Runs `kiln embed`.
pub fn run(args: EmbedArgs) -> Result<()> {
    let resolved = resolve(&args.model, &args.source)?;
    let spinner = crate::progress::spinner(format!("loading {}", resolved.dir.display()));
    let model = SentenceEmbedder::load(
        &resolved.dir,
        &EmbedderOptions {
            pooling: args.pooling,
        },
    )?;
    spinner.finish_and_clear();
    let mut tokens = Vec::with_capacity(args.texts.len());
    for t in &args.texts {
        tokens.push(model.tokenize(t, true)?.ids);
    }
    let refs: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
    let vectors = model.embed_tokens(&refs, model.normalizes() && !args.no_normalize)?;
    let out = json!({
        "model": resolved.name,
        "dimension": model.dimension(),
        "data": args.texts.iter().zip(&vectors).zip(&tokens).map(|((t, v), ids)| json!({
            "text": t, "tokens": ids.len(), "embedding": v
        })).collect::<Vec<_>>(),
    });
    crate::progress::print_stdout(&(serde_json::to_string(&out)? + "\n"))
}
