#!/usr/bin/env bash
# Crash test of a campaign: a real `crossline serve` sends a campaign to a local SMTP server, is
# killed with SIGKILL mid-campaign, restarted on the same data, and finishes it. Every recipient
# must get the message (0 lost); a repeat is allowed only for a message whose send was under way at
# the kill, and it must carry the same Message-ID. Prints the counts.
#
#   scripts/campaign-crash-test.sh [path/to/crossline] [recipients]
set -euo pipefail

BIN=${1:-target/release/crossline}
RECIPIENTS=${2:-5000}
WORK=$(mktemp -d -t crossline-campaign-crash-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
SMTP_PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
export CROSSLINE_ADMIN_TOKEN="campaign-crash-operator-token-$RANDOM$RANDOM"
export CROSSLINE_ALLOW_PRIVATE_EGRESS=true
unset CROSSLINE_DATABASE_URL CROSSLINE_NATS_URL
SERVER=""
SINK=""
cleanup() {
    [ -n "$SERVER" ] && kill -9 "$SERVER" 2>/dev/null || true
    [ -n "$SINK" ] && kill "$SINK" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# A small SMTP server (RFC 5321's commands, one thread per connection) that accepts every message
# and appends "recipient Message-ID" to a file.
python3 - "$SMTP_PORT" "$WORK/mail.txt" <<'PY' &
import socketserver, sys, threading
port, path = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
out = open(path, "a", buffering=1)
class Session(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write((line + "\r\n").encode())
    def handle(self):
        self.reply("220 sink ESMTP")
        rcpt = []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            command = line.decode("utf-8", "replace").strip()
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-sink\r\n250 8BITMIME" if verb == "EHLO" else "250 sink")
            elif verb == "MAIL":
                rcpt = []
                self.reply("250 OK")
            elif verb == "RCPT":
                rcpt.append(command.split(":", 1)[1].strip().strip("<>"))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 go on")
                message_id = ""
                while True:
                    data = self.rfile.readline()
                    if not data or data in (b".\r\n", b".\n"):
                        break
                    if not message_id and data.lower().startswith(b"message-id:"):
                        message_id = data.split(b":", 1)[1].strip().decode()
                with lock:
                    for address in rcpt:
                        out.write(f"{address} {message_id}\n")
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 OK")
class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    def handle_error(self, request, address):
        pass
Server(("127.0.0.1", port), Session).serve_forever()
PY
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
    SENT=$(wc -l <"$WORK/mail.txt" 2>/dev/null || echo 0)
    [ "$SENT" -ge $((RECIPIENTS / 10)) ] && break
    sleep 0.05
done
kill -9 "$SERVER"
SERVER=""
AT_KILL=$(wc -l <"$WORK/mail.txt")
echo "campaign crash test: killed the server with SIGKILL after $AT_KILL of $RECIPIENTS messages"

start_server
for _ in $(seq 1 1200); do
    STATUS=$(api GET "/api/v1/campaigns/$CAMPAIGN" "" 2>/dev/null | field status || echo unknown)
    [ "$STATUS" = completed ] && break
    sleep 0.25
done
python3 - "$WORK/mail.txt" "$RECIPIENTS" "$STATUS" <<'PY'
import collections, sys
path, count, status = sys.argv[1], int(sys.argv[2]), sys.argv[3]
by_recipient = collections.defaultdict(list)
for line in open(path):
    if line.endswith("\n"):
        address, message_id = (line.split() + [""])[:2]
        by_recipient[address].append(message_id)
expected = {f"person{i}@example.com" for i in range(count)}
missing = expected - set(by_recipient)
repeated = {address: ids for address, ids in by_recipient.items() if len(ids) > 1}
different = [address for address, ids in repeated.items() if len(set(ids)) > 1]
print(f"campaign crash test: campaign {status}; {count} recipients, {len(missing)} never messaged, "
      f"{len(repeated)} messaged twice (all with the same Message-ID: {not different}), {sum(map(len, by_recipient.values()))} messages in all")
sys.exit(1 if missing or different or status != "completed" else 0)
PY
kill -TERM "$SERVER"
wait "$SERVER" || { echo "campaign crash test: the restarted server did not exit cleanly on SIGTERM" >&2; exit 1; }
SERVER=""
