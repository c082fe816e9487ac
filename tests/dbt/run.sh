#!/usr/bin/env bash
# dbt compatibility (issue 17): the dbt project tests/dbt/shop (seeds, staging models with renames and
# unit conversions, marts with Jinja loops, source(), config(), a macro, var(), an incremental model,
# schema.yml tests and a singular test) is built with the real dbt-core 1.10 and dbt-duckdb 1.9 from
# PyPI, imported with `medallion import dbt`, run, and every model and seed compared row for row with
# dbt's DuckDB tables (compare.py). Then one more seed row in each of two seeds, `dbt seed` + `dbt
# build` (the incremental model adds the new order) and `medallion run` (incremental too): equal again.
# Usage: tests/dbt/run.sh PATH/TO/medallion
set -euo pipefail
bin=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)

# dbt in a venv of its own: its pins (protobuf, agate, …) stay out of the interop venv.
venv="${MEDALLION_DBT_VENV:-$HOME/.cache/medallion-dbt-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c "
import importlib.metadata as m, sys
want = {'dbt-core': '1.10.23', 'dbt-duckdb': '1.9.6', 'deltalake': '1.6.6'}
sys.exit(any(m.version(p) != v for p, v in want.items()))" 2>/dev/null; then
  echo "dbt: installing dbt-core, dbt-duckdb and deltalake into $venv" >&2
  "$venv/bin/pip" install --quiet dbt-core==1.10.23 dbt-duckdb==1.9.6 deltalake==1.6.6 pyarrow==26.0.1
fi
dbt="$venv/bin/dbt"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/tests/dbt/shop" "$work/dbt"
export DBT_DUCKDB_PATH="$work/dbt.duckdb" DBT_SEND_ANONYMOUS_USAGE_STATS=false
build_dbt() {
  # Seeds first: a source() that names a seed is not an edge dbt orders by.
  (cd "$work/dbt" && "$dbt" --quiet seed --profiles-dir . && "$dbt" --quiet build --profiles-dir .) > "$work/dbt.log" 2>&1 \
    || { cat "$work/dbt.log" >&2; echo "dbt: dbt build failed" >&2; exit 1; }
}
tables="gold:stg_customers gold:stg_orders gold:stg_payments gold:customer_orders gold:customers gold:order_payments \
silver:raw_customers silver:raw_orders silver:raw_payments"

build_dbt
"$bin" import dbt "$work/dbt" "$work/med" > "$work/import.out" 2> "$work/import.err"
grep -q "imported .* 3 source(s), 3 silver table(s), 6 gold model(s)" "$work/import.err" \
  || { cat "$work/import.err" >&2; echo "dbt: the import did not give 3 seeds and 6 models" >&2; exit 1; }
if grep -q "^warning:" "$work/import.err"; then
  cat "$work/import.err" >&2; echo "dbt: the fixture should translate whole" >&2; exit 1
fi
# The import runs with no edits.
"$bin" -q run --project "$work/med"
"$venv/bin/python" "$root/tests/dbt/compare.py" "$work/dbt.duckdb" "$work/med/lake" $tables

# One more order and its payment: dbt reloads the seeds and adds the order incrementally.
for dir in "$work/dbt" "$work/med"; do
  echo "11,5,2024-03-07,completed,2599" >> "$dir/seeds/raw_orders.csv"
  echo "11,11,credit_card,2599" >> "$dir/seeds/raw_payments.csv"
done
build_dbt
"$bin" run --project "$work/med" --format json > "$work/run2.jsonl"
"$venv/bin/python" - "$work/run2.jsonl" <<'PY'
import json, sys
summary = next(json.loads(l) for l in open(sys.argv[1]) if '"summary"' in l)
gold = {b["model"]: b for b in summary["gold"]}
b = gold["order_payments"]
assert b["rebuilt"] and b["added"] == 1 and b["rows"] == 11, f"order_payments was not built incrementally: {b}"
read = sum(s["read"] for s in summary["silver"])
assert read == 2, f"only the two appended seed rows are read, not {read}"
PY
"$venv/bin/python" "$root/tests/dbt/compare.py" "$work/dbt.duckdb" "$work/med/lake" $tables
echo "dbt: every model and seed equals dbt-duckdb's, before and after an incremental run" >&2
