//! When scheduled work is due: cron expressions (`0 6 * * *`, `@hourly`, `@daily`…) per item,
//! the last fire of each, and a clock. Pure: no I/O, time passed in (tests inject it).
//!
//! An item never run before is due at its next occurrence (not at once). Fires missed while the
//! scheduler was down are caught up per the `catchup` setting: all of them, in order, or once.

use std::collections::{BTreeMap, BTreeSet};

use croner::Cron;

use crate::runtime::Now;

/// One scheduled unit of work.
#[derive(Debug, Clone)]
pub struct Item {
    /// `source:<name>` or `gold:<name>`.
    pub id: String,
    /// The cron expression as written.
    pub expression: String,
    /// The nodes a fire runs.
    pub select: BTreeSet<String>,
    cron: Cron,
}

impl Item {
    /// An item firing on `expression` (standard 5-field cron, or `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly`).
    pub fn new(id: &str, expression: &str, select: BTreeSet<String>) -> Result<Item, String> {
        let cron = Cron::new(expression).parse().map_err(|e| format!("invalid schedule `{expression}`: {e}"))?;
        Ok(Item { id: id.to_string(), expression: expression.to_string(), select, cron })
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: Now) -> Option<Now> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// Occurrences in `(after, until]`, oldest first, at most `limit`.
    pub fn fires_between(&self, after: Now, until: Now, limit: usize) -> Vec<Now> {
        let mut out = Vec::new();
        let mut t = after;
        while out.len() < limit {
            match self.next_after(t) {
                Some(n) if n <= until => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }
}

/// What is due now: per item, the fire times to run (one, or every missed one with `catchup`).
pub fn due(items: &[Item], last: &BTreeMap<String, Now>, now: Now, catchup: bool) -> Vec<(Item, Vec<Now>)> {
    let mut out = Vec::new();
    for item in items {
        let Some(&after) = last.get(&item.id) else { continue };
        let fires = item.fires_between(after, now, if catchup { 1000 } else { usize::MAX });
        match fires.last() {
            None => {}
            Some(&latest) if !catchup => out.push((item.clone(), vec![latest])),
            Some(_) => out.push((item.clone(), fires)),
        }
    }
    out
}

/// The next time anything fires after `now`.
pub fn next_fire(items: &[Item], now: Now) -> Option<Now> {
    items.iter().filter_map(|i| i.next_after(now)).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Now {
        s.parse().expect("time")
    }

    fn item(id: &str, expr: &str) -> Item {
        Item::new(id, expr, BTreeSet::new()).expect("valid")
    }

    #[test]
    fn next_fires_follow_the_expression() {
        let hourly = item("a", "@hourly");
        assert_eq!(hourly.next_after(at("2024-03-01T10:15:00Z")), Some(at("2024-03-01T11:00:00Z")));
        assert_eq!(hourly.next_after(at("2024-03-01T11:00:00Z")), Some(at("2024-03-01T12:00:00Z")), "strictly after");
        let six = item("b", "0 6 * * *");
        assert_eq!(six.next_after(at("2024-03-01T07:00:00Z")), Some(at("2024-03-02T06:00:00Z")));
        assert_eq!(next_fire(&[hourly, six], at("2024-03-01T05:30:00Z")), Some(at("2024-03-01T06:00:00Z")));
        assert!(Item::new("c", "every day", BTreeSet::new()).is_err());
    }

    #[test]
    fn missed_fires_are_caught_up_all_or_once() {
        let daily = item("d", "@daily");
        let last = BTreeMap::from([("d".to_string(), at("2024-03-01T00:00:00Z"))]);
        let now = at("2024-03-04T09:00:00Z");
        let all = due(std::slice::from_ref(&daily), &last, now, true);
        assert_eq!(all[0].1, vec![at("2024-03-02T00:00:00Z"), at("2024-03-03T00:00:00Z"), at("2024-03-04T00:00:00Z")]);
        let once = due(std::slice::from_ref(&daily), &last, now, false);
        assert_eq!(once[0].1, vec![at("2024-03-04T00:00:00Z")]);
        assert!(
            due(std::slice::from_ref(&daily), &last, at("2024-03-01T23:59:00Z"), true).is_empty(),
            "nothing missed yet"
        );
        assert!(due(&[daily], &BTreeMap::new(), now, true).is_empty(), "never run: waits for its next occurrence");
    }
}
