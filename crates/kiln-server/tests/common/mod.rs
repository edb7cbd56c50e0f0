//! Helpers shared by the integration tests that need the real chat model.

use std::path::PathBuf;

/// The real SmolLM2 GGUF that `scripts/test.sh` fetches; a clear failure when it is missing.
pub fn real_chat_model() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "the real chat model is missing: run `cargo run --release -p kiln-cli -- fetch SmolLM2-135M-Instruct` (or scripts/test.sh)"
    );
    p
}
