//! `medallion schedule`: a long-running process running what is due.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use medallion::orchestration::run::RunOptions;
use medallion::orchestration::select::scheduled;
use medallion::runtime::Now;
use medallion::runtime::schedule::{due, next_fire};
use medallion::storage::Lake;

use super::run::{Settings, execute};
use super::{clock, open};
use crate::Outcome;
use crate::args::Global;
use crate::sayln;

/// Last fire per item, kept in the lake so a restart knows what it missed.
const STATE: &str = "_medallion/schedule.json";

async fn load(lake: &Lake) -> Result<BTreeMap<String, Now>> {
    match lake.get(STATE).await? {
        None => Ok(BTreeMap::new()),
        Some(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("corrupt {STATE}")),
    }
}

async fn save(lake: &Lake, state: &BTreeMap<String, Now>) -> Result<()> {
    lake.put(STATE, serde_json::to_vec_pretty(state)?).await?;
    Ok(())
}

pub async fn schedule(g: &Global, once: bool, metrics: Option<String>) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    if let Some(addr) = metrics {
        super::serve::spawn(&addr, project.clone(), lake.clone()).await?;
    }
    let items = scheduled(&project)?;
    if items.is_empty() {
        bail!(
            "nothing is scheduled: give a source a `schedule` (e.g. \"@hourly\") or a gold model an hourly, daily or weekly `refresh`"
        );
    }
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut outcome = Outcome::Ok;
    loop {
        let now = clock(g)?;
        let mut state = load(&lake).await?;
        for item in &items {
            // A new item starts now: it fires at its next occurrence, not at once.
            state.entry(item.id.clone()).or_insert(now);
        }
        let work = due(&items, &state, now, project.catchup);
        if work.is_empty() && once {
            let next = next_fire(&items, now).map_or("-".into(), |t| t.to_rfc3339());
            sayln!("nothing due at {} (next: {next})", now.to_rfc3339());
        }
        for (item, fires) in work {
            let source = item.id.starts_with("source:");
            let mut ok = true;
            for fire in &fires {
                sayln!("fire {} ({}) at {}", item.id, item.expression, fire.to_rfc3339());
                // Catching up a source's missed fires: each one promotes its own date partition.
                let date = (project.catchup && source && fires.len() > 1).then(|| fire.date_naive());
                let settings = Settings {
                    full_refresh: false,
                    select: Some(item.select.clone()),
                    retries: RunOptions::default().retries,
                    date,
                    rebuild: Default::default(),
                };
                match execute(g, project.clone(), lake.clone(), settings).await {
                    Ok(Outcome::Ok) => {}
                    Ok(Outcome::Failed) => {
                        ok = false;
                        outcome = Outcome::Failed;
                    }
                    Err(e) => {
                        // e.g. the lake is locked by a manual run: try again at the next check.
                        eprintln!("error: {}: {e:#}", item.id);
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                state.insert(item.id.clone(), now);
            }
        }
        save(&lake, &state).await?;
        if once {
            return Ok(outcome);
        }
        let wait = next_fire(&items, now).map_or(std::time::Duration::from_secs(60), |next| {
            (next - chrono::Utc::now()).to_std().unwrap_or_default().min(std::time::Duration::from_secs(3600))
        });
        tokio::select! {
            _ = tokio::time::sleep(wait.max(std::time::Duration::from_millis(200))) => {}
            _ = term.recv() => { eprintln!("SIGTERM: stopping"); return Ok(outcome); }
            _ = tokio::signal::ctrl_c() => { eprintln!("interrupted: stopping"); return Ok(outcome); }
        }
    }
}
