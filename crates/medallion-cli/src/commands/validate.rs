//! `medallion validate`.

use anyhow::Result;
use medallion::Error;

use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::json_line;
use crate::sayln;

pub async fn run(g: &Global) -> Result<Outcome> {
    match super::load(g).await.map_err(|e| e.downcast::<Error>()) {
        Ok(p) => {
            for note in &p.notes {
                if g.format == Format::Json {
                    json_line("note", serde_json::to_value(note)?)?;
                } else {
                    eprintln!("note: {note}");
                }
            }
            // Against the lake when it can be reached: contracts that no longer match their table.
            let p = p.with_lake(g.lake.clone());
            // A local lake not created yet has nothing to compare (and validate creates nothing).
            let local_missing = !p.lake.contains("://") && !p.root.join(&p.lake).exists();
            let changed = match p.open_lake() {
                Ok(lake) if !local_missing && lake.check().await.is_ok() => super::contract_changes(&p, &lake).await?,
                _ => Vec::new(),
            };
            for (table, verdict) in &changed {
                let (node, changes, next) = super::describe_contract_change(table, verdict);
                if g.format == Format::Json {
                    json_line(
                        "contract_changed",
                        serde_json::json!({ "table": node, "changes": changes, "next": next }),
                    )?;
                } else {
                    eprintln!(
                        "note: {node}: the contract differs from the published table: {}; {next}",
                        changes.join("; ")
                    );
                }
            }
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
        Err(Ok(Error::InvalidProject(diags))) if g.format == Format::Json => {
            for d in &diags {
                json_line("problem", serde_json::to_value(d)?)?;
            }
            json_line("validated", serde_json::json!({ "ok": false, "problems": diags.len() }))?;
            std::process::exit(2);
        }
        Err(Ok(e)) => Err(e.into()),
        Err(Err(e)) => Err(e),
    }
}
