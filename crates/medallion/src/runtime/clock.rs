//! The run clock: points in time ([`Now`], read from an injected value, never from the wall clock
//! inside a step), run ids that sort by start time, and timing helpers.

use std::time::Instant;

/// A point in time, UTC.
pub type Now = chrono::DateTime<chrono::Utc>;

/// The current time (the default clock).
pub fn now() -> Now {
    chrono::Utc::now()
}

/// A new run id: `[<kind>-]<UTC start>-<random>`, so ids sort by start time.
pub fn new_run_id(kind: Option<&str>, now: Now) -> String {
    let id = format!("{}-{}", now.format("%Y%m%dT%H%M%SZ"), &uuid::Uuid::new_v4().simple().to_string()[..8]);
    kind.map_or_else(|| id.clone(), |k| format!("{k}-{id}"))
}

/// `now` plus `i` microseconds: distinct, ordered ingest times for inputs given together.
pub fn later(now: Now, i: usize) -> Now {
    now + chrono::Duration::microseconds(i64::try_from(i).unwrap_or(i64::MAX))
}

/// Milliseconds since `t`, for timings and event latencies.
pub fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}
