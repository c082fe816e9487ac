#!/usr/bin/env bash
# The pip package and a real Airflow run (issue 19, items 6 and 7).
#
# 1. maturin (from PyPI) builds the `medallion` wheel from pyproject.toml; here with the dev
#    profile, so it reuses the test build (a dist wheel is `maturin build --release`). pip installs
#    it into a fresh venv, where `medallion --version`, `init` and `run` work.
# 2. Apache Airflow 3 (PyPI; SQLite metadata DB; no scheduler, webserver or other service) runs
#    the DAG `medallion airflow-dag` writes for the example project by `airflow dags test`, twice:
#    with BashOperator tasks calling the pip-installed binary, and with the wheel's
#    MedallionRunOperator (`--operator medallion`, the wheel installed on Airflow's side). Every
#    task succeeds, and every silver, dead-letter and gold table equals a plain `medallion run` of
#    the same files at the same pinned time.
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
export AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__UNIT_TEST_MODE=False
(cd "$work" && "$medallion" init plain >/dev/null && cd plain && "$medallion" -q run)
# The wheel's package (MedallionRunOperator) on Airflow's side, as `pip install medallion` on workers.
"$af/bin/pip" install --quiet --force-reinstall --no-deps "$wheel"
dag_run() { # dag_run OPERATOR: the example project's DAG with that operator, run by Airflow
  local op=$1 p="$work/by_$1"
  (cd "$work" && "$medallion" init "by_$op" >/dev/null)
  export AIRFLOW_HOME="$work/airflow_$op"
  mkdir -p "$AIRFLOW_HOME/dags"
  local command=("--command" "$medallion")
  [ "$op" = medallion ] && command=()  # the operator finds the binary its package installed
  "$medallion" airflow-dag -p "$p" --operator "$op" "${command[@]}" --out "$AIRFLOW_HOME/dags/medallion_orders.py"
  "$af/bin/airflow" db migrate >"$work/migrate.log" 2>&1 || { cat "$work/migrate.log"; exit 1; }
  if ! "$af/bin/airflow" dags test medallion_orders 2026-12-01 >"$work/dag_$op.log" 2>&1; then
    cat "$work/dag_$op.log"; exit 1
  fi
  local tasks succeeded
  tasks=$(grep -cE "= (Bash|MedallionRun)Operator\(" "$AIRFLOW_HOME/dags/medallion_orders.py")
  succeeded=$(grep -c "new_state=success" "$work/dag_$op.log" || true)
  grep -q "DagRun Finished: dag_id=medallion_orders.*state=success" "$work/dag_$op.log" \
    && [ "$succeeded" -eq "$tasks" ] || { grep -iE "error|fail" "$work/dag_$op.log" | head -40; echo "$succeeded of $tasks tasks succeeded" >&2; exit 1; }
  echo "airflow dags test, $op operator: $tasks of $tasks tasks succeeded ($("$af/bin/airflow" version))"
  "$venv/bin/python" "$here/compare.py" "$p/lake" "$work/plain/lake"
}
dag_run bash
dag_run medallion
# The operator logs node outcomes; a failing node fails its task with the node's error.
grep -q "silver/orders: ok" "$work/dag_medallion.log" || { grep -i "silver" "$work/dag_medallion.log" | head; exit 1; }
sed -i 's/revenue > 0/revenue < 0/' "$work/by_medallion/medallion.toml"
grep -q "revenue < 0" "$work/by_medallion/medallion.toml" || { echo "the gate to break is not in the example" >&2; exit 1; }
"$medallion" airflow-dag -p "$work/by_medallion" --operator medallion --retries 0 --out "$AIRFLOW_HOME/dags/medallion_orders.py"
"$af/bin/airflow" dags test medallion_orders 2026-12-02 >"$work/dag_fail.log" 2>&1 || true
grep -q "DagRun Finished: dag_id=medallion_orders.*state=failed" "$work/dag_fail.log" \
  && grep -q "medallion run --select gold/daily_revenue failed (exit 1): gold/daily_revenue:" "$work/dag_fail.log" \
  || { grep -iE "error|fail" "$work/dag_fail.log" | head -20; echo "a failing gate did not fail its task clearly" >&2; exit 1; }
echo "a failing gold gate fails its Airflow task, naming the node and its error"
echo "airflow: ok in $(( $(date +%s) - start ))s"
