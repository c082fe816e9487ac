//! `medallion test`.

use anyhow::Result;
use medallion::quality::test::test;
use medallion::spec::Action;

use super::open;
use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::{json_line, table, thousands};

pub async fn run(g: &Global, select: &[String]) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let outcomes = test(&lake, &project, select).await?;
    let failed = outcomes.iter().any(|o| o.result.action == Action::Fail && !o.result.passed());
    if g.format == Format::Json {
        for o in &outcomes {
            json_line("expectation_result", serde_json::to_value(o)?)?;
        }
        json_line("test_summary", serde_json::json!({ "expectations": outcomes.len(), "ok": !failed }))?;
    } else {
        let mut rows = vec![vec!["expectation".to_string(), "node".into(), "action".into(), "failing".into(), "rows".into(), "result".into()]];
        for o in &outcomes {
            let r = &o.result;
            let result = match (r.passed(), r.action) {
                (true, _) => "pass",
                (false, Action::Fail) => "FAIL",
                (false, _) => "warn",
            };
            let action = format!("{:?}", r.action).to_lowercase();
            rows.push(vec![r.name.clone(), o.node.clone(), action, thousands(r.failing_rows), thousands(r.rows_checked), result.into()]);
        }
        if outcomes.is_empty() {
            println!("no expectations declared{}", if select.is_empty() { "" } else { " for the selection" });
        } else {
            print!("{}", table(&rows));
        }
        for o in outcomes.iter().filter(|o| !o.samples.is_empty()) {
            println!("\n{} on {}: sample failing rows", o.result.name, o.node);
            for s in &o.samples {
                println!("  {s}");
            }
        }
    }
    Ok(if failed { Outcome::Failed } else { Outcome::Ok })
}
