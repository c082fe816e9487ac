#!/usr/bin/env bash
# OpenLineage: medallion's run events validate against the OpenLineage spec's JSON schemas (the
# core RunEvent schema and every facet schema used), both from the `[lineage] file` transport and
# from the HTTP transport (`OPENLINEAGE_URL`, a receiver that answers the first POST with a 503 so
# the retry is exercised), for a clean run and for a run with a failing node.
#
# The schemas: the OpenLineage spec files (tag 1.50.0) as shipped inside the `datafusion-openlineage`
# 0.0.12 crate package on crates.io (tests/schemas/openlineage/), fetched from cargo's download host,
# checked against a pinned SHA-256 and cached outside the clone.
# Usage: tests/lineage/run.sh PATH/TO/medallion
set -euo pipefail
bin=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="${MEDALLION_CACHE:-$HOME/.cache/medallion-ci}"
gen="$root/../shared/bench/gen_orders.py"

crate=datafusion-openlineage
version=0.0.12
sha=c3174cdfb83e6ada02b64b2684f696ca382886cae5ce98d12ec802bbb1392129
schemas="$cache/openlineage-spec-$crate-$version"
if [ ! -f "$schemas/OpenLineage.json" ]; then
  echo "lineage: fetching the OpenLineage schemas ($crate $version from crates.io)" >&2
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  if ! curl -sSfL --retry 3 -o "$tmp/pkg.crate" "https://static.crates.io/crates/$crate/$crate-$version.crate"; then
    # Through cargo's own client instead: `cargo info` downloads the package into cargo's cache.
    (cd "$tmp" && cargo info --quiet "$crate@$version" >/dev/null)
    cp "$(find "${CARGO_HOME:-$HOME/.cargo}/registry/cache" -name "$crate-$version.crate" | head -1)" "$tmp/pkg.crate"
  fi
  echo "$sha  $tmp/pkg.crate" | sha256sum -c --quiet
  tar xzf "$tmp/pkg.crate" -C "$tmp" "$crate-$version/tests/schemas/openlineage"
  rm -rf "$schemas"
  mv "$tmp/$crate-$version/tests/schemas/openlineage" "$schemas"
  rm -rf "$tmp"
fi

source "$root/tests/venv.sh"

work=$(mktemp -d)
receiver_pid=
cleanup() { [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
python3 "$gen" --rows 20000 --batches 3 --seed 7 --out "$work/lake1" >/dev/null
cp -r "$work/lake1" "$work/lake2"
cp -r "$root/examples/orders" "$work/project"
rm -rf "$work/project/lake"
printf '\n[lineage]\nnamespace = "lineage-test"\nfile = "lineage/events.jsonl"\n' >> "$work/project/medallion.toml"

# 1. The file transport, a clean run.
"$bin" -q run --project "$work/project" --lake "$work/lake1" --format json > "$work/run1.jsonl"

# 2. The HTTP transport (configured from the environment; the project's file sink is turned off by
#    pointing at a project without [lineage]), with a failing gold model, started by an outer run
#    (OPENLINEAGE_PARENT_ID): the run's parent, and every node's root.
cp -r "$root/examples/orders" "$work/plain"
rm -rf "$work/plain/lake"
"$venv/bin/python" "$root/tests/lineage/receiver.py" "$work/posted.jsonl" "$work/port" &
receiver_pid=$!
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")
set +e
# Started by an outer run (an Airflow task, as its `lineage_parent_id` macro names it).
OPENLINEAGE_PARENT_ID="airflow/medallion_orders.gold__daily_revenue/0195f2a4-7d1b-7c3e-9a8b-2f6c1d0e4b5a" \
OPENLINEAGE_URL="http://127.0.0.1:$port" OPENLINEAGE_API_KEY='t0ken$' MEDALLION_FAULT_AT=gold/daily_revenue:write:9 \
  "$bin" -q run --project "$work/plain" --lake "$work/lake2" --retries 0 --format json > "$work/run2.jsonl"
rc=$?
set -e
if [ "$rc" -ne 1 ]; then
  echo "lineage: the run with a failing model exited $rc, expected 1" >&2
  exit 1
fi

"$venv/bin/python" "$root/tests/lineage/check_lineage.py" "$schemas" \
  "$work/project/lineage/events.jsonl" "$work/run1.jsonl" \
  "$work/posted.jsonl" "$work/run2.jsonl"
