#!/usr/bin/env bash
# Continuous bronze (issue 19, item 3): pushes grouped into batches by `serve --flush-after`, and
# landing files followed by `ingest --follow`, under load, SIGTERM and kill -9.
#
#  A. 8 clients x 1,000 pushes, one batch each, then 64 clients x 50 pushes with group commit:
#     every acknowledged record in bronze exactly once; throughput, batches and serve's peak RSS
#     reported.
#  B. kill -9 of serve under grouped load, restart, the unanswered pushes sent again: every record
#     once (none lost, none twice).
#  C. SIGTERM with a group still open (30 s to go): it lands, each of the 20 waiting pushes is
#     answered 200, serve exits 0.
#  D. ingest --follow: files dropped in over time land; SIGTERM stops it (exit 0); a kill -9 while
#     a large file lands, then a restart: every record once.
#
# Usage: tests/push/run.sh [path/to/medallion]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${1:-$here/../../target/debug/medallion}")
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill -9 "$server" 2>/dev/null; rm -rf "$work"' EXIT
start=$(date +%s)
export MEDALLION_PUSH_TOKEN="push-$RANDOM$RANDOM"
mkdir -p "$work/p/landing"
cat >"$work/p/medallion.toml" <<'TOML'
[project]
name = "push"

[sources.events]

[sources.files]
paths = ["landing/*.ndjson"]
TOML
cd "$work/p"

serve() { # serve LAKE ARGS...: starts serve in the background; sets $server and $url
  local lake=$1; shift
  "$bin" --lake "$lake" serve --addr 127.0.0.1:0 "$@" 2>"$work/serve.err" &
  server=$!
  for _ in $(seq 200); do grep -q "serving metrics" "$work/serve.err" 2>/dev/null && break; sleep 0.05; done
  url="http://$(sed -n 's|.*pushes at http://\([^/]*\)/ingest.*|\1|p' "$work/serve.err")/ingest/events"
}
batches() { find "$1/bronze/$2" -name '*.ndjson.gz' 2>/dev/null | wc -l; }

# A. 8 x 1,000 pushes, a batch each; then 64 x 50 with group commit.
loaded() { # loaded LAKE CLIENTS PUSHES [serve args]: pushes, stops serve, checks, reports
  local lake=$1 clients=$2 pushes=$3; shift 3
  serve "$lake" "$@"
  python3 "$here/load.py" push "$url" "$clients" "$pushes" "$work/acked_$lake"
  local peak; peak=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
  kill -TERM "$server"; wait "$server"; server=
  python3 "$here/load.py" check "$lake" events "$work/acked_$lake" --all "${clients}x$pushes"
  echo "A: $((clients * pushes)) pushes ${*:-(a batch each)} landed as $(batches "$lake" events) batches; serve peak RSS $((peak / 1024)) MB"
}
loaded lake_a 8 1000
loaded lake_g 64 50 --flush-after 100ms

# B. kill -9 under load, then the unanswered pushes again.
serve lake_b --flush-after 100ms
python3 "$here/load.py" push "$url" 16 200 "$work/acked_b" &
load=$!
sleep 1.5
kill -9 "$server"; wait "$server" 2>/dev/null || true; server=
wait "$load"
acked=$(wc -l <"$work/acked_b")
[ "$acked" -gt 0 ] || { echo "B: killed before any push was answered" >&2; exit 1; }
[ -s "$work/acked_b.pending" ] || { echo "B: the kill came after every push was answered" >&2; exit 1; }
python3 "$here/load.py" check lake_b events "$work/acked_b"
serve lake_b --flush-after 100ms
python3 "$here/load.py" push "$url" 0 0 "$work/acked_b" --retry-unacked
kill -TERM "$server"; wait "$server"; server=
python3 "$here/load.py" check lake_b events "$work/acked_b" --all 16x200
echo "B: kill -9 after $acked acknowledged records: none lost, the rest landed once when sent again"

# C. SIGTERM lands the open group and answers its pushes.
serve lake_c --flush-after 30s
python3 "$here/load.py" push "$url" 20 1 "$work/acked_c" &
load=$!
sleep 1.5
[ "$(batches lake_c events)" -eq 0 ] || { echo "C: a group landed before SIGTERM" >&2; exit 1; }
kill -TERM "$server"; wait "$server"; server=
wait "$load"
[ ! -s "$work/acked_c.pending" ] || { echo "C: pushes left unanswered at SIGTERM" >&2; exit 1; }
python3 "$here/load.py" check lake_c events "$work/acked_c" --all 20x1
echo "C: SIGTERM landed the open group ($(batches lake_c events) batch) and answered all 20 pushes"

# D. ingest --follow.
gen() { python3 -c "import json,sys; [print(json.dumps({'id': f'{sys.argv[1]}-{i}'})) for i in range(int(sys.argv[2]))]" "$@"; }
"$bin" --lake lake_d ingest --follow --interval 200ms >"$work/follow.out" 2>"$work/follow.err" &
follow=$!
for f in 1 2 3 4 5; do gen "f$f" 1000 >"landing/f$f.ndjson.tmp"; mv "landing/f$f.ndjson.tmp" "landing/f$f.ndjson"; sleep 0.3; done
for _ in $(seq 100); do [ "$(batches lake_d files)" -ge 5 ] && break; sleep 0.1; done
kill -TERM "$follow"; wait "$follow"
grep -q "stopping: 5,000 records landed" "$work/follow.err" || { cat "$work/follow.err"; exit 1; }
gen big 300000 >landing/big.ndjson.tmp; mv landing/big.ndjson.tmp landing/big.ndjson
"$bin" --lake lake_d ingest --follow --interval 200ms >/dev/null 2>&1 &
follow=$!
sleep 0.5
kill -9 "$follow"; wait "$follow" 2>/dev/null || true
"$bin" --lake lake_d ingest --follow --interval 200ms >/dev/null 2>"$work/follow2.err" &
follow=$!
for _ in $(seq 300); do [ "$(batches lake_d files)" -ge 6 ] && break; sleep 0.1; done
sleep 0.5
kill -TERM "$follow"; wait "$follow"
python3 - "$work/p/lake_d" <<'PY'
import glob, gzip, json, sys
seen = {}
for b in glob.glob(f"{sys.argv[1]}/bronze/files/*/*.ndjson.gz"):
    for line in gzip.open(b, "rt"):
        i = json.loads(line)["id"]
        seen[i] = seen.get(i, 0) + 1
assert len(seen) == 305000 and set(seen.values()) == {1}, (len(seen), max(seen.values()))
print(f"D: follow landed {len(seen)} records, each once, across SIGTERM and kill -9")
PY
echo "push: ok in $(( $(date +%s) - start ))s"
