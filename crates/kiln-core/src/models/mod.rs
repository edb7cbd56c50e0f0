//! Model architectures, each a forward pass over weights taken from a [`crate::weights::TensorMap`].

pub mod bert;
pub mod llama;
