//! The pipeline report (`medallion docs`): one self-contained `index.html` (inline CSS, SVG and a
//! little script; no network fetch when viewed) with the lineage graph (sources → silver → gold,
//! with their gates), and per table its description, owner, cadence, SLA, contract or SQL, recent
//! runs, rows and rejected share over time as charts, top rejection reasons with sample records,
//! and the latest expectation results.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::catalog;
use crate::error::Result;
use crate::project::Project;
use crate::runtime::Now;
use crate::silver::dead_letter::summarize;
use crate::storage::delta::Table;
use crate::storage::{Lake, Layer};

/// One finished node run, from the event log.
struct Point {
    run_id: String,
    at: String,
    status: String,
    read: Option<f64>,
    written: Option<f64>,
    rejected: Option<f64>,
    ms: Option<f64>,
}

/// The report's HTML.
pub async fn render(lake: &Lake, project: &Project, now: Now) -> Result<String> {
    let ctx = catalog::session(lake, project).await?;
    let events = text_rows(
        &ctx,
        "SELECT node, run_id, CAST(at AS VARCHAR) AS at_text, status, rows_read, rows_inserted, rows_rejected, duration_ms FROM medallion.events \
         WHERE type = 'node_finished' AND node NOT LIKE 'bronze/%' AND status NOT IN ('up_to_date', 'waiting') ORDER BY at",
    )
    .await?;
    let mut history: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for r in events {
        let num = |i: usize| r[i].as_deref().and_then(|v| v.parse::<f64>().ok());
        history.entry(r[0].clone().unwrap_or_default()).or_default().push(Point {
            run_id: r[1].clone().unwrap_or_default(),
            at: r[2].clone().unwrap_or_default(),
            status: r[3].clone().unwrap_or_default(),
            read: num(4),
            written: num(5),
            rejected: num(6),
            ms: num(7),
        });
    }
    let results = text_rows(
        &ctx,
        "SELECT node, expectation, kind, action, outcome, CAST(failing_rows AS VARCHAR), observed FROM medallion.expectations ORDER BY evaluated_at DESC",
    )
    .await?;
    let mut latest: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for r in results {
        let cells: Vec<String> = r.iter().map(|c| c.clone().unwrap_or_else(|| "-".into())).collect();
        let list = latest.entry(cells[0].clone()).or_default();
        if !list.iter().any(|x| x[1] == cells[1]) {
            list.push(cells);
        }
    }

    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{name} — medallion report</title><style>{CSS}</style></head><body>\
         <header><h1>{name}</h1><p>medallion {version} · generated {at} · lake {lake}</p><p id=\"summary\"></p></header>",
        name = esc(&project.name),
        version = crate::VERSION,
        at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        lake = esc(lake.display())
    );
    html.push_str("<section><h2>Lineage</h2>");
    html.push_str(&lineage(project));
    html.push_str("</section>");

    for t in project.silver.values() {
        let node = format!("silver/{}", t.name);
        let table = Table::open(lake, Layer::Silver, &t.name).await?;
        let rows = table.count_rows().await?;
        let _ = write!(
            html,
            "<section class=\"table\" id=\"{id}\"><h2>silver.{name}</h2><p>{desc}</p><dl><dt>owner</dt><dd>{owner}</dd><dt>source</dt><dd>{source}</dd>\
             <dt>SLA</dt><dd>{sla}</dd><dt>rows</dt><dd>{rows}</dd><dt>version</dt><dd>{version}</dd><dt>key</dt><dd>{key}</dd></dl>",
            id = anchor(&node),
            name = esc(&t.name),
            desc = esc(t.description.as_deref().unwrap_or("")),
            owner = esc(t.owner.as_deref().unwrap_or("-")),
            source = esc(&t.source),
            sla = t.sla.map_or("-".into(), |d| crate::quality::checks::human(d.seconds as i64)),
            version = table.version().map_or("-".into(), |v| v.to_string()),
            key = esc(&t.keys.join(", ")),
        );
        html.push_str(
            "<h3>Contract</h3><table><tr><th>column</th><th>type</th><th>required</th><th>transform</th></tr>",
        );
        for c in &t.contract.columns {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&c.name),
                esc(&c.ty.to_string()),
                if c.required { "yes" } else { "no" },
                esc(c.transform.as_ref().map_or("", |(sql, _)| sql.as_str()))
            );
        }
        html.push_str("</table>");
        if !t.contract.checks.is_empty() {
            html.push_str("<p>Checks: ");
            html.push_str(
                &t.contract
                    .checks
                    .iter()
                    .map(|c| format!("<code>{}</code>", esc(&c.rule)))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            html.push_str("</p>");
        }
        html.push_str(&runs_section(history.get(&node).map(Vec::as_slice).unwrap_or_default(), true));
        html.push_str(&expectations_section(latest.get(&node)));
        let dead = summarize(lake, project, &t.name).await?;
        let _ = write!(html, "<h3>Dead letter</h3><p>{} outstanding, {} replayed</p>", dead.outstanding, dead.replayed);
        if !dead.by_reason.is_empty() {
            html.push_str("<table><tr><th>reason</th><th>column</th><th>records</th></tr>");
            for c in dead.by_reason.iter().take(10) {
                let _ = write!(
                    html,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    esc(&c.label),
                    esc(c.column.as_deref().unwrap_or("-")),
                    c.records
                );
            }
            html.push_str("</table>");
            for (reason, samples) in &dead.samples {
                let _ = write!(
                    html,
                    "<details><summary>{} — sample records</summary><pre>{}</pre></details>",
                    esc(reason),
                    esc(&samples.join("\n"))
                );
            }
        }
        html.push_str("</section>");
    }
    for m in project.gold_order.iter().filter_map(|n| project.gold.get(n)) {
        let node = format!("gold/{}", m.name);
        let table = Table::open(lake, Layer::Gold, &m.name).await?;
        let rows = table.count_rows().await?;
        let _ = write!(
            html,
            "<section class=\"table\" id=\"{id}\"><h2>gold.{name}</h2><p>{desc}</p><dl><dt>owner</dt><dd>{owner}</dd><dt>refresh</dt><dd>{refresh:?}</dd>\
             <dt>SLA</dt><dd>{sla}</dd><dt>rows</dt><dd>{rows}</dd><dt>version</dt><dd>{version}</dd><dt>reads</dt><dd>{reads}</dd></dl>\
             <h3>SQL</h3><pre>{sql}</pre>",
            id = anchor(&node),
            name = esc(&m.name),
            desc = esc(m.description.as_deref().unwrap_or("")),
            owner = esc(&m.owner),
            refresh = m.refresh,
            sla = m.sla.map_or("-".to_string(), |s| crate::quality::checks::human(s.seconds as i64)),
            version = table.version().map_or("-".into(), |v| v.to_string()),
            reads = esc(&m.refs.join(", ")),
            sql = esc(m.sql.trim()),
        );
        html.push_str(&runs_section(history.get(&node).map(Vec::as_slice).unwrap_or_default(), false));
        html.push_str(&expectations_section(latest.get(&node)));
        html.push_str("</section>");
    }
    html.push_str(SCRIPT);
    html.push_str("</body></html>\n");
    Ok(html)
}

