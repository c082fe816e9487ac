//! How fast the decoder alone turns bronze into raw columns: every gzip NDJSON batch given is
//! inflated and decoded on one thread (`medallion::bronze::decode::decode_batch`, the wanted
//! fields only, as a promotion asks for them), nothing validated or written, `--reps` times; the
//! fastest pass is reported. CPU-bound and single-threaded, so it compares decoder changes on a
//! busy machine far better than a whole run does.
//!
//! ```text
//! cargo run --release --example decode_floor -p medallion-cli -- \
//!     --fields order_id,customer_id,amount,currency,order_date,region,source [--reps 3] FILE...
//! ```
//! Prints one JSON line: files, rows, bad lines, inflated-and-decoded seconds (best pass).

mod flags;

#[allow(clippy::result_large_err)] // the decoder's callback returns medallion's Result
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| flags::take(&mut args, flag);
    let fields: Vec<String> =
        take("--fields").ok_or("--fields a,b,c is required")?.split(',').map(str::to_string).collect();
    let reps: usize = take("--reps").and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let files: Vec<Vec<u8>> = args.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let mut best = f64::INFINITY;
    let (mut rows, mut bad) = (0usize, 0usize);
    for _ in 0..reps {
        let start = std::time::Instant::now();
        (rows, bad) = (0, 0);
        for gz in &files {
            let lines = medallion::bronze::decode::decode_batch(gz, &fields, |chunk| {
                rows += chunk.rows();
                Ok(())
            })?;
            bad += lines.len();
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{{\"files\": {}, \"rows\": {rows}, \"bad_lines\": {bad}, \"reps\": {reps}, \"secs\": {best:.3}}}",
        files.len()
    );
    Ok(())
}
