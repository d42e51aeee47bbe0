#!/usr/bin/env bash
# Crash test: kill -9 the server during sustained ingestion, restart it on the same data, and check
# that every acknowledged event is stored exactly once.
#
#   scripts/crash-test.sh [path/to/crossline] [seconds-before-kill]
set -euo pipefail

BIN=${1:-target/release/crossline}
KILL_AFTER=${2:-6}
WORK=$(mktemp -d -t crossline-crash-XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
export CROSSLINE_ADMIN_TOKEN="crash-test-operator-token-$RANDOM$RANDOM"
unset CROSSLINE_DATABASE_URL CROSSLINE_NATS_URL
SERVER=""
cleanup() {
    [ -n "$SERVER" ] && kill -9 "$SERVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

start_server() {
    CROSSLINE_LOG_LEVEL=warn "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >>"$WORK/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 100); do
        curl -sf "$URL/healthz" >/dev/null && return 0
        sleep 0.1
    done
    echo "crash test: the server did not become healthy" >&2
    cat "$WORK/server.log" >&2
    exit 1
}

start_server
CREATED=$(curl -sf -X POST "$URL/api/v1/workspaces" -H "Authorization: Bearer $CROSSLINE_ADMIN_TOKEN" \
    -H 'content-type: application/json' -d '{"name":"crash"}')
WRITE_KEY=$(echo "$CREATED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["write_key"])')
WORKSPACE=$(echo "$CREATED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

"$BIN" bench ingest --url "$URL" --write-key "$WRITE_KEY" --clients 4 --duration 60 \
    --acked-log "$WORK/acked.txt" >"$WORK/bench.log" 2>&1 &
LOAD=$!
sleep "$KILL_AFTER"
kill -9 "$SERVER"
SERVER=""
echo "crash test: killed the server with SIGKILL after ${KILL_AFTER}s of load"
sleep 0.5
kill "$LOAD" 2>/dev/null || true
wait "$LOAD" 2>/dev/null || true

start_server
# Replaying acknowledged events after the restart must not store them twice.
python3 - "$WORK/acked.txt" "$URL" "$WRITE_KEY" <<'PY'
import json, sys, urllib.request, base64
ids = [line.strip() for line in open(sys.argv[1]) if line.strip().startswith("bench-")][:200]
body = json.dumps({"batch": [{"type": "track", "event": "Replayed", "userId": "replay", "messageId": i} for i in ids]}).encode()
request = urllib.request.Request(sys.argv[2] + "/v1/batch", data=body, headers={
    "content-type": "application/json",
    "authorization": "Basic " + base64.b64encode((sys.argv[3] + ":").encode()).decode()})
assert urllib.request.urlopen(request).status == 200
PY
kill -TERM "$SERVER"
wait "$SERVER" || { echo "crash test: the restarted server did not exit cleanly on SIGTERM" >&2; exit 1; }
SERVER=""

python3 - "$WORK/data/crossline.db" "$WORK/acked.txt" "$WORKSPACE" <<'PY'
import sqlite3, sys
db, acked_path, workspace = sys.argv[1:]
# A line cut short by the kill is not an acknowledgement; every complete one is.
acked = [line.strip() for line in open(acked_path) if line.endswith("\n") and line.startswith("bench-")]
conn = sqlite3.connect(db)
counts = dict(conn.execute(
    "SELECT message_id, count(*) FROM events WHERE workspace_id = ? AND kind != 'merge' GROUP BY message_id", (workspace,)))
missing = [i for i in acked if counts.get(i, 0) == 0]
doubled = [i for i, n in counts.items() if n != 1]
print(f"crash test: {len(acked)} acknowledged events, {len(counts)} stored, "
      f"{len(missing)} acknowledged but missing, {len(doubled)} stored more than once")
if not acked:
    sys.exit("crash test: no event was acknowledged before the kill; raise the delay")
# The timeline table is complete up to its watermark (later events are in the tail the server
# rebuilds at start) and names no event that is gone or belongs to someone else.
# Entries name `prf_` profiles by the 16 bytes of their UUID (as `ProfileKey` in src/sqlite/timeline.rs).
def timeline_key(profile_id):
    hex_part = profile_id[4:]
    if profile_id.startswith("prf_") and len(hex_part) == 32 and all(c in "0123456789abcdef" for c in hex_part):
        return bytes.fromhex(hex_part)
    return profile_id
conn.create_function("timeline_key", 1, timeline_key, deterministic=True)
owner = "(CASE typeof(t.profile_id) WHEN 'blob' THEN 'prf_' || lower(hex(t.profile_id)) ELSE t.profile_id END)"
(unindexed,) = conn.execute("""SELECT count(*) FROM events e WHERE e.seq <= (SELECT watermark FROM timeline_state)
    AND NOT EXISTS (SELECT 1 FROM timeline t WHERE t.profile_id = timeline_key(e.profile_id)
        AND t.timestamp = e.timestamp AND t.seq = e.seq)""").fetchone()
(dangling,) = conn.execute(f"""SELECT count(*) FROM timeline t
    WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = t.seq AND e.profile_id = {owner})""").fetchone()
print(f"crash test: timeline table: {unindexed} events up to the watermark missing, {dangling} entries dangling")
sys.exit(1 if missing or doubled or unindexed or dangling else 0)
PY