/// Node size and spacing of the lineage drawing.
const NODE_W: f64 = 180.0;
const NODE_H: f64 = 44.0;
const GAP_X: f64 = 260.0;
const GAP_Y: f64 = 64.0;

/// Where each node of the DAG (`node → what it reads`) stands: one column per depth (bronze 0, a
/// node one past the deepest thing it reads), so every edge runs left to right, gold models that
/// read gold models included; within a column, by layer then name.
fn layout(up: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<&str, (f64, f64)> {
    fn depth<'a>(
        n: &'a str,
        up: &'a BTreeMap<String, BTreeSet<String>>,
        memo: &mut BTreeMap<&'a str, usize>,
        open: &mut BTreeSet<&'a str>,
    ) -> usize {
        if let Some(&d) = memo.get(n) {
            return d;
        }
        if !open.insert(n) {
            return 0; // a cycle (a validate error): drawn, not followed
        }
        let d = up.get(n).map_or(0, |reads| reads.iter().map(|r| depth(r, up, memo, open) + 1).max().unwrap_or(0));
        open.remove(n);
        memo.insert(n, d);
        d
    }
    let mut memo = BTreeMap::new();
    let mut columns: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for n in up.keys() {
        let d = depth(n, up, &mut memo, &mut BTreeSet::new());
        columns.entry(d).or_default().push(n.as_str());
    }
    let rank = |n: &str| ["bronze/", "silver/", "gold/"].iter().position(|l| n.starts_with(l)).unwrap_or(3);
    let mut pos = BTreeMap::new();
    for (col, nodes) in columns.iter_mut() {
        nodes.sort_by_key(|n| (rank(n), *n));
        for (row, n) in nodes.iter().enumerate() {
            pos.insert(*n, (20.0 + *col as f64 * GAP_X, 20.0 + row as f64 * GAP_Y));
        }
    }
    pos
}

