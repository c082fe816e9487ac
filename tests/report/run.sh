#!/usr/bin/env bash
# The pipeline report in a real browser: headless Chromium (Debian's `chromium` package, installed
# here if missing) loads `medallion docs` output from disk, runs its script, and the DOM must show
# the lineage graph and the charts; a screenshot must render.
# Usage: tests/report/run.sh PATH/TO/medallion [SCREENSHOT.png]
set -euo pipefail
bin=$(realpath "$1")
shot="${2:-}"
if ! command -v chromium >/dev/null 2>&1; then
  echo "report: installing chromium (Debian package)" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export MEDALLION_NOW=2024-03-04T06:00:00Z
"$bin" init "$work/demo" >/dev/null 2>&1
"$bin" -q run --project "$work/demo" >/dev/null
# Two more days of new orders (ids shifted), so the charts have a history.
for day in 05 06; do
  head -n 400 "$work/demo/landing/orders-2024-03-02.ndjson" | sed "s/\"order_id\": /\"order_id\": 7${day}/" > "$work/more-$day.ndjson"
  MEDALLION_NOW="2024-03-${day}T06:00:00Z" "$bin" -q ingest orders "$work/more-$day.ndjson" --project "$work/demo" >/dev/null
  MEDALLION_NOW="2024-03-${day}T06:00:00Z" "$bin" -q run --project "$work/demo" >/dev/null
done
"$bin" docs --project "$work/demo" --out "$work/site" 2>/dev/null
browser=(chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,2600)
dom=$("${browser[@]}" --dump-dom "file://$work/site/index.html" 2>/dev/null)
fail=0
check() { if grep -q "$1" <<<"$dom"; then echo "ok   $2"; else echo "FAIL $2 (no \`$1\` in the rendered DOM)"; fail=1; fi; }
check 'data-rendered="yes"' "the report's script ran"
check 'id="summary">6 nodes, 5 edges, [1-9][0-9]* charts' "lineage: 6 nodes, 5 edges; charts drawn"
check 'data-node="gold/revenue_by_tier"' "gold models in the lineage graph"
check '<h2>silver.orders</h2>' "a section per table"
check 'revenue_reconciles' "expectation results"
check 'sample records' "rejection reasons with sample records"
out="${shot:-$work/shot.png}"
"${browser[@]}" --screenshot="$out" "file://$work/site/index.html" >/dev/null 2>&1
size=$(stat -c %s "$out")
if [ "$size" -gt 20000 ]; then echo "ok   screenshot rendered ($size bytes)"; else echo "FAIL screenshot too small ($size bytes)"; fail=1; fi
exit $fail
