#!/usr/bin/env bash
# Side by side: dlt's `rest_api` source and `kaiten-sync sync full`, one after the other, against the
# same `kaiten-sync sim` instance (no rate limit, no latency), each into a fresh SQLite database.
#
#   kaiten-bench/compare_dlt.sh [CARDS]        # default 20000
#
# dlt comes from PyPI into a virtualenv under target/dlt-bench/ (made on the first run). Its source
# pages `GET /cards` by offset (limit 100), live cards (condition=1) and archived ones (condition=2)
# as two resources, into SQLite through dlt's `sqlalchemy` destination with its defaults. Both
# tools are timed as a user runs them (wall time of the whole command, start-up included).
set -euo pipefail
cd "$(dirname "$0")/.."
cards="${1:-20000}"
work=target/dlt-bench
mkdir -p "$work"

if [ ! -x "$work/venv/bin/python" ] || ! "$work/venv/bin/python" -c "import dlt, sqlalchemy" 2>/dev/null; then
  echo "installing dlt into $work/venv"
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet "dlt[sqlalchemy]"
fi
dlt_version=$("$work/venv/bin/python" -c "import dlt; print(dlt.__version__)")

cargo build --quiet --release -p kaiten-cli
bin=target/release/kaiten-sync

port=$("$work/venv/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$bin" sim --port "$port" --cards "$cards" --rate-limit 0 --latency-ms 0 >"$work/sim.log" 2>&1 &
sim_pid=$!
trap 'kill "$sim_pid" 2>/dev/null || true' EXIT
export KAITEN_API_URL="http://127.0.0.1:$port/api/latest"
export KAITEN_API_TOKEN=sim-token
for _ in $(seq 1 600); do
  curl -sf -o /dev/null -H "Authorization: Bearer $KAITEN_API_TOKEN" "$KAITEN_API_URL/spaces" && break
  sleep 0.1
done

cat >"$work/dlt_kaiten.py" <<'PY'
"""Kaiten's cards through dlt's rest_api source into SQLite, with dlt's defaults."""
import os
import sys

import dlt
from dlt.sources.rest_api import rest_api_source


def cards(name, condition):
    return {
        "name": name,
        "endpoint": {
            "path": "cards",
            "params": {"condition": condition, "broken_api": "false"},
            "paginator": {"type": "offset", "limit": 100, "offset_param": "offset", "limit_param": "limit",
                          "total_path": None},
        },
    }


source = rest_api_source({
    "client": {
        "base_url": os.environ["KAITEN_API_URL"] + "/",
        "auth": {"type": "bearer", "token": os.environ["KAITEN_API_TOKEN"]},
    },
    "resources": [cards("cards", 1), cards("archived_cards", 2)],
})
pipeline = dlt.pipeline(
    pipeline_name="kaiten_bench",
    destination=dlt.destinations.sqlalchemy(f"sqlite:///{sys.argv[1]}"),
    dataset_name="kaiten",
    pipelines_dir=sys.argv[2],
)
info = pipeline.run(source)
rows = pipeline.last_trace.last_normalize_info.row_counts
print("dlt rows:", {k: v for k, v in rows.items() if not k.startswith("_dlt")})
PY

rm -rf "$work/dlt.db" "$work/pipelines" "$work/kaiten-sync.db"*
start=$(date +%s.%N)
"$work/venv/bin/python" "$work/dlt_kaiten.py" "$PWD/$work/dlt.db" "$PWD/$work/pipelines" >"$work/dlt.log" 2>&1 \
  || { cat "$work/dlt.log"; exit 1; }
dlt_secs=$(echo "$(date +%s.%N) - $start" | bc)
grep "dlt rows" "$work/dlt.log" || true

start=$(date +%s.%N)
"$bin" sync full --rate-limit 0 --database-url "sqlite://$PWD/$work/kaiten-sync.db" >"$work/kaiten-sync.log" 2>&1 \
  || { cat "$work/kaiten-sync.log"; exit 1; }
ks_secs=$(echo "$(date +%s.%N) - $start" | bc)
cards_stored=$(sqlite3 "$work/kaiten-sync.db" "select count(*) from cards" 2>/dev/null || echo "?")

printf 'cards in the simulator: %s (dlt %s; kaiten-sync stored %s)\n' "$cards" "$dlt_version" "$cards_stored"
printf 'dlt rest_api -> SQLite:     %6.2f s\n' "$dlt_secs"
printf 'kaiten-sync sync full:      %6.2f s\n' "$ks_secs"
printf 'kaiten-sync is %.1fx faster\n' "$(echo "$dlt_secs / $ks_secs" | bc -l)"
