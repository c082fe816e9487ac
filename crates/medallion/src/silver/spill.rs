//! Scratch space of a rebuild: record batches spilled to local disk as Arrow IPC files, so a
//! rebuild holds one slice of the table at a time. The directory (under `TMPDIR`) is removed when
//! the [`Spill`] is dropped, whether the rebuild finished or failed. A killed process cannot
//! remove it: its process holds a lock on a file in it for as long as it lives, and the next
//! [`Spill`] of any medallion process removes the directories whose lock nobody holds (the kernel
//! releases a dead process's locks). A rerun starts a new one (scratch files are never resumed).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::{DictionaryHandling, FileWriter, IpcWriteOptions};

use crate::error::{Error, Result};
use crate::storage::delta::{Pass, Rows};

/// Extension of spilled files (the one DataFusion's Arrow reader lists).
pub(crate) const EXTENSION: &str = "arrow";

/// What every scratch directory's name starts with.
const PREFIX: &str = "medallion-";

/// The file in a scratch directory its process holds locked while it lives.
const HELD: &str = ".held";

/// [`HELD`] before it is locked and named: a directory holding only this one was left by a process
/// killed while taking its lock, a moment's work.
const PENDING: &str = ".held-pending";

/// How long after its creation a [`PENDING`] file unlocked is taken for a dead process's.
const PENDING_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// A scratch directory, removed on drop.
pub(crate) struct Spill {
    dir: tempfile::TempDir,
    /// The lock on the directory's [`HELD`] file, released with it (or by the kernel).
    _held: File,
}

impl Spill {
    /// A new scratch directory named after `label` (after removing those of dead processes).
    pub(crate) fn new(label: &str) -> Result<Spill> {
        let tmp = std::env::temp_dir();
        sweep(&tmp);
        let scratch = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Scratch { path, source }
        };
        let dir = tempfile::Builder::new().prefix(&format!("{PREFIX}{label}-")).tempdir().map_err(scratch(&tmp))?;
        // Locked before it takes its name, so a sweep never finds it unlocked.
        let pending = dir.path().join(PENDING);
        let held = File::create(&pending).map_err(scratch(&pending))?;
        held.try_lock().map_err(|e| Error::Scratch { path: pending.clone(), source: e.into() })?;
        std::fs::rename(&pending, dir.path().join(HELD)).map_err(scratch(&pending))?;
        Ok(Spill { dir, _held: held })
    }

    /// The sub-directory `name` (created).
    pub(crate) fn dir(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).map_err(|source| Error::Scratch { path: path.clone(), source })?;
        Ok(path)
    }
}

/// Removes the scratch directories under `tmp` whose process died (their [`HELD`] file can be
/// locked); returns them. Best effort: a directory that cannot be removed is left, with a warning.
/// Directories without the file (an older medallion's, or one being created) are left alone, but
/// for one whose process died while creating it (its [`PENDING`] file unlocked and old).
fn sweep(tmp: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(tmp) else { return Vec::new() };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        let held = match File::open(dir.join(HELD)) {
            Ok(held) => held,
            Err(_) => match File::open(dir.join(PENDING)) {
                Ok(pending) if age(&pending).is_some_and(|a| a > PENDING_GRACE) => pending,
                _ => continue,
            },
        };
        if held.try_lock().is_err() {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed the scratch directory of a process that died");
                swept.push(dir);
            }
            // Another process's sweep removed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "scratch directory of a dead process left"),
        }
    }
    swept
}

/// How long ago `file` was last modified (None: unknown).
fn age(file: &File) -> Option<std::time::Duration> {
    file.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok())
}

/// One spilled file being written.
pub(crate) struct SpillWriter {
    path: PathBuf,
    writer: FileWriter<BufWriter<File>>,
    rows: u64,
}

