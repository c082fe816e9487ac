//! A silver table as the project validated it: its compiled contract, keys, history and
//! expectations (built by `project`, used by promotion and replay).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use super::contract::Contract;
use super::evolve::ContractRecord;
use super::history::History;
use crate::bronze::csv_batch::CsvSource;
use crate::quality::checks::TableCheck;
use crate::spec::{Duration, OnContractChange, RejectedFractionSpec};
use crate::storage::Maintenance;

/// A silver table.
#[derive(Debug, Clone)]
pub struct SilverTable {
    /// Name.
    pub name: String,
    /// Its source.
    pub source: String,
    /// How its source reads CSV now (batches landed before a correction read with it).
    pub csv: CsvSource,
    /// Compiled contract.
    pub contract: Arc<Contract>,
    /// Primary key.
    pub keys: Vec<String>,
    /// Dedup ordering column.
    pub order_by: String,
    /// Partition columns.
    pub partition_by: Vec<String>,
    /// Owner.
    pub owner: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Maximum staleness consumers accept (the default freshness bound).
    pub sla: Option<Duration>,
    /// Set- and table-level expectations, checked on the merged candidate before the commit.
    pub checks: Vec<TableCheck>,
    /// Other silver tables its expectations read: promoted first; their failure skips this one.
    pub depends_on: Vec<String>,
    /// Bounds on the share of rejected records.
    pub max_rejected_fraction: Option<RejectedFractionSpec>,
    /// Labels for selection.
    pub tags: Vec<String>,
    /// Retries after a transient error (None: the run's).
    pub retries: Option<u32>,
    /// Whether the table records a change data feed: only when an incremental gold model reads
    /// its changes (writing change data costs every MERGE).
    pub change_feed: bool,
    /// How changes are kept (SCD 1 or 2).
    pub history: History,
    /// The table's schema (the contract's, plus the SCD 2 columns).
    pub schema: SchemaRef,
    /// Compaction and vacuum after runs.
    pub maintenance: Maintenance,
    /// The contract as its commits record it (compared with the published table's).
    pub record: ContractRecord,
    /// What a contract that no longer matches the published table does.
    pub on_contract_change: OnContractChange,
    /// Created with deletion vectors: merges mark replaced rows instead of rewriting files.
    pub deletion_vectors: bool,
    /// `merge` as the contract writes it (None: the default, which only new tables follow): an
    /// existing table is switched to it before its next merge.
    pub declared_deletion_vectors: Option<bool>,
}

impl SilverTable {
    /// The tables its expectations read, itself included.
    pub fn reads(&self) -> Vec<&str> {
        std::iter::once(self.name.as_str()).chain(self.depends_on.iter().map(String::as_str)).collect()
    }
}
