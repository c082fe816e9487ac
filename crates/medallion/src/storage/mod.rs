//! Storage: the lake's object store ([`Lake`]) and its Delta tables ([`delta`]).
//!
//! Every read and write of the lake goes through `object_store`, so the same code serves a local
//! directory and an object-store URL (`cloud`). `delta` (with its `keyed` merge) and `cloud` are
//! the only modules importing deltalake.

mod cloud;
pub mod delta;
mod lake;

pub use cloud::explain;
pub use lake::{Lake, Layer};
