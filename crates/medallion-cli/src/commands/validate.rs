//! `medallion validate`.

use anyhow::Result;
use medallion::Error;
use medallion::project::Project;

use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::json_line;
use crate::sayln;

pub async fn run(g: &Global) -> Result<Outcome> {
    match Project::load(&g.project).await {
        Ok(p) => {
            if g.format == Format::Json {
                json_line(
                    "validated",
                    serde_json::json!({ "ok": true, "project": p.name, "sources": p.sources.len(), "silver": p.silver.len(), "gold": p.gold.len() }),
                )?;
            } else {
                sayln!(
                    "ok: project `{}`: {} source(s), {} silver table(s), {} gold model(s)",
                    p.name,
                    p.sources.len(),
                    p.silver.len(),
                    p.gold.len()
                );
            }
            Ok(Outcome::Ok)
        }
        Err(Error::InvalidProject(diags)) if g.format == Format::Json => {
            for d in &diags {
                json_line("problem", serde_json::to_value(d)?)?;
            }
            json_line("validated", serde_json::json!({ "ok": false, "problems": diags.len() }))?;
            std::process::exit(2);
        }
        Err(e) => Err(e.into()),
    }
}
