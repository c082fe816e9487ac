#!/usr/bin/env bash
# Interop: medallion runs the orders example on data from ../shared/bench/gen_orders.py, then the
# Python `deltalake` and `polars` packages read the silver, quarantine and gold tables back and
# check them against the generator's manifest and against what medallion itself reads; then the
# same data one batch per run, so silver is merged into, and the merges' rows, metrics and change
# data feed are read back (check_merges.py), and compared with a copy-on-write twin before and after
# `optimize` purges the deletion vectors (check_vectors.py).
# Last, a contract change on that lake (a nullable column added in place, then a rebuild from
# bronze), read back with time travel to before it (check_contracts.py).
# Usage: tests/interop/run.sh PATH/TO/medallion
set -euo pipefail
bin=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
gen="$root/../shared/bench/gen_orders.py"
rows="${MEDALLION_INTEROP_ROWS:-200000}"

source "$root/tests/venv.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -f "$gen" ]; then
  python3 "$gen" --rows "$rows" --batches 20 --seed 42 --out "$work/data" >/dev/null
else
  echo "interop: $gen not found (../shared beside the clone); cannot run" >&2
  exit 1
fi

"$bin" -q run --project "$root/examples/orders" --lake "$work/data" > "$work/run1.txt"
"$bin" -q run --project "$root/examples/orders" --lake "$work/data" --format json > "$work/run2.jsonl"
"$bin" show gold.daily_revenue --limit 1000000 --project "$root/examples/orders" --lake "$work/data" --format json > "$work/gold.jsonl"
"$bin" sql "SELECT count(*) AS n, count(DISTINCT order_id) AS keys, CAST(sum(amount) AS VARCHAR) AS total FROM silver.orders" \
  --project "$root/examples/orders" --lake "$work/data" --format json > "$work/silver.jsonl"

"$venv/bin/python" "$root/tests/interop/check_tables.py" "$work/data" "$work/run2.jsonl" "$work/gold.jsonl" "$work/silver.jsonl"

# One batch per run (oldest first): every run after the first merges into silver, through the
# keyed merge-on-read (deletion vectors) with the change data feed the example's incremental model
# reads; the same runs into a copy-on-write twin (issue 16) must read the same.
cp -r "$root/examples/orders" "$work/cow"
sed -i '0,/^order_by = "_ingested_at"$/s//order_by = "_ingested_at"\nmerge = "copy_on_write"/' "$work/cow/medallion.toml"
grep -q '^merge = "copy_on_write"' "$work/cow/medallion.toml"
mkdir -p "$work/merged/bronze/orders" "$work/cowlake/bronze/orders"
for day in $(ls "$work/data/bronze/orders" | sort); do
  cp -rl "$work/data/bronze/orders/$day" "$work/merged/bronze/orders/$day"
  cp -rl "$work/data/bronze/orders/$day" "$work/cowlake/bronze/orders/$day"
  "$bin" -q run --project "$root/examples/orders" --lake "$work/merged" --format json > "$work/merge-last.jsonl"
  "$bin" -q run --project "$work/cow" --lake "$work/cowlake" > /dev/null
done
cp "$work/data/manifest.json" "$work/merged/manifest.json"
"$venv/bin/python" "$root/tests/interop/check_merges.py" "$work/merged" "$work/merge-last.jsonl"
"$venv/bin/python" "$root/tests/interop/check_vectors.py" "$work/merged" "$work/cowlake" merged
"$bin" -q optimize orders --project "$root/examples/orders" --lake "$work/merged" > /dev/null
"$venv/bin/python" "$root/tests/interop/check_vectors.py" "$work/merged" "$work/cowlake" purged

# A contract change: the example with a nullable column computed from `source`.
cp -r "$root/examples/orders" "$work/changed"
sed -i 's/  { name = "source",      type = "string" },/  { name = "source",      type = "string" },\n  { name = "channel", type = "string", required = false, transform = "upper(source)" },/' \
  "$work/changed/medallion.toml"
grep -q 'name = "channel"' "$work/changed/medallion.toml"
before=$("$venv/bin/python" -c "from deltalake import DeltaTable; print(DeltaTable('$work/data/silver/orders').version())")
"$bin" -q run --project "$work/changed" --lake "$work/data" > "$work/evolve.txt"
"$venv/bin/python" "$root/tests/interop/check_contracts.py" "$work/data" evolved "$before"
"$bin" -q rebuild orders --project "$work/changed" --lake "$work/data" > "$work/rebuild.txt"
"$venv/bin/python" "$root/tests/interop/check_contracts.py" "$work/data" rebuilt "$before"
