//! The inflate-only floor of `scripts/bench` (issue 20): every gzip file given, inflated with the
//! library and the parallelism medallion's promotion uses (flate2 on zlib-rs, whole files read
//! into memory, `threads` files at a time, 1 MiB reads), the bytes discarded.
//!
//! ```text
//! cargo run --release --example inflate_floor -p medallion-cli -- [--threads N] FILE...
//! ```
//! Prints one JSON line: files, inflated bytes, seconds.

mod flags;

use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

fn main() -> std::io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = std::thread::available_parallelism().map_or(2, usize::from);
    if let Some(n) = flags::take(&mut args, "--threads") {
        threads = n.parse().unwrap_or(threads).max(1);
    }
    let start = std::time::Instant::now();
    let next = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    std::thread::scope(|scope| -> std::io::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> std::io::Result<()> {
                    let mut buf = vec![0u8; 1 << 20];
                    while let Some(path) = args.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let gz = std::fs::read(path)?;
                        let mut inflate = flate2::read::MultiGzDecoder::new(gz.as_slice());
                        loop {
                            let n = inflate.read(&mut buf)?;
                            if n == 0 {
                                break;
                            }
                            bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| std::io::Error::other("an inflate thread panicked"))??;
        }
        Ok(())
    })?;
    println!(
        "{{\"files\": {}, \"bytes\": {}, \"threads\": {threads}, \"secs\": {:.3}}}",
        args.len(),
        bytes.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
