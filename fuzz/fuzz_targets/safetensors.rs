//! SafeTensors: kiln-core's loading path from bytes, then every tensor converted to f32.
#![no_main]

use kiln_core::weights::safetensors;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(map) = safetensors::parse(Path::new("fuzz.safetensors"), data) else {
        return;
    };
    let names: Vec<String> = map.names().map(str::to_string).collect();
    for name in names {
        let shape = map.raw(&name).map(|t| t.shape.clone()).unwrap_or_default();
        let _ = map.f32(&name, &shape);
    }
});
