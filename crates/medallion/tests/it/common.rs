//! Shared fixtures: the orders example project, generated bronze data, table readers.

use std::io::Write;
use std::path::{Path, PathBuf};

use medallion::arrow::array::{Array, AsArray, RecordBatch};
use medallion::arrow::datatypes::{Decimal128Type, Int64Type};
use medallion::catalog::session;
use medallion::orchestration::run::{RunOptions, RunSummary, run};
use medallion::project::Project;
use medallion::sample::{SampleBatch, SampleSpec, generate};
use medallion::silver::replay::{Replay, ReplayOptions, replay};
use medallion::storage::delta::Table;
use medallion::storage::{Lake, Layer};

pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/orders")
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub project: Project,
    pub lake: Lake,
}

impl Env {
    pub async fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = Project::load(&example_dir()).await.expect("example project loads");
        let project = project.with_lake(Some(dir.path().join("lake").display().to_string()));
        let lake = Lake::open(&project.lake, &project.root).expect("lake");
        Env { dir, project, lake }
    }

    pub fn lake_dir(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    /// Writes a batch in the bronze layout, as another system would.
    pub fn land(&self, batch: &SampleBatch) -> PathBuf {
        let path = self.lake_dir().join(format!("bronze/orders/{}/{}.ndjson.gz", batch.date, batch.batch_id));
        write_gz(&path, batch.bronze_ndjson("orders").as_bytes());
        path
    }

    pub async fn run(&self) -> RunSummary {
        let summary = self.try_run().await;
        assert!(summary.ok(), "run failed: {:?}", summary.failed);
        summary
    }

    /// A run whose nodes may fail.
    pub async fn try_run(&self) -> RunSummary {
        run(&self.project, &self.lake, &RunOptions { threads: 2, now: medallion::runtime::now(), ..Default::default() })
            .await
            .expect("run")
    }

    pub async fn query(&self, sql: &str) -> Vec<RecordBatch> {
        let ctx = session(&self.lake, &self.project).await.expect("session");
        ctx.sql(sql).await.expect("plan").collect().await.expect("collect")
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        first_i64(&self.query(sql).await)
    }

    /// Sum of a decimal(…,2) column in cents.
    pub async fn sum_cents(&self, sql: &str) -> i128 {
        let b = self.query(sql).await;
        let a = b[0].column(0).as_primitive::<Decimal128Type>();
        if a.is_null(0) { 0 } else { a.value(0) }
    }
}

/// Every row of `sql` over the lake's tables, each cell as a string.
pub async fn query(project: &Project, lake: &Lake, sql: &str) -> Vec<Vec<String>> {
    let ctx = session(lake, project).await.expect("session");
    let batches = ctx.sql(sql).await.expect("plan").collect().await.expect("run");
    let mut rows = Vec::new();
    for b in &batches {
        let cols: Vec<Vec<String>> = b.columns().iter().map(strings).collect();
        for r in 0..b.num_rows() {
            rows.push(cols.iter().map(|c| c[r].clone()).collect());
        }
    }
    rows
}