impl SpillWriter {
    /// Creates `<dir>/<name>.arrow` for batches of `schema`.
    pub(crate) fn create(dir: &Path, name: &str, schema: &SchemaRef) -> Result<SpillWriter> {
        let path = dir.join(format!("{name}.{EXTENSION}"));
        let file = File::create(&path).map_err(|source| Error::Scratch { path: path.clone(), source })?;
        // A dictionary column's values may grow from one batch to the next (see
        // `provenance::Encoder`): written as deltas, which one IPC file can hold.
        let options = IpcWriteOptions::default().with_dictionary_handling(DictionaryHandling::Delta);
        let writer = FileWriter::try_new_with_options(BufWriter::new(file), schema.as_ref(), options)
            .map_err(|e| arrow(&path, e))?;
        Ok(SpillWriter { path, writer, rows: 0 })
    }

    /// Appends `batch`.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        self.writer.write(batch).map_err(|e| arrow(&self.path, e))
    }

    /// Closes the file: its path and the rows written.
    pub(crate) fn finish(mut self) -> Result<(PathBuf, u64)> {
        self.writer.finish().map_err(|e| arrow(&self.path, e))?;
        Ok((self.path, self.rows))
    }
}

/// Spilled files read back as rows: every batch of each file, file after file, in order (a
/// merge's source too large to hold reads them in passes).
#[derive(Debug, Clone)]
pub(crate) struct Spilled {
    schema: SchemaRef,
    paths: Vec<PathBuf>,
    rows: u64,
}

impl Spilled {
    /// The files at `paths` (of `schema`), holding `rows` rows in all.
    pub(crate) fn new(schema: SchemaRef, paths: Vec<PathBuf>, rows: u64) -> Spilled {
        Spilled { schema, paths, rows }
    }
}

impl Rows for Spilled {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn count(&self) -> u64 {
        self.rows
    }

    fn pass(&self, projection: Option<&[usize]>) -> Result<Pass> {
        let projection = projection.map(<[usize]>::to_vec);
        let files = self.paths.clone().into_iter().flat_map(move |path| -> Pass {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(source) => return Box::new(std::iter::once(Err(Error::Scratch { path, source }))),
            };
            match FileReader::try_new_buffered(file, projection.clone()) {
                Ok(reader) => Box::new(reader.map(move |b| b.map_err(|e| arrow(&path, e)))),
                Err(e) => Box::new(std::iter::once(Err(arrow(&path, e)))),
            }
        });
        Ok(Box::new(files))
    }
}

/// Every batch of a spilled file, in order.
pub(crate) fn read_all(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|source| Error::Scratch { path: path.to_path_buf(), source })?;
    let reader = FileReader::try_new_buffered(file, None).map_err(|e| arrow(path, e))?;
    reader.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| arrow(path, e))
}

