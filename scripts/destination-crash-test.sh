#!/usr/bin/env bash
# Crash test of event destinations: a destination receives the events of sustained ingestion, the
# server is killed with SIGKILL mid-stream, restarted on the same data, and every event whose
# ingestion was acknowledged must reach the destination (a duplicate is allowed: it carries the same
# webhook-id, and is counted).
#
#   scripts/destination-crash-test.sh [path/to/crossline] [seconds-before-kill]
set -euo pipefail

BIN=${1:-target/release/crossline}
KILL_AFTER=${2:-4}
WORK=$(mktemp -d -t crossline-destination-crash-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
RECEIVER_PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
export CROSSLINE_ADMIN_TOKEN="destination-crash-operator-token-$RANDOM$RANDOM"
export CROSSLINE_ALLOW_PRIVATE_EGRESS=true
unset CROSSLINE_DATABASE_URL CROSSLINE_NATS_URL
SERVER=""
RECEIVER=""
cleanup() {
    [ -n "$SERVER" ] && kill -9 "$SERVER" 2>/dev/null || true
    [ -n "$RECEIVER" ] && kill "$RECEIVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The receiver: answers 200 to every POST and appends its webhook-id to a file.
python3 - "$RECEIVER_PORT" "$WORK/received.txt" <<'PY' &
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, path = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
out = open(path, "a", buffering=1)
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with lock:
            out.write(self.headers.get("webhook-id", "") + "\n")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
ThreadingHTTPServer.daemon_threads = True
# A connection cut by the kill is expected, not an error to print.
ThreadingHTTPServer.handle_error = lambda self, request, address: None
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
PY
RECEIVER=$!

start_server() {
    CROSSLINE_LOG_LEVEL=warn "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >>"$WORK/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 100); do
        curl -sf "$URL/healthz" >/dev/null && return 0
        sleep 0.1
    done
    echo "destination crash test: the server did not become healthy" >&2
    cat "$WORK/server.log" >&2
    exit 1
}

start_server
CREATED=$(curl -sf -X POST "$URL/api/v1/workspaces" -H "Authorization: Bearer $CROSSLINE_ADMIN_TOKEN" \
    -H 'content-type: application/json' -d '{"name":"destination-crash"}')
WRITE_KEY=$(echo "$CREATED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["write_key"])')
API_KEY=$(echo "$CREATED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
curl -sf -X PUT "$URL/api/v1/destinations/lake" -H "Authorization: Bearer $API_KEY" \
    -H 'content-type: application/json' -d "{\"url\": \"http://127.0.0.1:$RECEIVER_PORT/hook\"}" >/dev/null

"$BIN" bench ingest --url "$URL" --write-key "$WRITE_KEY" --clients 2 --duration 60 \
    --acked-log "$WORK/acked.txt" >"$WORK/bench.log" 2>&1 &
LOAD=$!
sleep "$KILL_AFTER"
kill -9 "$SERVER"
SERVER=""
echo "destination crash test: killed the server with SIGKILL after ${KILL_AFTER}s of load"
sleep 0.5
kill "$LOAD" 2>/dev/null || true
wait "$LOAD" 2>/dev/null || true

start_server
python3 - "$WORK/acked.txt" "$WORK/received.txt" <<'PY'
import sys, time
acked_path, received_path = sys.argv[1:]
# A line cut short by the kill is not an acknowledgement; every complete one is.
acked = {line.strip() for line in open(acked_path) if line.endswith("\n") and line.startswith("bench-")}
if not acked:
    sys.exit("destination crash test: no event was acknowledged before the kill; raise the delay")
deadline = time.time() + 240
while True:
    lines = [line.strip() for line in open(received_path) if line.endswith("\n")]
    received = set(lines)
    missing = acked - received
    if not missing or time.time() > deadline:
        break
    time.sleep(0.5)
duplicates = len(lines) - len(received)
print(f"destination crash test: {len(acked)} acknowledged events, {len(received)} distinct events received "
      f"({duplicates} received again, with their webhook-id), {len(missing)} acknowledged but never delivered")
sys.exit(1 if missing else 0)
PY
kill -TERM "$SERVER"
wait "$SERVER" || { echo "destination crash test: the restarted server did not exit cleanly on SIGTERM" >&2; exit 1; }
SERVER=""
