#!/usr/bin/env bash
# Crash test of the scaled-out mode: two `crossline serve` nodes share PostgreSQL and NATS JetStream
# and both ingest for one workspace (`crossline bench ingest --url A --url B`, merges included).
# Mid-load, node A is killed with SIGKILL and started again; then NATS is restarted; then
# PostgreSQL is restarted. The nodes must recover without a manual step (each keeps acknowledging
# events after each restart) and every event either node acknowledged must be stored exactly once,
# with the identity graph whole (every identity on a live profile).
#
#   scripts/cluster-crash-test.sh [path/to/crossline]
#
# Restarts the machine's PostgreSQL and NATS (CI's services); run it where that is allowed.
set -euo pipefail

BIN=${1:-target/release/crossline}
PG=${CROSSLINE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
NATS=${CROSSLINE_TEST_NATS_URL:-nats://127.0.0.1:4222}
WORK=$(mktemp -d -t crossline-cluster-crash-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT_A=$(free_port)
PORT_B=$(free_port)
export CROSSLINE_ADMIN_TOKEN="cluster-crash-operator-token-$RANDOM$RANDOM"
DATABASE="crossline_cluster_crash_$$"
export CROSSLINE_DATABASE_URL="${PG%/*}/$DATABASE"
export CROSSLINE_NATS_URL="$NATS"
NODE_A=""
NODE_B=""
LOAD=""
cleanup() {
    for pid in "$NODE_A" "$NODE_B" "$LOAD"; do [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true; done
    sleep 0.5
    psql "$PG" -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null 2>&1 || true
    [ -n "${KEEP_LOGS:-}" ] && cp "$WORK"/*.log "$KEEP_LOGS"/ 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
say() { echo "cluster crash test: $*"; }

psql "$PG" -qc "CREATE DATABASE $DATABASE" >/dev/null

# start_node NAME PORT: starts a node and prints its pid once it is healthy.
start_node() {
    CROSSLINE_LOG_LEVEL=warn "$BIN" serve --listen "127.0.0.1:$2" --data-dir "$WORK/$1" >>"$WORK/$1.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 150); do
        curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && { echo "$pid"; return 0; }
        sleep 0.1
    done
    echo "cluster crash test: node $1 did not become healthy" >&2
    cat "$WORK/$1.log" >&2
    exit 1
}
acked() { [ -f "$WORK/acked.txt" ] && grep -c '^bench-' "$WORK/acked.txt" || echo 0; }
# Wait until the load has acknowledged more events than $1 (the nodes recovered), up to 30 s.
wait_for_progress() {
    for _ in $(seq 1 300); do
        [ "$(acked)" -gt "$1" ] && return 0
        sleep 0.1
    done
    say "no event was acknowledged within 30 s after $2"
    tail -20 "$WORK"/*.log >&2
    exit 1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

NODE_A=$(start_node a "$PORT_A")
NODE_B=$(start_node b "$PORT_B")
CREATED=$(curl -sf -X POST "http://127.0.0.1:$PORT_A/api/v1/workspaces" -H "Authorization: Bearer $CROSSLINE_ADMIN_TOKEN" \
    -H 'content-type: application/json' -d '{"name":"cluster-crash"}')
WRITE_KEY=$(echo "$CREATED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["write_key"])')
WORKSPACE=$(echo "$CREATED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

"$BIN" bench ingest --url "http://127.0.0.1:$PORT_A" --url "http://127.0.0.1:$PORT_B" --write-key "$WRITE_KEY" \
    --clients 3 --duration 45 --acked-log "$WORK/acked.txt" >"$WORK/bench.log" 2>&1 &
LOAD=$!

sleep 4
kill -9 "$NODE_A"
NODE_A=""
say "killed node A with SIGKILL after 4 s of load on both nodes ($(acked) events acknowledged so far)"
sleep 2
NODE_A=$(start_node a "$PORT_A")
before=$(acked)
wait_for_progress "$before" "node A restarted"
say "node A restarted (healthy again); events are acknowledged again"

sleep 2
start-stop-daemon --stop --oknodo --retry 5 --exec /usr/sbin/nats-server >/dev/null
sleep 1
start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
for _ in $(seq 1 50); do port_open 4222 && break; sleep 0.1; done
before=$(acked)
wait_for_progress "$before" "NATS restarted"
say "NATS restarted mid-load; the nodes kept acknowledging"

sleep 2
pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main restart
before=$(acked)
wait_for_progress "$before" "PostgreSQL restarted"
say "PostgreSQL restarted mid-load; the nodes reconnected and kept acknowledging"

wait "$LOAD" || true
LOAD=""
grep -E "events/s|failed" "$WORK/bench.log" | head -5 || true

python3 - "$WORK/acked.txt" "$WORKSPACE" "$CROSSLINE_DATABASE_URL" <<'PY'
import subprocess, sys
acked_path, workspace, url = sys.argv[1:]
# A line cut short by the kill is not an acknowledgement; every complete one is.
acked = [line.strip() for line in open(acked_path) if line.endswith("\n") and line.startswith("bench-")]
def query(sql):
    out = subprocess.run(["psql", url, "-AtF", "\t", "-c", sql], check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]
# Fresh statistics first: the database is minutes old, and without them the planner may choose a nested
# loop of sequential scans for the checks below.
query("ANALYZE")
counts = {row[0]: int(row[1]) for row in query(
    f"SELECT message_id, count(*) FROM events WHERE workspace_id = '{workspace}' AND kind != 'merge' GROUP BY message_id")}
missing = [i for i in acked if counts.get(i, 0) == 0]
doubled = [i for i, n in counts.items() if n != 1]
(orphans,), = query(f"""SELECT count(*) FROM identities i WHERE i.workspace_id = '{workspace}' AND NOT EXISTS
    (SELECT 1 FROM profiles p WHERE p.workspace_id = i.workspace_id AND p.id = i.profile_id AND p.merged_into IS NULL)""")
(stray,), = query(f"""SELECT count(*) FROM events e WHERE e.workspace_id = '{workspace}' AND NOT EXISTS
    (SELECT 1 FROM profiles p WHERE p.workspace_id = e.workspace_id AND p.id = e.profile_id)""")
(counted,), = query(f"SELECT coalesce(sum(count), 0) FROM event_counts WHERE workspace_id = '{workspace}'")
(stored,), = query(f"SELECT count(*) FROM events WHERE workspace_id = '{workspace}'")
print(f"cluster crash test: {len(acked)} acknowledged events, {len(counts)} stored, {len(missing)} acknowledged but "
      f"missing, {len(doubled)} stored more than once; {orphans} identities off a live profile, {stray} events on no "
      f"profile; overview counts {counted} events of {stored}")
if len(acked) < 1000:
    sys.exit("cluster crash test: too few events were acknowledged to mean anything")
sys.exit(1 if missing or doubled or int(orphans) or int(stray) or int(counted) != int(stored) else 0)
PY
