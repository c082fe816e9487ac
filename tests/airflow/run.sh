#!/usr/bin/env bash
# The pip package and a real Airflow run (issue 19, items 6 and 7).
#
# 1. maturin (from PyPI) builds the `medallion` wheel from pyproject.toml; here with the dev
#    profile, so it reuses the test build (a dist wheel is `maturin build --release`). pip installs
#    it into a fresh venv, where `medallion --version`, `init` and `run` work.
# 2. Apache Airflow 3 (PyPI; SQLite metadata DB; no scheduler, webserver or other service) runs
#    the DAG `medallion airflow-dag` writes for the example project, with the pip-installed
#    binary, by `airflow dags test`: every task succeeds, and every silver, dead-letter and gold
#    table equals a plain `medallion run` of the same files at the same pinned time.
#
# Usage: tests/airflow/run.sh [path/to/medallion]   (the path only says where the test build is)
# Airflow's venv: $MEDALLION_AIRFLOW_VENV (default ~/.cache/medallion-airflow-venv).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/../venv.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

# 1. The wheel, installed into a fresh venv.
[ -x "$venv/bin/maturin" ] || "$venv/bin/pip" install --quiet maturin==1.9.6
(cd "$root" && "$venv/bin/maturin" build --quiet --profile dev --out "$work/wheels") 2>&1 | grep -v "^ *Downloaded " >&2 || true
wheel=$(ls "$work"/wheels/medallion-*.whl)
echo "wheel: $(basename "$wheel") ($(( $(stat -c %s "$wheel") >> 20 )) MiB)"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$wheel"
medallion="$work/venv/bin/medallion"
"$medallion" --version | grep -q "^medallion $(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)$"
(cd "$work" && "$medallion" init smoke >/dev/null && cd smoke && "$medallion" -q run && "$medallion" sql "select count(*) from gold.daily_revenue" >/dev/null)
echo "pip install of the wheel in a fresh venv: a working medallion"

# 2. Airflow runs the exported DAG.
af="${MEDALLION_AIRFLOW_VENV:-$HOME/.cache/medallion-airflow-venv}"
[ -x "$af/bin/python" ] || python3 -m venv "$af"
if ! "$af/bin/python" -c "import airflow, sys; sys.exit(airflow.__version__ != '3.3.2')" 2>/dev/null; then
  echo "tests: installing Apache Airflow 3.3.2 into $af" >&2
  "$af/bin/pip" install --quiet "apache-airflow==3.3.2"
fi
export MEDALLION_NOW=2026-12-01T06:00:00Z
(cd "$work" && "$medallion" init by_airflow >/dev/null && cp -r by_airflow plain)
export AIRFLOW_HOME="$work/airflow" AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__UNIT_TEST_MODE=False
mkdir -p "$AIRFLOW_HOME/dags"
"$medallion" airflow-dag -p "$work/by_airflow" --command "$medallion" --out "$AIRFLOW_HOME/dags/medallion_orders.py"
"$af/bin/airflow" db migrate >"$work/migrate.log" 2>&1 || { cat "$work/migrate.log"; exit 1; }
if ! "$af/bin/airflow" dags test medallion_orders 2026-12-01 >"$work/dag.log" 2>&1; then
  cat "$work/dag.log"; exit 1
fi
tasks=$(grep -c "= BashOperator(" "$AIRFLOW_HOME/dags/medallion_orders.py")
succeeded=$(grep -c "new_state=success" "$work/dag.log" || true)
grep -q "DagRun Finished: dag_id=medallion_orders.*state=success" "$work/dag.log" \
  && [ "$succeeded" -eq "$tasks" ] || { grep -iE "error|fail" "$work/dag.log" | head -40; echo "$succeeded of $tasks tasks succeeded" >&2; exit 1; }
echo "airflow dags test: $tasks of $tasks tasks succeeded ($("$af/bin/airflow" version))"
(cd "$work/plain" && "$medallion" -q run)
"$venv/bin/python" "$here/compare.py" "$work/by_airflow/lake" "$work/plain/lake"
echo "airflow: ok in $(( $(date +%s) - start ))s"
