//! Reading many bronze batches without holding them: every batch is decoded and validated (several
//! at once), its valid rows spilled chunk by chunk, as they are validated, to local scratch files
//! split into slices by a hash of the key (one file per slice and batch; all the records of a key
//! land in one slice, read back in ingest order), and its rejects spilled as dead-letter rows. No
//! batch is held whole, however large. A rebuild and a promotion of a large backlog then resolve
//! the slices apart, a slice at a time per thread as far as the memory limit pays for them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use futures::{StreamExt, TryStreamExt};

use super::promote::{
    FileResult, HeldBack, PromoteOptions, Promotion, accounting, count_reasons, fraction, per_batch_gate, per_run_gate,
    read_batches,
};
use super::provenance;
use super::spill::{self, Spill, SpillWriter};
use super::table::SilverTable;
use crate::bronze::batches::BatchFile;
use crate::bronze::drift;
use crate::error::{Error, Result};
use crate::quality::gates::{GateResult, enforce};
use crate::quality::quarantine;
use crate::runtime::ledger::Intent;
use crate::runtime::{NodeStage, memory, ms};
use crate::spec::Action;
use crate::storage::Lake;

/// Slices at most (each an open scratch file while batches are read, so bounded well below the
/// usual 1,024 file descriptors): past 256 × `slice_bytes` of bronze (16 GiB at the default),
/// slices grow with the input.
const MAX_SLICES: u64 = 256;

/// Slices for `bytes` of compressed bronze, about `slice_bytes` each.
pub(crate) fn count(bytes: u64, slice_bytes: u64) -> usize {
    usize::try_from(bytes.div_ceil(slice_bytes.max(1)).clamp(1, MAX_SLICES)).unwrap_or(1)
}

/// Where validated rows are spilled: `slices` files per batch, by a hash of the key columns, in
/// the contract's [`provenance::spilled_schema`] ([`take_all`] gives them back so).
pub(crate) struct Slicer {
    dir: PathBuf,
    schema: SchemaRef,
    keys: Vec<usize>,
    slices: usize,
}

impl Slicer {
    /// The files of the `n`th batch (created as rows come).
    pub(crate) fn batch(&self, n: usize) -> BatchSlices<'_> {
        BatchSlices {
            slicer: self,
            batch: n,
            writers: (0..self.slices).map(|_| None).collect(),
            provenance: provenance::Encoder::default(),
        }
    }
}

/// The scratch files of one batch's valid rows, one per slice it has rows for.
pub(crate) struct BatchSlices<'a> {
    slicer: &'a Slicer,
    batch: usize,
    writers: Vec<Option<SpillWriter>>,
    provenance: provenance::Encoder,
}

impl BatchSlices<'_> {
    /// Appends each row of `batch` (of the contract's schema) to its slice's file.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let s = self.slicer;
        let batch = self.provenance.encode(batch, &s.schema)?;
        for (slice, rows) in by_slice(&batch, &s.keys, s.slices)? {
            let writer = match &mut self.writers[slice] {
                Some(w) => w,
                empty => empty.insert(SpillWriter::create(&s.dir, &format!("{slice}-{}", self.batch), &s.schema)?),
            };
            writer.write(&rows)?;
        }
        Ok(())
    }

    /// Closes the files: (slice, path) of each.
    pub(crate) fn finish(self) -> Result<Vec<(usize, PathBuf)>> {
        let mut out = Vec::new();
        for (slice, w) in self.writers.into_iter().enumerate() {
            if let Some(w) = w {
                out.push((slice, w.finish()?.0));
            }
        }
        Ok(out)
    }
}

/// What reading every batch gave.
pub(crate) struct Read {
    /// Per slice, its spilled valid rows: files in batch order.
    pub slices: Vec<Vec<PathBuf>>,
    /// The spilled dead-letter rows of the rejects.
    pub rejects: PathBuf,
    /// Records read, valid and rejected (held-back batches excluded).
    pub read: u64,
    pub valid: u64,
    pub rejected: u64,
    /// Per batch (held-back ones included): read, rejected.
    pub per_batch: Vec<(u64, u64)>,
    /// Batches kept out, in batch order (see [`read_all`]).
    pub held_back: Vec<HeldBack>,
    /// Per row-level expectation: rows checked, failing.
    pub gate_counts: Vec<(u64, u64)>,
    /// Reasons of the rejects, with counts.
    pub reasons: HashMap<String, u64>,
    /// Per kept batch, the fields its records carried.
    pub observed: Vec<drift::Observed>,
    /// The valid rows already are the latest per key (see [`FileResult::latest`]).
    pub latest: bool,
}

