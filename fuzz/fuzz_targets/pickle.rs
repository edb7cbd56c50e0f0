//! PyTorch checkpoints. An input starting with `PK` is read as the whole zip archive; any
//! other input is the pickle itself, which the target wraps in an archive (`archive/data.pkl`
//! plus storages `archive/data/0` to `archive/data/3`) so that mutations of the pickle are not
//! lost to the zip checksums.
#![no_main]

use kiln_core::weights::pickle::parse_checkpoint;
use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::path::Path;

fn wrap(pickle: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/byteorder", opts).unwrap();
    zip.write_all(b"little").unwrap();
    for (key, len) in [("0", 24usize), ("1", 64), ("2", 3), ("3", 256)] {
        zip.start_file(format!("archive/data/{key}"), opts).unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fuzz_target!(|data: &[u8]| {
    let archive;
    let bytes = if data.starts_with(b"PK") {
        data
    } else {
        archive = wrap(data);
        &archive
    };
    let Ok(map) = parse_checkpoint(Path::new("fuzz.pt"), bytes) else {
        return;
    };
    let names: Vec<String> = map.names().map(str::to_string).collect();
    for name in names {
        let shape = map.raw(&name).map(|t| t.shape.clone()).unwrap_or_default();
        let _ = map.f32(&name, &shape);
    }
});
