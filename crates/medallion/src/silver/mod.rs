//! Silver: typed contracts, vectorised validation, dead letter, dedup and guarded MERGE.
//!
//! ```text
//! bronze batch ─decode─▶ RawChunk ─coerce─▶ typed batch ─transforms─▶ ─checks─▶ valid │ rejected
//!                                                                        │            │
//!                                        latest per key (dedup) ◀────────┘            ▼
//!                                                │                         quarantine/<table>
//!                                                ▼
//!                              MERGE into silver/<table> (newer-wins guard)
//! ```

pub(crate) mod backlog;
pub mod coerce;
pub mod contract;
pub mod dead_letter;
pub mod dedup;
#[cfg(feature = "cluster")]
pub mod distributed;
pub mod evolve;
pub mod formats;
pub mod history;
pub(crate) mod paths;
pub mod promote;
pub(crate) mod provenance;
pub mod publish;
pub(crate) mod rebuild;
pub(crate) mod rejects;
pub mod replay;
pub(crate) mod slices;
pub(crate) mod spill;
pub mod table;
pub mod validate;

#[cfg(feature = "cluster")]
pub use distributed::cluster_nodes;
pub use table::SilverTable;