fn arrow(path: &Path, e: datafusion::arrow::error::ArrowError) -> Error {
    Error::arrow(format!("scratch file {}", path.display()), e)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn batches_come_back_as_written_and_the_directory_goes_with_the_spill() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8View, true),
        ]));
        let batch = |ids: Vec<i64>| {
            let names: Vec<Option<String>> = ids.iter().map(|i| (i % 2 == 0).then(|| format!("n{i}"))).collect();
            let names = StringArray::from(names);
            let names = datafusion::arrow::compute::cast(&names, &DataType::Utf8View).expect("test step");
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(ids)), names]).expect("test step")
        };
        let spill = Spill::new("test").expect("test step");
        let dir = spill.dir("part").expect("test step");
        let mut w = SpillWriter::create(&dir, "0", &schema).expect("test step");
        let written = vec![batch(vec![1, 2, 3]), batch(vec![]), batch(vec![4])];
        for b in &written {
            w.write(b).expect("test step");
        }
        let (path, rows) = w.finish().expect("test step");
        assert_eq!(rows, 4);
        let back = read_all(&path).expect("test step");
        assert_eq!(back, vec![written[0].clone(), written[2].clone()]);
        let root = dir.parent().expect("test step").to_path_buf();
        drop(spill);
        assert!(!root.exists());
    }

    /// A killed process's scratch directory (its lock released, or its lock file left pending
    /// long ago) is removed by the next sweep; a live one's, one being created, and one without a
    /// lock file are not.
    #[test]
    fn a_sweep_removes_only_the_scratch_of_processes_that_died() {
        let tmp = tempfile::tempdir().expect("test step");
        let make = |name: &str, held: bool| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).expect("test step");
            if held {
                File::create(dir.join(HELD)).expect("test step");
            }
            dir
        };
        let dead = make("medallion-rebuild-orders-dead", true);
        let old = make("medallion-rebuild-orders-old", false);
        // Killed while taking its lock: swept once the pending file is old, not while it is new.
        let creating = make("medallion-rebuild-orders-creating", false);
        let pending = File::create(creating.join(PENDING)).expect("test step");
        let killed = make("medallion-rebuild-orders-killed", false);
        let stale = File::create(killed.join(PENDING)).expect("test step");
        stale.set_modified(std::time::SystemTime::now() - 2 * PENDING_GRACE).expect("test step");
        drop((pending, stale));
        let other = make("not-ours", true);
        let live = make("medallion-promote-orders-live", true);
        let lock = File::open(live.join(HELD)).expect("test step");
        lock.try_lock().expect("test step");
        let mut swept = sweep(tmp.path());
        swept.sort();
        assert_eq!(swept, vec![dead.clone(), killed.clone()]);
        assert!(!dead.exists() && !killed.exists() && old.exists() && creating.exists());
        assert!(other.exists() && live.exists());
        drop(lock);
        assert_eq!(sweep(tmp.path()), vec![live.clone()], "its process gone, its scratch goes");
        // A spill's own directory holds its lock from the start.
        let spill = Spill::new("test").expect("test step");
        let mine = spill.dir("x").expect("test step").parent().expect("test step").to_path_buf();
        assert!(sweep(&std::env::temp_dir()).iter().all(|d| d != &mine));
        assert!(mine.join(HELD).exists());
    }

    #[test]
    fn spilled_files_read_back_in_order_whole_or_projected_pass_after_pass() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = |ids: Vec<i64>| {
            let names = StringArray::from(ids.iter().map(|i| format!("n{i}")).collect::<Vec<_>>());
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(ids)), Arc::new(names)])
                .expect("test step")
        };
        let spill = Spill::new("test").expect("test step");
        let dir = spill.dir("rows").expect("test step");
        let mut paths = Vec::new();
        for (i, ids) in [vec![vec![5, 6], vec![7]], vec![], vec![vec![1]]].into_iter().enumerate() {
            let mut w = SpillWriter::create(&dir, &i.to_string(), &schema).expect("test step");
            for b in ids {
                w.write(&batch(b)).expect("test step");
            }
            paths.push(w.finish().expect("test step").0);
        }
        let rows = Spilled::new(Arc::clone(&schema), paths.clone(), 4);
        assert_eq!(rows.count(), 4);
        for _ in 0..2 {
            let whole: Vec<RecordBatch> =
                rows.pass(None).expect("test step").collect::<Result<_>>().expect("test step");
            assert_eq!(whole, vec![batch(vec![5, 6]), batch(vec![7]), batch(vec![1])]);
        }
        let names: Vec<RecordBatch> =
            rows.pass(Some(&[1])).expect("test step").collect::<Result<_>>().expect("test step");
        assert_eq!(names.iter().map(|b| b.num_columns()).collect::<Vec<_>>(), [1, 1, 1]);
        assert_eq!(names[0].schema().field(0).name(), "name");
        std::fs::remove_file(&paths[2]).expect("test step");
        let failed = rows.pass(None).expect("test step").collect::<Result<Vec<_>>>();
        assert!(matches!(failed, Err(Error::Scratch { .. })), "a missing file is an error, not fewer rows");
    }
}
