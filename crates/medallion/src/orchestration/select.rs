//! Node selection, like dbt's: which nodes of the project's DAG a run runs.
//!
//! ```text
//! orders            the node(s) named orders (a source, silver table or gold model; or bronze/orders, silver/orders…)
//! orders+           it and everything downstream
//! +daily_revenue    it and everything upstream
//! +orders+          both
//! layer:gold        every node of a layer (bronze, silver, gold)
//! tag:finance       every table or model tagged finance
//! ```
//!
//! Several selectors are a union; `--exclude` selectors are removed from it.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::project::Project;

/// The nodes `select` (all when empty) minus `exclude` pick.
pub fn select(project: &Project, select: &[String], exclude: &[String]) -> Result<BTreeSet<String>> {
    let up = project.edges();
    let mut down: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (node, reads) in &up {
        for r in reads {
            down.entry(r.as_str()).or_default().insert(node.as_str());
        }
    }
    let pick = |selectors: &[String]| -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for sel in selectors {
            let (upstream, rest) = sel.strip_prefix('+').map_or((false, sel.as_str()), |r| (true, r));
            let (downstream, name) = rest.strip_suffix('+').map_or((false, rest), |r| (true, r));
            let base = matching(project, &up, name)?;
            if base.is_empty() {
                return Err(Error::Unknown { kind: "node", name: sel.clone(), known: up.keys().cloned().collect() });
            }
            for node in base {
                if upstream {
                    walk(
                        &node,
                        &|n| up.get(n).map(|s| s.iter().map(String::as_str).collect()).unwrap_or_default(),
                        &mut out,
                    );
                }
                if downstream {
                    walk(&node, &|n| down.get(n).cloned().unwrap_or_default().into_iter().collect(), &mut out);
                }
                out.insert(node);
            }
        }
        Ok(out)
    };
    let chosen = if select.is_empty() { up.keys().cloned().collect() } else { pick(select)? };
    let excluded = pick(exclude)?;
    Ok(chosen.difference(&excluded).cloned().collect())
}

fn matching(project: &Project, up: &BTreeMap<String, BTreeSet<String>>, name: &str) -> Result<BTreeSet<String>> {
    if let Some(layer) = name.strip_prefix("layer:") {
        if !matches!(layer, "bronze" | "silver" | "gold") {
            return Err(Error::Unknown {
                kind: "layer",
                name: layer.to_string(),
                known: vec!["bronze".into(), "silver".into(), "gold".into()],
            });
        }
        return Ok(up.keys().filter(|n| n.starts_with(&format!("{layer}/"))).cloned().collect());
    }
    if let Some(tag) = name.strip_prefix("tag:") {
        let silver =
            project.silver.values().filter(|t| t.tags.iter().any(|x| x == tag)).map(|t| format!("silver/{}", t.name));
        let gold =
            project.gold.values().filter(|m| m.tags.iter().any(|x| x == tag)).map(|m| format!("gold/{}", m.name));
        return Ok(silver.chain(gold).collect());
    }
    if up.contains_key(name) {
        return Ok(BTreeSet::from([name.to_string()]));
    }
    Ok(up.keys().filter(|n| n.split_once('/').is_some_and(|(_, n)| n == name)).cloned().collect())
}

fn walk<'a>(from: &str, next: &dyn Fn(&str) -> Vec<&'a str>, out: &mut BTreeSet<String>) {
    let mut stack: Vec<String> = vec![from.to_string()];
    while let Some(n) = stack.pop() {
        for m in next(&n) {
            if out.insert(m.to_string()) {
                stack.push(m.to_string());
            }
        }
    }
}

/// What `medallion schedule` runs: per source with a `schedule`, its ingest, its silver tables
/// and the `on_run` gold models downstream of them; per gold model refreshed hourly, daily or
/// weekly, that model at that cadence.
pub fn scheduled(project: &Project) -> Result<Vec<crate::runtime::schedule::Item>> {
    use crate::runtime::schedule::Item;
    use crate::spec::Refresh;
    let up = project.edges();
    let mut items = Vec::new();
    for s in project.sources.values() {
        let Some(expr) = &s.schedule else { continue };
        let mut nodes: BTreeSet<String> = BTreeSet::from([format!("bronze/{}", s.name)]);
        // Downstream silver tables, then on_run models, until nothing changes.
        loop {
            let before = nodes.len();
            for (node, reads) in &up {
                let on_run = match node.split_once('/') {
                    Some(("silver", _)) => true,
                    Some(("gold", m)) => project.gold.get(m).is_some_and(|g| g.refresh == Refresh::OnRun),
                    _ => false,
                };
                if on_run && reads.iter().any(|r| nodes.contains(r)) {
                    nodes.insert(node.clone());
                }
            }
            if nodes.len() == before {
                break;
            }
        }
        items.push(Item::new(&format!("source:{}", s.name), expr, nodes).map_err(Error::Internal)?);
    }
    for m in project.gold.values() {
        let expr = match m.refresh {
            Refresh::OnRun => continue,
            Refresh::Hourly => "@hourly",
            Refresh::Daily => "@daily",
            Refresh::Weekly => "@weekly",
        };
        items.push(
            Item::new(&format!("gold:{}", m.name), expr, BTreeSet::from([format!("gold/{}", m.name)]))
                .map_err(Error::Internal)?,
        );
    }
    Ok(items)
}