impl Read {
    /// Judges what was read, before anything is committed: the contract's row-level rules
    /// (results put ahead of `p`'s expectations so far), then every gate of `p` (a failed `fail`
    /// one is an error), then the count (`read = valid + rejected`).
    pub(crate) fn judge(&self, table: &SilverTable, p: &mut Promotion) -> Result<()> {
        let mut rules: Vec<GateResult> = table.contract.gates.iter().map(|g| g.result()).collect();
        for (res, (checked, failing)) in rules.iter_mut().zip(&self.gate_counts) {
            res.rows_checked += checked;
            res.failing_rows += failing;
        }
        rules.append(&mut p.expectations);
        p.expectations = rules;
        enforce(&format!("silver/{}", table.name), &mut p.expectations)?;
        if self.valid + self.rejected != self.read {
            p.rejected = self.rejected;
            return Err(accounting(p));
        }
        Ok(())
    }
}

/// Reads `intent`'s batches in slices (see [`read_all`]) and judges them as a promotion does, its
/// expectations in `p`: with `hold_back`, a batch a failing per-batch `fail` gate names is held
/// back (dropped from `intent` and from the scratch files; a resumed intent keeps its batches,
/// the gate then stops it); without, every batch is published or none (a rebuild). None when
/// every batch was held back. A failed `fail` gate or a miscount is an error. With what was read
/// comes the settled per-batch gate that held batches back, if one did: the caller adds it to
/// `p`'s expectations once it has enforced its own (it failed, by design).
pub(crate) async fn read_judged(
    lake: &Lake,
    table: &SilverTable,
    intent: &mut Intent,
    spill: &Spill,
    opts: &PromoteOptions,
    hold_back: bool,
    p: &mut Promotion,
) -> Result<Option<(Read, Option<GateResult>)>> {
    let t = Instant::now();
    let bounds = table.max_rejected_fraction.as_ref();
    let limit = bounds.filter(|b| b.action == Action::Fail && hold_back && !p.resumed).and_then(|b| b.per_batch);
    p.bytes = intent.batches.iter().map(|b| b.size).sum();
    p.slices = count(p.bytes, opts.slice_bytes);
    let mut read = read_all(lake, table, &intent.batches, p.slices, spill, opts, limit).await?;
    p.timings_ms.insert(NodeStage::ReadValidate, ms(t));
    let mut held_back_gate = None;
    if let Some(mut r) = bounds.and_then(|b| per_batch_gate(b, &intent.batches, &read.per_batch)) {
        if read.held_back.is_empty() {
            p.expectations.push(r);
        } else {
            r.settle();
            held_back_gate = Some(r);
        }
    }
    let held: HashSet<String> = read.held_back.iter().map(|h| h.path.clone()).collect();
    let kept: Vec<(u64, u64)> =
        intent.batches.iter().zip(&read.per_batch).filter(|(b, _)| !held.contains(&b.path)).map(|(_, c)| *c).collect();
    intent.batches.retain(|b| !held.contains(&b.path));
    p.held_back = std::mem::take(&mut read.held_back);
    p.batches = intent.batches.len();
    p.bytes = intent.batches.iter().map(|b| b.size).sum();
    if intent.batches.is_empty() {
        p.expectations.extend(held_back_gate);
        return Ok(None);
    }
    p.expectations.extend(bounds.and_then(|b| per_run_gate(b, &kept)));
    p.read = read.read;
    // Write-audit-publish: a failed `fail` gate stops here, before any commit.
    read.judge(table, p)?;
    p.rejected = read.rejected;
    Ok(Some((read, held_back_gate)))
}

