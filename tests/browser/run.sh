#!/usr/bin/env bash
# The console in a real headless Chromium, against a real `crossline serve`.
#
#   tests/browser/run.sh path/to/crossline [screenshot.png]   (default: /tmp/crossline-console-360.png)
#
# Builds nothing: pass a built binary. Needs node ≥ 18, curl, Debian's chromium
# (apt-get install -y chromium) and `npm ci` in tests/browser (done here when missing).
# Starts the server on a free port with a fresh data directory, creates a workspace, sends events
# that make one customer known on web, SMS and email and then merge, runs console.mjs, and stops
# the server. The exit status is console.mjs's.
set -euo pipefail

if [[ $# -lt 1 || ! -x $1 ]]; then
  echo "usage: $0 path/to/crossline [screenshot.png]  (build it first: cargo build -p crossline)" >&2
  exit 2
fi
binary=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
screenshot=$(realpath -m "${2:-${TMPDIR:-/tmp}/crossline-console-360.png}")

if [[ ! -d $here/node_modules/playwright-core ]]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(node -e "const s = require('net').createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })")
base="http://127.0.0.1:$port"
export CROSSLINE_ADMIN_TOKEN="browser-test-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"

# The push test's push service listens on loopback.
CROSSLINE_ALLOW_PRIVATE_EGRESS=true "$binary" serve --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/server.log" 2>&1 &
server_pid=$!
if ! curl -sf --retry 40 --retry-connrefused --retry-delay 1 --retry-max-time 40 "$base/healthz" >/dev/null; then
  echo "the server did not become healthy at $base; its log:" >&2
  cat "$work/server.log" >&2
  exit 1
fi

json_field() { node -e "let s = ''; process.stdin.on('data', d => s += d).on('end', () => console.log(JSON.parse(s)['$1']))"; }

workspace=$(curl -sf -X POST "$base/api/v1/workspaces" -H "Authorization: Bearer $CROSSLINE_ADMIN_TOKEN" \
  -H 'Content-Type: application/json' -d '{"name":"browser-test","default_region":"US"}')
write_key=$(json_field write_key <<<"$workspace")
api_key=$(json_field api_key <<<"$workspace")
# A second workspace without data, for the operator's workspace list and the empty states.
curl -sf -X POST "$base/api/v1/workspaces" -H "Authorization: Bearer $CROSSLINE_ADMIN_TOKEN" \
  -H 'Content-Type: application/json' -d '{"name":"empty-demo"}' >/dev/null

send() {
  curl -sf -X POST "$base/v1/batch" -u "$write_key:" -H 'Content-Type: application/json' -d "$1" >/dev/null \
    || { echo "sending a batch failed: $1" >&2; cat "$work/server.log" >&2; exit 1; }
}
ago() { date -u -d "-$1" +%Y-%m-%dT%H:%M:%SZ; }

# Ada browses the site anonymously...
send "{\"batch\": [
  {\"type\": \"identify\", \"anonymousId\": \"web-ada\", \"timestamp\": \"$(ago '6 days')\", \"context\": {\"channel\": \"web\"},
   \"traits\": {\"email\": \"ada@example.com\", \"name\": \"Ada Lovelace\", \"plan\": \"free\", \"consent\": {\"email\": \"subscribed\"}}},
  {\"type\": \"page\", \"anonymousId\": \"web-ada\", \"name\": \"Pricing\", \"timestamp\": \"$(ago '6 days')\",
   \"properties\": {\"path\": \"/pricing\", \"title\": \"Pricing · Example\", \"url\": \"https://example.com/pricing\"}},
  {\"type\": \"track\", \"anonymousId\": \"web-ada\", \"event\": \"Trial Started\", \"timestamp\": \"$(ago '5 days')\",
   \"context\": {\"channel\": \"web\"}, \"properties\": {\"plan\": \"pro\", \"trial_days\": 14}}
]}"
# ...texts the support number from her phone (a second, separate profile)...
send "{\"batch\": [
  {\"type\": \"identify\", \"anonymousId\": \"sms-14155550132\", \"timestamp\": \"$(ago '3 days')\", \"context\": {\"channel\": \"sms\"},
   \"traits\": {\"phone\": \"+1 415 555 0132\", \"consent\": {\"sms\": \"subscribed\"}}},
  {\"type\": \"track\", \"anonymousId\": \"sms-14155550132\", \"event\": \"SMS Received\", \"timestamp\": \"$(ago '3 days')\",
   \"context\": {\"channel\": \"sms\"}, \"properties\": {\"text\": \"Is the pro plan billed monthly?\"}}
]}"
# ...and signs up with both: one identify naming the email and the phone merges the two profiles.
send "{\"batch\": [
  {\"type\": \"identify\", \"userId\": \"u-ada\", \"timestamp\": \"$(ago '2 days')\",
   \"traits\": {\"email\": \"ada@example.com\", \"phone\": \"+14155550132\", \"plan\": \"pro\", \"company\": \"Analytical Engines\"}},
  {\"type\": \"track\", \"userId\": \"u-ada\", \"event\": \"Email Opened\", \"timestamp\": \"$(ago '1 day')\",
   \"context\": {\"channel\": \"email\"}, \"properties\": {\"campaign\": \"Welcome\", \"subject\": \"Welcome to Example Pro\"}},
  {\"type\": \"track\", \"userId\": \"u-ada\", \"event\": \"SMS Delivered\", \"timestamp\": \"$(ago '2 hours')\",
   \"context\": {\"channel\": \"sms\"}, \"properties\": {\"template\": \"billing_answer\"}}
]}"
# Other visitors over the last weeks, so the overview's chart has a shape.
filler=$(node -e "
  const batch = [];
  for (let day = 0; day < 24; day++) {
    const visits = 2 + Math.round(6 + 5 * Math.sin(day / 3));
    for (let visit = 0; visit < visits; visit++) {
      const at = new Date(Date.now() - day * 86400e3 - visit * 600e3).toISOString();
      const visitor = 'visitor-' + ((day * 7 + visit) % 9);
      batch.push({ type: 'page', anonymousId: visitor, timestamp: at, properties: { path: ['/', '/pricing', '/docs'][visit % 3] } });
      if (visit % 4 === 0) batch.push({ type: 'track', anonymousId: visitor, event: 'App Opened', timestamp: at, context: { channel: 'app' } });
    }
  }
  console.log(JSON.stringify({ batch }));
")
send "$filler"

status=0
node "$here/console.mjs" --url "$base" --api-key "$api_key" --profile-email ada@example.com --screenshot "$screenshot" \
  --admin-token "$CROSSLINE_ADMIN_TOKEN" || status=$?

# The hosted web chat, answered by the example bank bot.
if [[ $status -eq 0 ]]; then
  workspace_id=$(json_field id <<<"$workspace")
  curl -sf -X PUT "$base/api/v1/bots/bank" -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json' \
    --data-binary @"$here/../../examples/bank-bot.json" >/dev/null
  curl -sf -X PUT "$base/api/v1/channels/webchat" -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json' \
    -d '{"bot": "bank"}' >/dev/null
  node "$here/chat.mjs" --url "$base" --workspace "$workspace_id" --screenshot "${screenshot%.png}-chat.png" || status=$?
fi
# The widget on another site, and the conversation moving from it to SMS and to a phone call.
if [[ $status -eq 0 ]]; then
  twilio_token="browser-test-twilio-token"
  identity_secret="browser-test-identity-secret-0123"
  curl -sf -X PUT "$base/api/v1/channels/webchat" -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json' \
    -d "{\"bot\": \"bank\", \"identity_secret\": \"$identity_secret\"}" >/dev/null \
    || { echo "configuring the web chat's identity secret failed" >&2; status=1; }
  curl -sf -X PUT "$base/api/v1/channels/twilio" -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json' \
    -d "{\"account_sid\": \"AC$(printf '0%.0s' {1..32})\", \"auth_token\": \"$twilio_token\", \"phone_number\": \"+14155550100\", \"bot\": \"bank\"}" >/dev/null \
    || { echo "configuring the twilio channel failed" >&2; status=1; }
  node "$here/widget.mjs" --url "$base" --workspace "$workspace_id" --write-key "$write_key" \
    --twilio-token "$twilio_token" --identity-secret "$identity_secret" --screenshot "${screenshot%.png}-widget.png" \
    || status=$?
fi
# Web Push through the widget: subscribePush() in Chromium, a push campaign decrypted and shown.
if [[ $status -eq 0 ]]; then
  node "$here/push.mjs" --url "$base" --api-key "$api_key" --write-key "$write_key" \
    --identity-secret "$identity_secret" --screenshot "${screenshot%.png}-push.png" || status=$?
fi
# The contact centre: a customer hands off from the widget, an agent answers from the console's inbox.
if [[ $status -eq 0 ]]; then
  node "$here/inbox.mjs" --url "$base" --workspace "$workspace_id" --write-key "$write_key" --api-key "$api_key" \
    --twilio-token "$twilio_token" --identity-secret "$identity_secret" --screenshot "${screenshot%.png}-inbox.png" \
    || status=$?
fi
if [[ $status -ne 0 ]]; then
  echo "--- server log ---" >&2
  tail -n 40 "$work/server.log" >&2
fi
exit $status