/// The first row's first column of a query's rows, an `Int64` (a count).
pub fn first_i64(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// A column's values as strings (whatever the string encoding, e.g. Utf8View).
pub fn strings(col: &medallion::arrow::array::ArrayRef) -> Vec<String> {
    let utf8 = medallion::arrow::compute::cast(col, &medallion::arrow::datatypes::DataType::Utf8).expect("cast");
    let a = utf8.as_string::<i32>();
    (0..a.len()).map(|i| a.value(i).to_string()).collect()
}

pub fn write_gz(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gz");
    std::fs::write(path, e.finish().expect("gz")).expect("write");
}

pub fn sample(rows: u64, batches: u32, seed: u64) -> (Vec<SampleBatch>, medallion::sample::Expected) {
    generate(&SampleSpec { rows, batches, seed })
}

/// A project directory with its own lake.
pub struct Dir {
    pub dir: tempfile::TempDir,
}

impl Dir {
    pub fn new(toml: &str) -> Dir {
        let d = Dir { dir: tempfile::tempdir().expect("tmp") };
        d.configure(toml);
        d
    }

    /// A copy of the orders example.
    pub fn example() -> Dir {
        let d = Dir::new(&std::fs::read_to_string(example_dir().join("medallion.toml")).expect("read"));
        std::fs::create_dir_all(d.dir.path().join("gold")).expect("mkdir");
        for f in ["gold/daily_revenue.sql", "gold/revenue_by_tier.sql"] {
            std::fs::copy(example_dir().join(f), d.dir.path().join(f)).expect("copy");
        }
        d
    }

    pub fn configure(&self, toml: &str) {
        std::fs::write(self.dir.path().join("medallion.toml"), toml).expect("write");
    }

    pub fn edit(&self, from: &str, to: &str) {
        let path = self.dir.path().join("medallion.toml");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "`{from}` not in medallion.toml");
        std::fs::write(path, text.replace(from, to)).expect("write");
    }

    pub fn bronze(&self, source: &str, batch: &str, at: &str, lines: &[String]) {
        let text: String = lines
            .iter()
            .map(|r| {
                format!(
                    "{}, \"_batch_id\": \"{batch}\", \"_ingested_at\": \"{at}\", \"_source\": \"{source}\"}}\n",
                    &r[..r.len() - 1]
                )
            })
            .collect();
        write_gz(&self.dir.path().join(format!("lake/bronze/{source}/2024-03-01/{batch}.ndjson.gz")), text.as_bytes());
    }

    pub async fn open(&self) -> (Project, Lake) {
        let project = Project::load(self.dir.path()).await.expect("project loads");
        let lake = Lake::open(&project.lake, &project.root).expect("lake");
        (project, lake)
    }

    pub async fn run(&self) -> RunSummary {
        let (project, lake) = self.open().await;
        run(&project, &lake, &RunOptions { threads: 2, now: medallion::runtime::now(), ..Default::default() })
            .await
            .expect("run")
    }

    /// A run with these options (threads 2, the current time unless set).
    pub async fn run_with(&self, opts: RunOptions) -> RunSummary {
        let (project, lake) = self.open().await;
        run(&project, &lake, &RunOptions { threads: 2, ..opts }).await.expect("run")
    }

    pub async fn replay(&self, filter: Option<&str>, dry_run: bool) -> Replay {
        self.try_replay(filter, dry_run).await.expect("replay")
    }

    pub async fn try_replay(&self, filter: Option<&str>, dry_run: bool) -> medallion::Result<Replay> {
        self.try_replay_of("orders", filter, dry_run).await
    }

    pub async fn try_replay_of(&self, table: &str, filter: Option<&str>, dry_run: bool) -> medallion::Result<Replay> {
        let (project, lake) = self.open().await;
        let now = medallion::runtime::now();
        let opts = ReplayOptions {
            run_id: "replay-test".into(),
            now,
            filter: filter.map(str::to_string),
            dry_run,
            lock_wait: std::time::Duration::ZERO,
        };
        replay(&lake, &project, &project.silver[table], &opts).await
    }

    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let (project, lake) = self.open().await;
        query(&project, &lake, sql).await
    }

    pub async fn version(&self, layer: Layer, table: &str) -> Option<i64> {
        let (_, lake) = self.open().await;
        Table::open(&lake, layer, table).await.expect("open").version()
    }
}

pub fn copy_bronze(from: &Path, to: &Path) {
    for entry in walk(&from.join("lake/bronze")) {
        let dest = to.join("lake/bronze").join(entry.strip_prefix(from.join("lake/bronze")).expect("under"));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&entry, dest).expect("copy");
    }
}

pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// xorshift64*: a property test's sequences are the same on every machine, without a dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next value below `n`.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// The seeds a property test runs: `defaults` (CI's), or as `MEDALLION_TEST_SEEDS` says for a
/// longer hunt: a list (`3,99`) runs those, a count (`+200`) adds that many after the defaults.
/// Each is printed as it starts, so a failing test's output names the seed a list reruns alone.
pub fn seeds(defaults: &[u64]) -> impl Iterator<Item = u64> {
    seeds_from(defaults, std::env::var("MEDALLION_TEST_SEEDS").ok().as_deref())
        .into_iter()
        .inspect(|seed| eprintln!("property test seed {seed}"))
}

fn seeds_from(defaults: &[u64], asked: Option<&str>) -> Vec<u64> {
    let Some(asked) = asked.map(str::trim).filter(|a| !a.is_empty()) else { return defaults.to_vec() };
    if let Some(count) = asked.strip_prefix('+') {
        // Nonzero (a xorshift stays at 0) and apart from the usual small defaults.
        let count: u64 = count.parse().unwrap_or_else(|_| refused(asked));
        return defaults.iter().copied().chain((1..=count).map(|i| 10_000 + i)).collect();
    }
    asked
        .split(',')
        .map(|s| s.trim().parse::<u64>().ok().filter(|s| *s != 0).unwrap_or_else(|| refused(asked)))
        .collect()
}

fn refused(asked: &str) -> ! {
    panic!("MEDALLION_TEST_SEEDS: {asked:?} is neither a list of seeds (3,99) nor a count (+200)")
}

#[test]
fn seeds_are_the_defaults_a_list_or_the_defaults_and_a_count_more() {
    assert_eq!(seeds_from(&[3, 99], None), [3, 99]);
    assert_eq!(seeds_from(&[3, 99], Some(" ")), [3, 99]);
    assert_eq!(seeds_from(&[3, 99], Some("5, 8")), [5, 8]);
    assert_eq!(seeds_from(&[3, 99], Some("+2")), [3, 99, 10_001, 10_002]);
    for bad in ["x", "+", "1,,2", "0"] {
        assert!(std::panic::catch_unwind(|| seeds_from(&[3], Some(bad))).is_err(), "{bad}");
    }
}
