//! Model architectures, each a forward pass over weights taken from a [`crate::weights::TensorMap`].

pub mod bert;
mod kv_cache;
pub mod llama;
