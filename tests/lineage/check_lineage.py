"""Checks medallion's OpenLineage events: each validates against the spec's RunEvent schema and each
facet against its own facet schema (at the version its _schemaURL names); runs nest and end properly;
dataset statistics agree with the run summary.

Usage: check_lineage.py SCHEMAS FILE_EVENTS RUN1_JSONL POSTED_JSONL RUN2_JSONL
"""
import json
import pathlib
import sys
import uuid
from datetime import datetime

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

schemas_dir, file_events, run1, posted, run2 = map(pathlib.Path, sys.argv[1:6])
CORE_ID = "https://openlineage.io/spec/2-0-2/OpenLineage.json"

documents = [json.loads(p.read_text()) for p in [schemas_dir / "OpenLineage.json", *sorted((schemas_dir / "facets").glob("*.json"))]]
registry = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in documents)
by_id = {d["$id"]: d for d in documents}
assert CORE_ID in by_id, "the core schema is not the one medallion targets"
run_event = Draft202012Validator({"$ref": CORE_ID + "#/$defs/RunEvent"}, registry=registry)

failures = []
checked = {"events": 0, "facets": 0}


def check(ok, message):
    if not ok:
        failures.append(message)


def facets_of(event):
    """(where, key, facet) for every facet in the event."""
    yield from (("run", k, f) for k, f in event["run"].get("facets", {}).items())
    yield from (("job", k, f) for k, f in event["job"].get("facets", {}).items())
    for side in ("inputs", "outputs"):
        for d in event.get(side, []):
            for group in ("facets", "inputFacets", "outputFacets"):
                yield from ((f"{side}:{d['name']}", k, f) for k, f in d.get(group, {}).items())


def validate(event, label):
    checked["events"] += 1
    errors = sorted(run_event.iter_errors(event), key=lambda e: list(e.path))
    for e in errors:
        failures.append(f"{label}: RunEvent schema: {'/'.join(map(str, e.path))}: {e.message}")
    check(event["schemaURL"] == CORE_ID + "#/$defs/RunEvent", f"{label}: schemaURL {event['schemaURL']}")
    try:
        uuid.UUID(event["run"]["runId"])
    except ValueError:
        failures.append(f"{label}: runId {event['run']['runId']} is not a UUID")
    check(event["eventTime"].endswith("Z"), f"{label}: eventTime {event['eventTime']} not UTC")
    datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))
    for where, key, facet in facets_of(event):
        url = facet.get("_schemaURL", "")
        base = url.split("#")[0]
        doc = by_id.get(base)
        if doc is None:
            failures.append(f"{label}: {where} facet {key}: no published schema at {url}")
            continue
        checked["facets"] += 1
        check(key in doc.get("properties", {}), f"{label}: {where} facet {key} is not the key {base} defines ({list(doc.get('properties', {}))})")
        for e in Draft202012Validator(doc, registry=registry).iter_errors({key: facet}):
            failures.append(f"{label}: {where} facet {key} ({base}): {'/'.join(map(str, e.path))}: {e.message}")