/// The DAG as an SVG: one column per depth, gates as badges, edges as curves.
fn lineage(project: &Project) -> String {
    let up = project.edges();
    let pos = layout(&up);
    let (w, h) = (NODE_W, NODE_H);
    let height = pos.values().map(|p| p.1 + h + 20.0).fold(0.0, f64::max);
    let width = pos.values().map(|p| p.0 + GAP_X).fold(20.0 + GAP_X, f64::max);
    let mut svg = format!(
        "<svg id=\"lineage\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"lineage\">"
    );
    for (node, reads) in &up {
        let Some(&(x2, y2)) = pos.get(node.as_str()) else { continue };
        for r in reads {
            let Some(&(x1, y1)) = pos.get(r.as_str()) else { continue };
            let (sx, sy, ex, ey) = (x1 + w, y1 + h / 2.0, x2, y2 + h / 2.0);
            let _ = write!(
                svg,
                "<path class=\"edge\" d=\"M{sx},{sy} C{mx},{sy} {mx},{ey} {ex},{ey}\"/>",
                mx = (sx + ex) / 2.0
            );
        }
    }
    for (node, &(x, y)) in &pos {
        let (layer, name) = node.split_once('/').unwrap_or(("", node));
        let gates = match layer {
            "silver" => project.silver.get(name).map_or(0, |t| t.contract.gates.len() + t.checks.len()),
            "gold" => project.gold.get(name).map_or(0, |m| m.gates.len() + m.checks.len()),
            _ => 0,
        };
        let _ = write!(
            svg,
            "<g class=\"node {layer}\" data-node=\"{node}\"><a href=\"#{anchor}\"><rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"8\"/>\
             <text x=\"{tx}\" y=\"{ty}\">{label}</text></a>",
            anchor = anchor(node),
            tx = x + 12.0,
            ty = y + 27.0,
            label = esc(node)
        );
        if gates > 0 {
            let _ = write!(
                svg,
                "<g class=\"gate\"><circle cx=\"{cx}\" cy=\"{y}\" r=\"11\"/><text x=\"{cx}\" y=\"{ty}\" text-anchor=\"middle\">{gates}</text><title>{gates} expectation(s)</title></g>",
                cx = x + w - 6.0,
                ty = y + 4.0
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str(
        "</svg><p class=\"legend\">Numbers on nodes: expectations (quality gates) checked before publishing.</p>",
    );
    svg
}

fn runs_section(points: &[Point], silver: bool) -> String {
    let mut s = String::from("<h3>Runs</h3>");
    if points.is_empty() {
        s.push_str("<p>No run yet.</p>");
        return s;
    }
    let rows: Vec<f64> =
        points.iter().map(|p| if silver { p.read.unwrap_or(0.0) } else { p.written.unwrap_or(0.0) }).collect();
    s.push_str("<div class=\"charts\">");
    s.push_str(&chart(if silver { "records read per run" } else { "rows written per rebuild" }, &rows));
    if silver {
        let share: Vec<f64> = points
            .iter()
            .map(|p| match (p.read, p.rejected) {
                (Some(r), Some(j)) if r > 0.0 => 100.0 * j / r,
                _ => 0.0,
            })
            .collect();
        s.push_str(&chart("rejected % per run", &share));
    }
    s.push_str(&chart("duration ms", &points.iter().map(|p| p.ms.unwrap_or(0.0)).collect::<Vec<_>>()));
    s.push_str("</div><table><tr><th>run</th><th>finished</th><th>status</th><th>read</th><th>written</th><th>rejected</th><th>ms</th></tr>");
    let n = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    for p in points.iter().rev().take(10) {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.run_id),
            esc(&p.at),
            esc(&p.status),
            n(p.read),
            n(p.written),
            n(p.rejected),
            n(p.ms)
        );
    }
    s.push_str("</table>");
    s
}

fn expectations_section(results: Option<&Vec<Vec<String>>>) -> String {
    let mut s = String::from("<h3>Expectations (latest results)</h3>");
    let Some(results) = results.filter(|r| !r.is_empty()) else {
        s.push_str("<p>None evaluated yet.</p>");
        return s;
    };
    s.push_str("<table><tr><th>expectation</th><th>kind</th><th>action</th><th>outcome</th><th>failing</th><th>observed</th></tr>");
    for r in results {
        let _ = write!(
            s,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r[4]),
            esc(&r[1]),
            esc(&r[2]),
            esc(&r[3]),
            esc(&r[4]),
            esc(&r[5]),
            esc(&r[6])
        );
    }
    s.push_str("</table>");
    s
}

