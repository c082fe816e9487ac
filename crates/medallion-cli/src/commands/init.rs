//! `medallion init`.

use std::path::Path;

use anyhow::Result;

use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::json_line;
use crate::sayln;

pub fn run(g: &Global, dir: &Path) -> Result<Outcome> {
    let files = medallion::init::init(dir)?;
    if g.format == Format::Json {
        json_line("init", serde_json::json!({ "dir": dir, "files": files }))?;
    } else {
        for f in &files {
            sayln!("{}", dir.join(f).display());
        }
        if g.quiet == 0 {
            eprintln!("created an orders project with sample data in {}", dir.display());
            eprintln!("hint: cd {} && medallion run", dir.display());
        }
    }
    Ok(Outcome::Ok)
}
