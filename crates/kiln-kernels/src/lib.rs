//! kiln-kernels: the hot CPU kernels of kiln, each tested against a plain scalar version.
//!
//! Every function works on plain `f32` slices in row-major order. Threading decisions live
//! here too (the kernel threads, used only above a work threshold), so that callers stay single-threaded
//! code.
#![warn(missing_docs)]

pub mod activation;
pub mod attention;
pub mod causal_attention;
pub mod cpu;
pub mod linear;
pub mod memory;
pub mod norm;
pub mod parallel;
pub mod quant;
#[cfg(target_arch = "x86_64")]
mod quant_amx;
pub mod quant_blocks;
pub mod quant_packed;
mod quant_packed_k;
#[cfg(target_arch = "x86_64")]
mod quant_vnni;
#[cfg(target_arch = "x86_64")]
mod quantize_avx512;
pub mod sampling;
pub mod swiglu;
#[cfg(not(target_arch = "wasm32"))]
mod team;