/// Reads and validates `batches` (several at once, in order): valid rows spilled into `slices`
/// files by key, rejects into `rejected/contract.arrow` as dead-letter rows. A batch whose
/// rejected share is above `hold_back` (a failing per-batch rejection-rate gate) is kept out:
/// nothing of it is spilled or counted but its `per_batch` entry and its [`HeldBack`] description.
pub(crate) async fn read_all(
    lake: &Lake,
    table: &SilverTable,
    batches: &[BatchFile],
    slices: usize,
    spill: &Spill,
    opts: &PromoteOptions,
    hold_back: Option<f64>,
) -> Result<Read> {
    let schema = provenance::spilled_schema(&table.contract.schema);
    let keys: Vec<usize> = table
        .keys
        .iter()
        .map(|k| schema.index_of(k).map_err(|e| Error::arrow("the key of a promotion", e)))
        .collect::<Result<_>>()?;
    let slicer = Arc::new(Slicer { dir: spill.dir("valid")?, schema, keys, slices });
    let mut rejects = SpillWriter::create(&spill.dir("rejected")?, "contract", &quarantine::schema())?;
    let mut out = Read {
        slices: vec![Vec::new(); slices],
        rejects: PathBuf::new(),
        read: 0,
        valid: 0,
        rejected: 0,
        per_batch: Vec::with_capacity(batches.len()),
        held_back: Vec::new(),
        gate_counts: vec![(0, 0); table.contract.gates.len()],
        reasons: HashMap::new(),
        observed: Vec::with_capacity(batches.len()),
        latest: !batches.is_empty(),
    };
    let mut files = std::pin::pin!(read_batches(lake, table, batches, opts, Some(slicer)));
    let mut next = batches.iter();
    while let Some(FileResult { valid_rows, sliced, rejected, read, gate_counts, observed, latest, .. }) =
        files.try_next().await?
    {
        out.latest &= latest;
        let file = next.next().ok_or_else(|| Error::Internal("more validated batches than batches".into()))?;
        out.per_batch.push((read, rejected.len() as u64));
        if hold_back.is_some_and(|limit| fraction(rejected.len() as u64, read) > limit) {
            for (_, path) in &sliced {
                remove(path)?;
            }
            out.held_back.push(HeldBack::new(file, read, &rejected));
            continue;
        }
        out.read += read;
        out.rejected += rejected.len() as u64;
        for (total, (checked, failing)) in out.gate_counts.iter_mut().zip(gate_counts) {
            total.0 += checked;
            total.1 += failing;
        }
        out.observed.push(observed);
        out.valid += valid_rows;
        for (slice, path) in sliced {
            out.slices[slice].push(path);
        }
        if !rejected.is_empty() {
            count_reasons(&mut out.reasons, &rejected);
            for batch in quarantine::to_batches(&rejected, opts.now.timestamp_micros(), &opts.run_id)? {
                rejects.write(&batch)?;
            }
        }
    }
    out.rejects = rejects.finish()?.0;
    Ok(out)
}

/// `resolve` run on every slice of `slices` (its index and files) on blocking threads, a slice per
/// thread of `opts` as far as the memory limit pays for them ([`memory::slices_at_once`]): the
/// results in slice order.
pub(crate) async fn resolve_each<T, F>(slices: Vec<Vec<PathBuf>>, opts: &PromoteOptions, resolve: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize, &[PathBuf]) -> Result<T> + Send + Sync + 'static,
{
    let at_once = memory::slices_at_once(memory::limit(), opts.slice_bytes, opts.threads);
    let resolve = Arc::new(resolve);
    let resolving = slices.into_iter().enumerate().map(|(i, paths)| {
        let resolve = Arc::clone(&resolve);
        async move {
            tokio::task::spawn_blocking(move || resolve(i, &paths))
                .await
                .map_err(|e| Error::Internal(format!("resolving slice {i} failed: {e}")))?
        }
    });
    futures::stream::iter(resolving).buffered(at_once).try_collect().await
}

/// Every batch of the spilled files at `paths`, in order, in the contract's
/// [`provenance::spilled_schema`] (see [`provenance::decode_all`]); the files are removed once read.
pub(crate) fn take_all(paths: &[PathBuf]) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for path in paths {
        out.extend(spill::read_all(path)?);
        remove(path)?;
    }
    Ok(out)
}

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|source| Error::Scratch { path: path.to_path_buf(), source })
}

/// `batch` split by a hash of its `keys` columns into `slices` parts (the non-empty ones).
fn by_slice(batch: &RecordBatch, keys: &[usize], slices: usize) -> Result<Vec<(usize, RecordBatch)>> {
    if slices == 1 {
        return Ok(vec![(0, batch.clone())]);
    }
    let mut hashes = vec![0u64; batch.num_rows()];
    let columns: Vec<&dyn Array> = keys.iter().map(|&k| batch.column(k).as_ref()).collect();
    create_hashes(columns, &RandomState::with_seed(0), &mut hashes)
        .map_err(|e| Error::sql("slicing rows by key", e))?;
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); slices];
    for (row, h) in hashes.iter().enumerate() {
        rows[(h % slices as u64) as usize].push(u32::try_from(row).unwrap_or(u32::MAX));
    }
    rows.into_iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(slice, r)| {
            take_record_batch(batch, &UInt32Array::from(r))
                .map(|b| (slice, b))
                .map_err(|e| Error::arrow("slicing rows by key", e))
        })
        .collect()
}
