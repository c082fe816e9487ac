//! `medallion test`.

use anyhow::Result;
use medallion::orchestration::test::test;
use medallion::quality::gates::Outcome as GateOutcome;

use super::{clock, open};
use crate::Outcome;
use crate::args::{Format, Global};
use crate::output::{expectations, json_line, samples};
use crate::{say, sayln};

pub async fn run(g: &Global, select: &[String]) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let outcomes = test(&lake, &project, select, clock(g)?).await?;
    let failed = outcomes.iter().any(|o| o.result.outcome == GateOutcome::Fail);
    if g.format == Format::Json {
        for o in &outcomes {
            json_line("expectation_result", serde_json::to_value(o)?)?;
        }
        json_line("test_summary", serde_json::json!({ "expectations": outcomes.len(), "ok": !failed }))?;
    } else {
        let results = || outcomes.iter().map(|o| (o.node.as_str(), &o.result));
        match expectations(results()) {
            Some(t) => say!("{t}"),
            None => sayln!("no expectations declared{}", if select.is_empty() { "" } else { " for the selection" }),
        }
        say!("{}", samples(results()));
    }
    Ok(if failed { Outcome::Failed } else { Outcome::Ok })
}
