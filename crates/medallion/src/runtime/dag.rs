//! Dependency order of models: a deterministic topological sort (BTreeMap order among equals).
//! No arrow/DataFusion imports (STYLE.md §2).

use std::collections::{BTreeMap, BTreeSet};

/// Sorts `deps` (node → nodes it reads) so each node comes after what it reads. Dependencies that
/// are not nodes themselves (silver tables) are ignored. On a cycle, returns the nodes in it.
pub fn topological_order(deps: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, Vec<String>> {
    let mut remaining: BTreeMap<&str, BTreeSet<&str>> = deps
        .iter()
        .map(|(n, d)| (n.as_str(), d.iter().map(String::as_str).filter(|x| deps.contains_key(*x)).collect()))
        .collect();
    let mut order = Vec::with_capacity(deps.len());
    loop {
        let ready: Vec<&str> = remaining.iter().filter(|(_, d)| d.is_empty()).map(|(n, _)| *n).collect();
        if ready.is_empty() {
            break;
        }
        for n in ready {
            remaining.remove(n);
            for d in remaining.values_mut() {
                d.remove(n);
            }
            order.push(n.to_string());
        }
    }
    if remaining.is_empty() {
        return Ok(order);
    }
    // What remains is on a cycle or reads one; only the former are the cycle.
    Err(remaining.keys().filter(|n| reaches(deps, n, n)).map(|s| s.to_string()).collect())
}

/// Whether `to` is reached from `from` by one dependency or more in `deps`.
fn reaches(deps: &BTreeMap<String, Vec<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut next: Vec<&str> = deps.get(from).map(|d| d.iter().map(String::as_str).collect()).unwrap_or_default();
    while let Some(n) = next.pop() {
        if n == to {
            return true;
        }
        if seen.insert(n) {
            next.extend(deps.get(n).into_iter().flatten().map(String::as_str));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges.iter().map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[test]
    fn orders_dependencies_first() {
        let d = deps(&[("c", &["b", "orders"]), ("b", &["a"]), ("a", &["orders"]), ("z", &[])]);
        assert_eq!(topological_order(&d), Ok(vec!["a".into(), "z".into(), "b".into(), "c".into()]));
    }

    #[test]
    fn reports_cycles() {
        let d = deps(&[("a", &["b"]), ("b", &["a"]), ("c", &[])]);
        assert_eq!(topological_order(&d), Err(vec!["a".into(), "b".into()]));
        // A node reading a cycle cannot be ordered either, but it is not in the cycle.
        let d = deps(&[("a", &["b"]), ("b", &["a"]), ("d", &["a"]), ("e", &["d"]), ("c", &[])]);
        assert_eq!(topological_order(&d), Err(vec!["a".into(), "b".into()]));
    }
}
