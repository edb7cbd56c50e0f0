//! `kiln inspect`: what a model file holds (metadata, tensors, storage types, parameter count).

use crate::args::InspectArgs;
use anyhow::Result;
use kiln_core::weights::gguf::{GgufFile, MetaValue};
use kiln_core::weights::TensorMap;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Runs `kiln inspect`.
pub fn run(args: InspectArgs) -> Result<()> {
    let is_gguf = args.file.extension().is_some_and(|e| e == "gguf");
    if is_gguf {
        inspect_gguf(&args)
    } else {
        inspect_tensor_map(&args)
    }
}

fn show_value(v: &MetaValue) -> String {
    match v {
        MetaValue::Array(items) => {
            let head: Vec<String> = items.iter().take(5).map(show_value).collect();
            let more = if items.len() > 5 { ", ..." } else { "" };
            format!("[{}{more}] ({} items)", head.join(", "), items.len())
        }
        MetaValue::String(s) if s.chars().count() > 120 => {
            format!(
                "{:?}... ({} chars)",
                s.chars().take(120).collect::<String>(),
                s.chars().count()
            )
        }
        MetaValue::String(s) => format!("{s:?}"),
        MetaValue::UInt(x) => x.to_string(),
        MetaValue::Int(x) => x.to_string(),
        MetaValue::Float(x) => x.to_string(),
        MetaValue::Bool(x) => x.to_string(),
    }
}

fn inspect_gguf(args: &InspectArgs) -> Result<()> {
    let f = GgufFile::read(&args.file)?;
    let mut o = String::new();
    writeln!(o, "file:       {}", args.file.display())?;
    writeln!(o, "format:     GGUF v{}", f.version)?;
    if let Some(arch) = f.meta("general.architecture").and_then(MetaValue::as_str) {
        writeln!(o, "arch:       {arch}")?;
    }
    writeln!(
        o,
        "parameters: {} ({:.1} M)",
        f.parameter_count(),
        f.parameter_count() as f64 / 1e6
    )?;
    let mut by_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for t in &f.tensors {
        let e = by_type.entry(t.ggml_type.name()).or_default();
        e.0 += 1;
        e.1 += t.size;
    }
    writeln!(o, "tensors:    {}", f.tensors.len())?;
    for (ty, (n, bytes)) in &by_type {
        writeln!(
            o,
            "  {ty:<6} {n:>5} tensors, {:>10.1} MiB",
            *bytes as f64 / (1 << 20) as f64
        )?;
    }
    writeln!(o, "metadata:")?;
    for (k, v) in &f.metadata {
        writeln!(o, "  {k} = {}", show_value(v))?;
    }
    if args.tensors {
        writeln!(o, "tensor list:")?;
        for t in &f.tensors {
            writeln!(
                o,
                "  {:<48} {:<6} {:?}",
                t.name,
                t.ggml_type.name(),
                t.shape
            )?;
        }
    }
    crate::progress::print_stdout(&o)
}

fn inspect_tensor_map(args: &InspectArgs) -> Result<()> {
    let map = TensorMap::load(&args.file)?;
    let mut o = String::new();
    let mut names: Vec<&str> = map.names().collect();
    names.sort();
    let mut params = 0usize;
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for n in &names {
        let t = map.raw(n).expect("listed name");
        params += t.numel().unwrap_or(0);
        *by_type.entry(format!("{:?}", t.dtype)).or_default() += 1;
    }
    writeln!(o, "file:       {}", args.file.display())?;
    writeln!(o, "parameters: {params} ({:.1} M)", params as f64 / 1e6)?;
    writeln!(o, "tensors:    {}", names.len())?;
    for (ty, n) in &by_type {
        writeln!(o, "  {ty:<6} {n:>5} tensors")?;
    }
    if args.tensors {
        writeln!(o, "tensor list:")?;
        for n in names {
            let t = map.raw(n).expect("listed name");
            writeln!(o, "  {n:<48} {:<6} {:?}", format!("{:?}", t.dtype), t.shape)?;
        }
    }
    crate::progress::print_stdout(&o)
}
