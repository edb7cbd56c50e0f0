//! Writes kiln's generated tiny BERT (sentence-transformers layout) into a directory.
//!
//! `cargo run -p kiln-core --example write_tiny_bert -- DIR`; used by
//! scripts/reference/make_pickle_fixtures.py to build the PyTorch-checkpoint fixtures.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: write_tiny_bert DIR")?;
    kiln_core::testing::write_tiny_bert(
        dir.as_ref(),
        &kiln_core::testing::TinyBertSpec::default(),
    )?;
    Ok(())
}
