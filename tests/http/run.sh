#!/usr/bin/env bash
# HTTP API sources against a real local server (tests/http/api.py, Python's http.server): three
# runs with new and changed orders between them land every version exactly once through cursor,
# page-number and Link pagination, with 429 + Retry-After and 500s retried and the bearer token
# from the environment; then a crash right after a page landed (the fault hook) and a kill -9 in
# the middle of a slow pagination: the next run loses and duplicates nothing. Silver equals the
# API's latest state each time.
#
# Usage: tests/http/run.sh [path/to/medallion]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${1:-$here/../../target/debug/medallion}")
source "$here/../venv.sh"
work=$(mktemp -d)
api=
trap '[ -n "$api" ] && kill "$api" 2>/dev/null; rm -rf "$work"' EXIT
start=$(date +%s)

export API_TOKEN="tok-$RANDOM$RANDOM"
data="$work/data.json"
python3 "$here/data.py" "$data" 95 0
python3 "$here/api.py" "$data" "$work/port" 2>"$work/api.log" &
api=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
export API_PORT=$(cat "$work/port")

mkdir -p "$work/p"
cat >"$work/p/medallion.toml" <<'TOML'
[project]
name = "api"

[sources.by_cursor.http]
url = "http://127.0.0.1:${API_PORT}/cursor"
records = "data"
params = { limit = "25" }
headers = { Authorization = "Bearer ${API_TOKEN}" }
pagination = { style = "cursor", path = "meta.next", param = "after" }
incremental = { field = "updated_at", param = "since" }

[sources.by_page.http]
url = "http://127.0.0.1:${API_PORT}/pages"
records = "result.items"
params = { per_page = "20" }
headers = { Authorization = "Bearer ${API_TOKEN}" }
pagination = { style = "page", param = "page" }
incremental = { field = "updated_at", param = "since" }

[sources.by_link.http]
url = "http://127.0.0.1:${API_PORT}/link"
headers = { Authorization = "Bearer ${API_TOKEN}" }
pagination = { style = "link" }
incremental = { field = "updated_at", param = "since" }

[silver.orders]
source = "by_cursor"
primary_key = ["id"]
order_by = "updated_at"
columns = [
  { name = "id", type = "int64" },
  { name = "updated_at", type = "timestamp" },
  { name = "amount", type = "decimal(10,2)" },
  { name = "tier", type = "string" },
]
TOML
cd "$work/p"
"$bin" validate
check() { "$venv/bin/python" "$here/check.py" "$work/p/lake" "$data" by_cursor by_page by_link; }

"$bin" run
check
python3 "$here/data.py" "$data" 40 30
"$bin" run 2>"$work/run2.err" || { cat "$work/run2.err"; exit 1; }
grep -q "retrying" "$work/run2.err" || { echo "no 429/500 was retried" >&2; cat "$work/run2.err"; exit 1; }
check
python3 "$here/data.py" "$data" 7 5
"$bin" run
check
echo "three runs: every version landed once ($(wc -l <"$data.versions") versions)"

# A crash right after a page's batch landed (the second page), before the fetch moved past it.
python3 "$here/data.py" "$data" 60 10
if MEDALLION_FAULT_AT=bronze/by_cursor:page:abort2 "$bin" run -s by_cursor 2>/dev/null; then
  echo "the fault hook did not fire" >&2; exit 1
fi
grep -q '"pending"' lake/_medallion/http/by_cursor.json
grep -q '"kind": "token"' lake/_medallion/http/by_cursor.json || { cat lake/_medallion/http/by_cursor.json; exit 1; }
"$bin" run
check
echo "crash after a landed page: resumed, nothing twice"

# kill -9 in the middle of a slow pagination (0.15 s a request, 20 pages a source).
python3 "$here/data.py" "$data" 450 20 0.15
before=$(find lake/bronze/by_page -name '*.ndjson.gz' | wc -l)
"$bin" run -s by_page 2>"$work/killed.err" &
run=$!
for _ in $(seq 300); do
  [ "$(find lake/bronze/by_page -name '*.ndjson.gz' | wc -l)" -ge $((before + 4)) ] && break
  sleep 0.05
done
kill -9 "$run"
wait "$run" 2>/dev/null || true
after=$(find lake/bronze/by_page -name '*.ndjson.gz' | wc -l)
[ "$after" -gt "$before" ] || { echo "killed before any page landed" >&2; exit 1; }
grep -q '"pending"' lake/_medallion/http/by_page.json
echo "killed after $((after - before)) pages"
python3 "$here/data.py" "$data" 0 0 0
"$bin" run
check
grep -q '"pending": null' lake/_medallion/http/by_page.json
if grep -rq "$API_TOKEN" lake; then echo "the token reached the lake" >&2; exit 1; fi
echo "http: ok in $(( $(date +%s) - start ))s"
