//! How a promotion's `read_validate` stage splits between decoding and validating: every gzip
//! NDJSON batch given is decoded for a silver table of a project (its contract's fields,
//! `medallion::bronze::decode::decode_batch`), then each chunk is validated against the contract
//! (`medallion::silver::validate::validate`), on one thread, `--reps` times; the fastest pass of
//! each half is reported. Decoding all chunks before validating any leaves nothing of them in
//! the CPU's caches: validation here reads its input as a promotion's worker would if decoding
//! had not just touched it, which is what a change to the decoder's output must be measured by.
//!
//! ```text
//! cargo run --release --example decode_validate -p medallion-cli -- \
//!     --project scripts/bench-project --table orders [--reps 3] FILE...
//! ```
//! Prints one JSON line: files, rows, valid rows, decoding and validating seconds (best passes).

mod flags;

use medallion::project::Project;
use medallion::silver::validate::{Origin, validate};

#[allow(clippy::result_large_err)] // the decoder's callback returns medallion's Result
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| flags::take(&mut args, flag);
    let project = take("--project").ok_or("--project DIR is required")?;
    let table = take("--table").ok_or("--table NAME is required")?;
    let reps: usize = take("--reps").and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    // The project as a run loads it: the same contract, null markers and source.
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let project = runtime.block_on(Project::load(std::path::Path::new(&project))).map_err(|e| e.to_string())?;
    let silver = project.silver.get(&table).ok_or_else(|| format!("no silver table `{table}` in the project"))?;
    let (contract, source) = (&silver.contract, &silver.source);
    let wanted = contract.field_names();
    let files: Vec<(String, Vec<u8>)> =
        args.iter().map(|p| std::fs::read(p).map(|gz| (p.clone(), gz))).collect::<Result<_, _>>()?;
    let (mut decoding, mut validating) = (f64::INFINITY, f64::INFINITY);
    let (mut rows, mut valid) = (0usize, 0usize);
    for _ in 0..reps {
        let (mut decoded, mut validated) = (0.0, 0.0);
        (rows, valid) = (0, 0);
        for (path, gz) in &files {
            let start = std::time::Instant::now();
            let mut chunks = Vec::new();
            medallion::bronze::decode::decode_batch(gz, &wanted, |chunk| {
                chunks.push(chunk);
                Ok(())
            })?;
            decoded += start.elapsed().as_secs_f64();
            let origin =
                Origin { batch_id: "probe".into(), source: source.clone(), file: path.clone(), ingested_at: None };
            let start = std::time::Instant::now();
            for chunk in &chunks {
                rows += chunk.rows();
                valid += validate(contract, chunk, &origin)?.valid.num_rows();
            }
            validated += start.elapsed().as_secs_f64();
        }
        (decoding, validating) = (decoding.min(decoded), validating.min(validated));
    }
    println!(
        "{{\"files\": {}, \"rows\": {rows}, \"valid\": {valid}, \"reps\": {reps}, \"decode_secs\": {decoding:.3}, \"validate_secs\": {validating:.3}}}",
        files.len()
    );
    Ok(())
}
