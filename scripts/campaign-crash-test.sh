#!/usr/bin/env bash
# Crash test of a campaign: a real `crossline serve` sends a campaign to Postfix's smtp-sink, is
# killed with SIGKILL mid-campaign, restarted on the same data, and finishes it. Every recipient
# must get the message (0 lost); a repeat is allowed only for a message whose send was under way at
# the kill, and it must carry the same Message-ID. Prints the counts.
#
#   scripts/campaign-crash-test.sh [path/to/crossline] [recipients]
set -euo pipefail

BIN=${1:-target/release/crossline}
RECIPIENTS=${2:-5000}
MODE=${3:-sqlite}
WORK=$(mktemp -d -t crossline-campaign-crash-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
SMTP_PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
export CROSSLINE_ADMIN_TOKEN="campaign-crash-operator-token-$RANDOM$RANDOM"
export CROSSLINE_ALLOW_PRIVATE_EGRESS=true
unset CROSSLINE_DATABASE_URL CROSSLINE_NATS_URL
SERVER=""
OTHER=""
SINK=""
DATABASE=""
if [ "$MODE" = postgres ]; then
    PG=${CROSSLINE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
    DATABASE="crossline_campaign_crash_$$"
    psql "$PG" -qc "CREATE DATABASE $DATABASE" >/dev/null
    export CROSSLINE_DATABASE_URL="${PG%/*}/$DATABASE"
    export CROSSLINE_NATS_URL=${CROSSLINE_TEST_NATS_URL:-nats://127.0.0.1:4222}
    OTHER_PORT=$(free_port)
fi
cleanup() {
    [ -n "$SERVER" ] && kill -9 "$SERVER" 2>/dev/null || true
    [ -n "$OTHER" ] && kill -9 "$OTHER" 2>/dev/null || true
    [ -n "$SINK" ] && kill "$SINK" 2>/dev/null || true
    [ -n "$DATABASE" ] && sleep 0.5 && psql "$PG" -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null 2>&1 || true
    [ -n "${KEEP_LOGS:-}" ] && cp "$WORK"/*.log "$KEEP_LOGS"/ 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# A real SMTP server: Postfix's smtp-sink, writing every message (envelope and content) to a file.
mkdir -p "$WORK/mail"
/usr/sbin/smtp-sink -u "$(id -un)" -d "$WORK/mail/%Y/" "127.0.0.1:$SMTP_PORT" 256 &
SINK=$!

start_server() {
    CROSSLINE_LOG_LEVEL=warn "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >>"$WORK/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 100); do
        curl -sf "$URL/healthz" >/dev/null && return 0
        sleep 0.1
    done
    echo "campaign crash test: the server did not become healthy" >&2
    cat "$WORK/server.log" >&2
    exit 1
}
api() { curl -sf -X "$1" "$URL$2" -H "Authorization: Bearer $API_KEY" -H 'content-type: application/json' -d "$3"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }

start_server
if [ "$MODE" = postgres ]; then
    # The second node: same database and bus, its own port and data directory.
    CROSSLINE_LOG_LEVEL=warn "$BIN" serve --listen "127.0.0.1:$OTHER_PORT" --data-dir "$WORK/other" >>"$WORK/other.log" 2>&1 &
    OTHER=$!
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$OTHER_PORT/healthz" >/dev/null && break
        sleep 0.1
    done
fi
CREATED=$(curl -sf -X POST "$URL/api/v1/workspaces" -H "Authorization: Bearer $CROSSLINE_ADMIN_TOKEN" \
    -H 'content-type: application/json' -d '{"name":"campaign-crash"}')
WRITE_KEY=$(echo "$CREATED" | field write_key)
API_KEY=$(echo "$CREATED" | field api_key)
api PUT /api/v1/channels/smtp "{\"host\": \"127.0.0.1\", \"port\": $SMTP_PORT, \"tls\": \"none\", \"from\": \"Crash <crash@example.com>\", \"pool_size\": 8}" >/dev/null
python3 - "$URL" "$WRITE_KEY" "$RECIPIENTS" <<'PY'
import json, sys, urllib.request, base64
url, key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
for start in range(0, count, 500):
    batch = [{"type": "identify", "userId": f"r{i}", "messageId": f"r{i}",
              "traits": {"plan": "pro", "first_name": f"P{i}", "email": f"person{i}@example.com"}}
             for i in range(start, min(start + 500, count))]
    request = urllib.request.Request(f"{url}/v1/batch", data=json.dumps({"batch": batch}).encode(),
                                     headers={"authorization": auth, "content-type": "application/json"})
    urllib.request.urlopen(request).read()
PY
SEGMENT=$(api POST /api/v1/segments '{"name": "All", "filter": {"trait": "plan", "op": "eq", "value": "pro"}}' | field id)
TEMPLATE=$(api POST /api/v1/templates '{"name": "Crash", "channel": "email", "subject": "Hi {{ profile.traits.first_name }}", "body": "<p>Hello {{ profile.traits.first_name }}</p>"}' | field id)
CAMPAIGN=$(api POST /api/v1/campaigns "{\"name\": \"Crash\", \"segment_id\": \"$SEGMENT\", \"channel\": \"email\", \"template_id\": \"$TEMPLATE\", \"schedule\": \"now\"}" | field id)

# Kill it once a tenth of the messages are out.
for _ in $(seq 1 600); do
    SENT=$(find "$WORK/mail" -type f | wc -l)
    [ "$SENT" -ge $((RECIPIENTS / 10)) ] && break
    sleep 0.05
done
kill -9 "$SERVER"
SERVER=""
AT_KILL=$(find "$WORK/mail" -type f | wc -l)
echo "campaign crash test ($MODE): killed a server with SIGKILL after $AT_KILL of $RECIPIENTS messages"

if [ "$MODE" = postgres ]; then
    # Not restarted: the other node finishes, talking to the same API.
    SERVER=$OTHER
    OTHER=""
    URL="http://127.0.0.1:$OTHER_PORT"
else
    start_server
fi
for _ in $(seq 1 1200); do
    STATUS=$(api GET "/api/v1/campaigns/$CAMPAIGN" "" 2>/dev/null | field status || echo unknown)
    [ "$STATUS" = completed ] && break
    sleep 0.25
done
python3 - "$WORK/mail" "$RECIPIENTS" "$STATUS" <<'PY'
import collections, pathlib, sys
root, count, status = sys.argv[1], int(sys.argv[2]), sys.argv[3]
by_recipient = collections.defaultdict(list)
for path in pathlib.Path(root).rglob("*"):
    if not path.is_file():
        continue
    headers = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line:
            break
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    for address in headers.get("x-rcpt-args", "").split():
        by_recipient[address.strip("<>")].append(headers.get("message-id", ""))
expected = {f"person{i}@example.com" for i in range(count)}
missing = expected - set(by_recipient)
repeated = {address: ids for address, ids in by_recipient.items() if len(ids) > 1}
different = [address for address, ids in repeated.items() if len(set(ids)) > 1]
print(f"campaign crash test: campaign {status}; {count} recipients, {len(missing)} never messaged, "
      f"{len(repeated)} messaged twice (all with the same Message-ID: {not different}), {sum(map(len, by_recipient.values()))} messages in all")
sys.exit(1 if missing or different or status != "completed" else 0)
PY
kill -TERM "$SERVER"
wait "$SERVER" || { echo "campaign crash test: the surviving server did not exit cleanly on SIGTERM" >&2; exit 1; }
SERVER=""
