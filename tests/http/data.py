"""Changes what tests/http/api.py serves: `data.py FILE NEW CHANGED [DELAY]` adds NEW orders and
gives CHANGED existing ones a new version (a later `updated_at`, a new amount); every version
served is appended to FILE.versions as `id updated_at amount` (what bronze must hold, each once).
Orders share an `updated_at` three at a time, so a run's last timestamp usually has several."""

import datetime
import json
import os
import random
import sys

path, new, changed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
data = json.load(open(path)) if os.path.exists(path) else {"orders": [], "clock": 0}
rng = random.Random(len(data["orders"]) * 7919 + changed)
start = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)


def stamp():
    data["clock"] += 1
    return (start + datetime.timedelta(seconds=data["clock"] // 3)).strftime("%Y-%m-%dT%H:%M:%SZ")


# Each call starts at a new second: two versions of one order never share an `updated_at`.
data["clock"] += -data["clock"] % 3
touched = []
for o in rng.sample(data["orders"], min(changed, len(data["orders"]))):
    o["updated_at"], o["amount"] = stamp(), f"{rng.randint(100, 99999) / 100:.2f}"
    touched.append(o)
first = len(data["orders"]) + 1
for i in range(first, first + new):
    o = {"id": i, "updated_at": stamp(), "amount": f"{rng.randint(100, 99999) / 100:.2f}",
         "tier": rng.choice(["gold", "silver"]), "customer": {"id": rng.randint(1, 50), "tags": ["a", "b"]}}
    data["orders"].append(o)
    touched.append(o)
data["delay"] = delay
with open(path + ".tmp", "w") as f:
    json.dump(data, f)
os.replace(path + ".tmp", path)
with open(path + ".versions", "a") as f:
    for o in touched:
        f.write(f"{o['id']} {o['updated_at']} {o['amount']}\n")
