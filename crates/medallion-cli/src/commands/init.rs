//! `medallion init` and `medallion import`.

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

pub async fn import_dbt(g: &Global, from: &Path, dir: &Path) -> Result<Outcome> {
    let imported = medallion::import::dbt::import(from, dir)?;
    report(g, &from.display().to_string(), dir, &imported).await
}

pub async fn import_files(g: &Global, files: &[std::path::PathBuf], dir: &Path) -> Result<Outcome> {
    let imported = medallion::import::files::import(files, dir)?;
    let from = if files.len() == 1 { files[0].display().to_string() } else { format!("{} files", files.len()) };
    report(g, &from, dir, &imported).await
}

/// What an import wrote, did not translate and chose, then the new project validated.
async fn report(g: &Global, from: &str, dir: &Path, imported: &medallion::import::Imported) -> Result<Outcome> {
    if g.format == Format::Json {
        let listed = |items: &[(std::path::PathBuf, String)]| -> Vec<serde_json::Value> {
            items.iter().map(|(f, what)| serde_json::json!({ "file": f, "message": what })).collect()
        };
        json_line(
            "imported",
            serde_json::json!({
                "dir": dir,
                "files": imported.files,
                "untranslated": listed(&imported.untranslated),
                "notes": listed(&imported.notes),
            }),
        )?;
    } else {
        for f in &imported.files {
            sayln!("{}", dir.join(f).display());
        }
        for (file, what) in &imported.untranslated {
            eprintln!("warning: {}: {what}", file.display());
        }
        if g.quiet == 0 {
            for (file, what) in &imported.notes {
                eprintln!("note: {}: {what}", file.display());
            }
        }
    }
    // The new project must validate: a problem here is the importer's to explain, shown now.
    let project = medallion::project::Project::load(dir).await.map_err(|e| {
        anyhow::anyhow!("{e}\n(the imported project in {} needs these fixed before it runs)", dir.display())
    })?;
    if g.format != Format::Json && g.quiet == 0 {
        eprintln!(
            "imported {} into {}: {} source(s), {} silver table(s), {} gold model(s){}",
            from,
            dir.display(),
            project.sources.len(),
            project.silver.len(),
            project.gold.len(),
            match imported.untranslated.len() {
                0 => String::new(),
                n => format!("; {n} thing(s) not translated (above)"),
            }
        );
        eprintln!("hint: cd {} && medallion run", dir.display());
    }
    Ok(Outcome::Ok)
}