def lines(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def summary_of(path):
    return next(l for l in lines(path) if l["type"] == "summary")


def check_runs(events, namespace, pipeline, label):
    """One pipeline run around node runs: START first, one end each, parents point at the run."""
    check(events[0]["eventType"] == "START" and events[0]["job"]["name"] == pipeline, f"{label}: first event is not the run's START")
    last = events[-1]
    check(last["job"]["name"] == pipeline and last["eventType"] in ("COMPLETE", "FAIL"), f"{label}: last event is not the run's end")
    root = events[0]["run"]["runId"]
    runs = {}
    for e in events:
        check(e["job"]["namespace"] == namespace, f"{label}: namespace {e['job']['namespace']}")
        runs.setdefault(e["run"]["runId"], []).append(e)
    for run_id, evs in runs.items():
        kinds = [e["eventType"] for e in evs]
        job = evs[0]["job"]["name"]
        check(kinds[0] == "START" and len(kinds) == 2 and kinds[1] in ("COMPLETE", "FAIL"), f"{label}: {job}: events {kinds}")
        if run_id != root:
            parent = evs[0]["run"]["facets"].get("parent", {})
            check(parent.get("run", {}).get("runId") == root, f"{label}: {job}: parent is not the run")
            check(parent.get("job", {}).get("name") == pipeline, f"{label}: {job}: parent job")
            check(job.startswith(pipeline + "."), f"{label}: job name {job}")
    return {evs[0]["job"]["name"]: evs for evs in runs.values()}


def stat(event, side, name_suffix):
    for d in event[side]:
        if d["name"].endswith(name_suffix):
            facets = d.get("inputFacets" if side == "inputs" else "outputFacets", {})
            s = facets.get("inputStatistics" if side == "inputs" else "outputStatistics")
            return s and s.get("rowCount"), s and s.get("size")
    return None, None


# 1. File transport, clean run.
events = lines(file_events)
for i, e in enumerate(events):
    validate(e, f"file event {i}")
s1 = summary_of(run1)
check(s1.get("lineage", {}).get("events") == len(events) and s1["lineage"].get("failed") == 0, f"summary lineage {s1.get('lineage')} vs {len(events)} events in the file")
jobs = check_runs(events, "lineage-test", "orders", "file")
check(jobs["orders"][-1]["eventType"] == "COMPLETE", "file: the clean run did not COMPLETE")
silver = [p for p in s1["silver"] if p["table"] == "orders"]
end = jobs["orders.silver.orders"][-1]
check(end["eventType"] == "COMPLETE", "silver orders did not COMPLETE")
read, size = stat(end, "inputs", "/bronze/orders")
check(read == sum(p["read"] for p in silver) and read > 0, f"bronze input rowCount {read} vs read {sum(p['read'] for p in silver)}")
check(size == sum(p["bytes"] for p in silver), f"bronze input size {size}")
written, _ = stat(end, "outputs", "/silver/orders")
expect = sum(p["inserted"] + p["updated"] + p["deleted"] for p in silver)
check(written == expect, f"silver output rowCount {written} vs {expect}")
rejected, _ = stat(end, "outputs", "/quarantine/orders")
check(rejected == sum(p["rejected"] for p in silver) and rejected > 0, f"quarantine rowCount {rejected}")
out = next(d for d in end["outputs"] if d["name"].endswith("/silver/orders"))
check(out["namespace"] == "file" and out["name"].startswith("/"), f"local dataset naming {out['namespace']} {out['name']}")
fields = {f["name"]: f["type"] for f in out["facets"]["schema"]["fields"]}
check(fields.get("order_id") == "bigint" and fields.get("amount") == "decimal(18,2)" and fields.get("order_date") == "date", f"silver schema facet {fields}")
gold = {b["model"]: b for b in s1["gold"]}
for model, b in gold.items():
    e = jobs[f"orders.gold.{model}"]
    check(e[-1]["eventType"] == "COMPLETE", f"gold {model} did not COMPLETE")
    check("sql" in e[0]["job"]["facets"] and "SELECT" in e[0]["job"]["facets"]["sql"]["query"].upper(), f"gold {model}: no sql facet")
    rows, _ = stat(e[-1], "outputs", f"/gold/{model}")
    check(rows == b["rows"], f"gold {model} output rowCount {rows} vs {b['rows']}")
    check(any(d["name"].endswith("/silver/orders") for d in e[0]["inputs"]), f"gold {model}: silver orders not an input")

# 2. HTTP transport (from OPENLINEAGE_URL), a run whose daily_revenue fails.
posts = lines(posted)
s2 = summary_of(run2)
check(len(posts) == s2.get("lineage", {}).get("events", -1) and s2["lineage"].get("failed") == 0, f"{len(posts)} events received vs summary {s2.get('lineage')} (the 503 must be retried)")
for i, p in enumerate(posts):
    check(p["path"] == "/api/v1/lineage", f"POST path {p['path']}")
    check(p["authorization"] == "Bearer t0ken$", f"Authorization {p['authorization']}")
    check(p["content_type"] == "application/json", f"Content-Type {p['content_type']}")
    validate(p["event"], f"posted event {i}")
events2 = [p["event"] for p in posts]
jobs2 = check_runs(events2, "orders", "orders", "http")
fail = jobs2["orders.gold.daily_revenue"][-1]
check(fail["eventType"] == "FAIL" and "MEDALLION_FAULT_AT" in fail["run"]["facets"].get("errorMessage", {}).get("message", ""), "daily_revenue: no FAIL with the error message")
check(jobs2["orders.gold.revenue_by_tier"][-1]["eventType"] == "COMPLETE", "revenue_by_tier should complete")
check(jobs2["orders"][-1]["eventType"] == "FAIL", "the run with a failed node should end in FAIL")
outer = {"run": {"runId": "0195f2a4-7d1b-7c3e-9a8b-2f6c1d0e4b5a"}, "job": {"namespace": "airflow", "name": "medallion_orders.gold__daily_revenue"}}
for e in jobs2["orders"]:
    p = e["run"]["facets"].get("parent", {})
    check(p.get("run") == outer["run"] and p.get("job") == outer["job"] and p.get("root") == outer, f"the run's parent is not OPENLINEAGE_PARENT_ID: {p}")
for name, evs in jobs2.items():
    if name != "orders":
        root = evs[0]["run"]["facets"].get("parent", {}).get("root")
        check(root == outer, f"{name}: root is not the outer run: {root}")

for f in failures:
    print("FAIL", f)
print(f"lineage: {checked['events']} events and {checked['facets']} facets validated against the OpenLineage schemas; {len(failures)} problems")
sys.exit(1 if failures else 0)
