//! GGUF: header, metadata and tensor descriptions; then every tensor that parsed is dequantized.
#![no_main]

use kiln_core::weights::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse(Path::new("fuzz.gguf"), data.to_vec()) else {
        return;
    };
    let _ = file.parameter_count();
    for info in &file.tensors {
        let _ = file.tensor_bytes(info);
        let _ = file.f32(&info.name, &info.shape);
    }
    for value in file.metadata.values() {
        let _ = (
            value.as_u64(),
            value.as_f64(),
            value.as_str(),
            value.as_array(),
        );
    }
});