/// A small line chart of `values` (one point per run).
fn chart(title: &str, values: &[f64]) -> String {
    let (w, h) = (320.0, 90.0);
    let max = values.iter().copied().fold(0.0_f64, f64::max).max(1e-9);
    let step = if values.len() > 1 { (w - 20.0) / (values.len() - 1) as f64 } else { 0.0 };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", 10.0 + i as f64 * step, h - 10.0 - v / max * (h - 30.0)))
        .collect();
    let mut s = format!(
        "<figure class=\"chart\"><svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\"><polyline points=\"{}\"/>",
        points.join(" ")
    );
    for p in &points {
        let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
        let _ = write!(s, "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\"/>");
    }
    let last = values.last().copied().unwrap_or(0.0);
    let _ = write!(
        s,
        "</svg><figcaption>{} (last {last:.1}, max {max:.1})</figcaption></figure>",
        esc(title),
        max = if max < 1e-6 { 0.0 } else { max }
    );
    s
}

async fn text_rows(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    catalog::text_rows(ctx, sql, "building the report").await
}

fn anchor(node: &str) -> String {
    node.replace('/', "-")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const CSS: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:0 24px;color:#1d2330}\
header{border-bottom:1px solid #dde;margin-bottom:16px}h1{margin:16px 0 4px}h2{margin-top:32px}\
section.table{border-top:1px solid #eef;padding-top:4px}dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}\
dt{color:#667}dd{margin:0}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #dde;padding:3px 8px;text-align:left;vertical-align:top}\
pre{background:#f6f7fb;padding:8px;overflow:auto}code{background:#f6f7fb;padding:0 3px}\
#lineage .edge{fill:none;stroke:#99a;stroke-width:1.5}#lineage rect{stroke:#334;stroke-width:1}\
#lineage .bronze rect{fill:#f3e3cf}#lineage .silver rect{fill:#e6e9ef}#lineage .gold rect{fill:#f7e7a8}\
#lineage text{font-size:13px}#lineage .gate circle{fill:#2d6a4f}#lineage .gate text{fill:#fff;font-size:11px}\
.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}.chart polyline{fill:none;stroke:#3557a7;stroke-width:2}\
.chart circle{fill:#3557a7}.chart svg{background:#fafbfe;border:1px solid #eef}figcaption{color:#667;font-size:12px}\
tr.fail td{background:#fde2e1}tr.warn td{background:#fff4cf}tr.drop td{background:#e8f0fe}.legend{color:#667;font-size:12px}";

/// Counts what rendered, for readers and for the browser test.
const SCRIPT: &str = "<script>(function(){var n=document.querySelectorAll('#lineage g.node').length,\
e=document.querySelectorAll('#lineage path.edge').length,c=document.querySelectorAll('.chart polyline').length;\
document.getElementById('summary').textContent=n+' nodes, '+e+' edges, '+c+' charts';\
document.body.setAttribute('data-rendered','yes');})();</script>";

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: gold models that read gold models stand to their right; every edge runs left to
    /// right.
    #[test]
    fn lineage_columns_follow_dag_depth() {
        let up: BTreeMap<String, BTreeSet<String>> = [
            ("bronze/orders", vec![]),
            ("silver/orders", vec!["bronze/orders"]),
            ("silver/customers", vec!["bronze/orders"]),
            ("silver/vip", vec!["silver/customers"]),
            ("gold/daily", vec!["silver/orders"]),
            ("gold/weekly", vec!["gold/daily", "silver/vip"]),
        ]
        .into_iter()
        .map(|(n, r)| (n.to_string(), r.into_iter().map(String::from).collect()))
        .collect();
        let pos = layout(&up);
        for (node, reads) in &up {
            for r in reads {
                assert!(pos[r.as_str()].0 < pos[node.as_str()].0, "{r} → {node}");
            }
        }
        assert_eq!(pos["gold/weekly"].0, 20.0 + 3.0 * GAP_X);
        assert_eq!(pos["silver/orders"].0, pos["silver/customers"].0, "same depth, same column");
        assert!(pos["silver/vip"].0 > pos["silver/customers"].0, "a silver table reading silver stands right");
    }
}
