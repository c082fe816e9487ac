//! Storage: the lake's object store ([`Lake`]) and its Delta tables ([`delta`]).
//!
//! Every read and write of the lake goes through `object_store`, so the same code serves a local
//! directory today and an object-store URL later. `delta` is the only module importing deltalake.

pub mod delta;
mod lake;

pub use lake::{Lake, Layer};
