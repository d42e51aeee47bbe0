// Web Push through the widget, in a real headless Chromium: the customer's site (its own origin)
// serves the service worker as a one-line importScripts of Crossline's /widget-sw.js, calls
// Crossline.subscribePush(), and the subscription lands on the identified customer's profile; then a
// push campaign reaches the browser: Crossline encrypts and signs, a push service made here checks the
// VAPID JWT and decrypts the message with Node's own crypto, and hands it to Chromium's service worker
// (DevTools' ServiceWorker.deliverPushMessage, the push service's part), which shows the notification.
//
// Chromium's own push service (FCM) is not reachable from the test machine, so the page's
// PushManager.subscribe answers with a subscription whose keys this script made (a browser's keys are
// never visible to a script; here they must be, to decrypt). Everything else is the real browser.
//
//   node push.mjs --url http://127.0.0.1:PORT --api-key SK --write-key WK --identity-secret SECRET [--screenshot PATH]
import { chromium } from "playwright-core";
import { createHmac, createECDH, createDecipheriv, createPublicKey, hkdfSync, randomBytes, verify } from "node:crypto";
import { createServer } from "node:http";

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, value, index, all) =>
  index % 2 === 0 ? [...pairs, [value.replace(/^--/, ""), all[index + 1]]] : pairs, []));
const fail = (message) => { console.error(`push test failed: ${message}`); process.exit(1); };
for (const required of ["url", "api-key", "write-key", "identity-secret"]) {
  if (!args[required]) fail(`--${required} is required`);
}
const b64url = (buffer) => Buffer.from(buffer).toString("base64url");
const api = async (method, path, body) => {
  const response = await fetch(`${args.url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${args["api-key"]}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status >= 300) fail(`${method} ${path} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : null;
};

// The browser's push keys (what Chromium would make and keep to itself).
const browserKey = createECDH("prime256v1");
browserKey.generateKeys();
const uaPublic = browserKey.getPublicKey();
const authSecret = randomBytes(16);

// RFC 8291 decryption, written here against Node's crypto: salt | rs | idlen | keyid | record.
const decrypt = (body) => {
  const salt = body.subarray(0, 16);
  const idLength = body[20];
  const asPublic = body.subarray(21, 21 + idLength);
  const record = body.subarray(21 + idLength);
  const secret = browserKey.computeSecret(asPublic);
  const info = Buffer.concat([Buffer.from("WebPush: info\0"), uaPublic, asPublic]);
  const ikm = Buffer.from(hkdfSync("sha256", secret, authSecret, info, 32));
  const cek = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: aes128gcm\0"), 16));
  const nonce = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: nonce\0"), 12));
  const decipher = createDecipheriv("aes-128-gcm", cek, nonce);
  decipher.setAuthTag(record.subarray(record.length - 16));
  const padded = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()]);
  let end = padded.length - 1;
  while (end > 0 && padded[end] === 0) end--;
  if (padded[end] !== 2) fail("the last record does not end with the 0x02 delimiter");
  return padded.subarray(0, end).toString("utf8");
};
// RFC 8292: `vapid t=JWT, k=KEY`, the JWT signed ES256 by the key `k` names.
const checkVapid = (header, vapidKey, audience) => {
  const match = /^vapid t=([^,]+),\s*k=(.+)$/.exec(header || "");
  if (!match) fail(`not a VAPID Authorization header: ${header}`);
  const [, token, key] = match;
  if (key !== vapidKey) fail("k= is not the workspace's VAPID key");
  const [head, claims, signature] = token.split(".");
  const point = Buffer.from(key, "base64url");
  const publicKey = createPublicKey({ key: { kty: "EC", crv: "P-256", x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33)) }, format: "jwk" });
  if (!verify("sha256", Buffer.from(`${head}.${claims}`), { key: publicKey, dsaEncoding: "ieee-p1363" }, Buffer.from(signature, "base64url"))) {
    fail("the VAPID JWT's signature does not verify");
  }
  const decoded = JSON.parse(Buffer.from(claims, "base64url").toString());
  if (decoded.aud !== audience) fail(`aud ${decoded.aud}, expected ${audience}`);
  if (!(decoded.exp > Date.now() / 1000 && decoded.exp <= Date.now() / 1000 + 86400)) fail(`exp ${decoded.exp}`);
};

// The customer's site: the page with the widget, and the service worker at its own origin.
const secret = args["identity-secret"];
const linus = { name: "Linus", email: "linus@example.com" };
const userHash = createHmac("sha256", secret).update(`u-linus\nemail:${linus.email}`).digest("hex");
const site = createServer((request, response) => {
  if (request.url === "/widget-sw.js") {
    response.writeHead(200, { "Content-Type": "text/javascript" });
    response.end(`importScripts(${JSON.stringify(`${args.url}/widget-sw.js`)});`);
    return;
  }
  response.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
  response.end(`<!doctype html><html><head><title>Example Shop</title></head><body><h1>Example Shop</h1>
<button id="notify">Tell me about sales</button>
<script>
  window.Crossline = window.Crossline || { q: [] };
  window.Crossline.q.push(["identify", "u-linus", ${JSON.stringify(linus)}, { userHash: "${userHash}" }]);
  document.addEventListener("crossline:identified", (event) => { window.__identified = event.detail.verified; });
</script>
<script src="${args.url}/widget.js" data-write-key="${args["write-key"]}" async></script>
</body></html>`);
});
await new Promise((resolve) => site.listen(0, "127.0.0.1", resolve));
const siteOrigin = `http://127.0.0.1:${site.address().port}`;

// The push service: checks and decrypts each message, then delivers it to the browser.
let deliver = null;
const received = [];
const pushService = createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", async () => {
    try {
      if (request.headers["content-encoding"] !== "aes128gcm") fail(`Content-Encoding ${request.headers["content-encoding"]}`);
      if (!(Number(request.headers.ttl) > 0)) fail(`TTL ${request.headers.ttl}`);
      checkVapid(request.headers.authorization, vapidKey, `http://${request.headers.host}`);
      const payload = decrypt(Buffer.concat(chunks));
      received.push(JSON.parse(payload));
      if (deliver) await deliver(payload);
      response.writeHead(201, { Location: `/m/${received.length}` });
      response.end();
    } catch (error) {
      fail(`the push service could not take a message: ${error.stack || error}`);
    }
  });
});
await new Promise((resolve) => pushService.listen(0, "127.0.0.1", resolve));
const endpoint = `http://127.0.0.1:${pushService.address().port}/push/linus`;
const { vapid_public_key: vapidKey } = await api("GET", "/api/v1/channels/webpush");

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  await context.grantPermissions(["notifications"], { origin: siteOrigin });
  // Chromium's push service is out of reach: subscribe() answers with the keys made above, and
  // checks it was asked with the workspace's VAPID key, as a push service binds the two.
  await context.addInitScript(({ endpoint, p256dh, auth, vapidKey }) => {
    if (!self.PushManager) return;
    let subscription = null;
    PushManager.prototype.getSubscription = async () => subscription;
    PushManager.prototype.subscribe = async (options) => {
      const given = btoa(String.fromCharCode(...new Uint8Array(options.applicationServerKey)))
        .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
      if (!options.userVisibleOnly || given !== vapidKey) throw new DOMException(`subscribed with ${given}`, "InvalidAccessError");
      subscription = { endpoint, toJSON: () => ({ endpoint, expirationTime: null, keys: { p256dh, auth } }) };
      return subscription;
    };
  }, { endpoint, p256dh: b64url(uaPublic), auth: b64url(authSecret), vapidKey });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));

  const cdp = await context.newCDPSession(page);
  let registrationId = null;
  cdp.on("ServiceWorker.workerRegistrationUpdated", ({ registrations }) => {
    for (const registration of registrations) {
      if (registration.scopeURL.startsWith(siteOrigin) && !registration.isDeleted) registrationId = registration.registrationId;
    }
  });
  await cdp.send("ServiceWorker.enable");
  deliver = async (data) => {
    if (!registrationId) fail("no service worker registration to deliver to");
    await cdp.send("ServiceWorker.deliverPushMessage", { origin: siteOrigin, registrationId, data });
  };

  await page.goto(`${siteOrigin}/`);
  await page.waitForFunction(() => window.__identified !== undefined, null, { timeout: 15000 });
  if (!(await page.evaluate(() => window.__identified))) fail("the identify was not verified");
  const outcome = await page.evaluate(() => window.Crossline.subscribePush());
  if (!outcome || outcome.subscribed !== true) fail(`subscribePush: ${JSON.stringify(outcome)}`);
  console.log("subscribePush: the widget subscribed with the workspace's VAPID key through its service worker");

  // The subscription is on the identified customer's profile.
  const profile = await api("GET", "/api/v1/profiles/lookup?kind=user_id&value=u-linus");
  const { push_addresses: addresses } = await api("GET", `/api/v1/profiles/${profile.id}/push-subscriptions`);
  if (addresses.length !== 1 || addresses[0].value !== endpoint) fail(`push addresses: ${JSON.stringify(addresses)}`);
  console.log("the subscription is on the customer's profile");

  // A push campaign to them — whatever the time of day: the console test saved quiet hours (21:00–08:00)
  // on this workspace, which would defer a marketing send made in them.
  await api("PUT", "/api/v1/settings/messaging", { quiet_hours: null, frequency_cap: null });
  const segment = await api("POST", "/api/v1/segments", { name: "Linus", filter: { trait: "email", op: "eq", value: linus.email } });
  const template = await api("POST", "/api/v1/templates", { name: "Sale", channel: "push",
    title: "Hi {{ profile.traits.name }}", body: "Spring sale: 20% off", url: "https://shop.example/sale" });
  const campaign = await api("POST", "/api/v1/campaigns", { name: "Push sale", segment_id: segment.id, channel: "push",
    template_id: template.id, schedule: "now" });
  let stats = null;
  for (let i = 0; i < 100; i++) {
    const current = await api("GET", `/api/v1/campaigns/${campaign.id}`);
    stats = current.stats;
    if (current.status === "completed") break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (stats.sent !== 1) fail(`campaign stats: ${JSON.stringify(stats)}`);
  if (received.length !== 1 || received[0].title !== "Hi Linus" || received[0].body !== "Spring sale: 20% off"
      || received[0].url !== "https://shop.example/sale" || !String(received[0].delivery_id).startsWith("dlv_")) {
    fail(`the push service decrypted: ${JSON.stringify(received)}`);
  }
  console.log("the push service verified the VAPID JWT and decrypted the campaign's message");

  // Chromium's service worker shows it.
  let shown = [];
  for (let i = 0; i < 50 && shown.length === 0; i++) {
    shown = await page.evaluate(async () => {
      const registration = await navigator.serviceWorker.ready;
      return (await registration.getNotifications()).map((n) => ({ title: n.title, body: n.body, url: n.data && n.data.url }));
    });
    if (shown.length === 0) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (shown.length !== 1 || shown[0].title !== "Hi Linus" || shown[0].body !== "Spring sale: 20% off" || shown[0].url !== "https://shop.example/sale") {
    fail(`notifications shown: ${JSON.stringify(shown)}`);
  }
  console.log("the browser's service worker showed the notification");

  // An in-app campaign: the widget draws it on the customer's page when it next loads; a display
  // and a click are counted, and a followed message is not shown again.
  const inAppTemplate = await api("POST", "/api/v1/templates", { name: "Sale modal", channel: "in_app", layout: "modal",
    title: "Hi {{ profile.traits.name }}", body: "Spring sale <b>today</b>", background_color: "#fefce8",
    buttons: [{ text: "See the sale", action: "link", link: `${siteOrigin}/sale` }, { text: "Later" }] });
  const inApp = await api("POST", "/api/v1/campaigns", { name: "In-app sale", segment_id: segment.id, channel: "in_app",
    template_id: inAppTemplate.id, schedule: "now" });
  for (let i = 0; i < 100; i++) {
    if ((await api("GET", `/api/v1/campaigns/${inApp.id}`)).status === "completed") break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await page.goto(`${siteOrigin}/`);
  const modal = page.getByTestId("crossline-in-app");
  await modal.waitFor({ timeout: 15000 });
  if ((await modal.getAttribute("data-layout")) !== "MOBILE_FEED") fail("the in-app message is not drawn as a modal");
  const title = await page.getByTestId("crossline-in-app-title").textContent();
  const body = await page.getByTestId("crossline-in-app-body").textContent();
  if (title !== "Hi Linus" || body !== "Spring sale <b>today</b>") fail(`in-app text: ${title} / ${body}`);
  if (await page.locator("[data-testid=crossline-in-app] b").count()) fail("the in-app body was read as markup");
  if (args.screenshot) await page.screenshot({ path: args.screenshot.replace(/\.png$/, "-in-app.png") });
  await Promise.all([page.waitForURL(`${siteOrigin}/sale`), page.getByTestId("crossline-in-app-button").first().click()]);
  let inAppStats = null;
  for (let i = 0; i < 50; i++) {
    inAppStats = (await api("GET", `/api/v1/campaigns/${inApp.id}`)).stats;
    if (inAppStats.opened === 1 && inAppStats.clicked === 1) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (inAppStats.opened !== 1 || inAppStats.clicked !== 1) fail(`in-app stats: ${JSON.stringify(inAppStats)}`);
  await page.waitForTimeout(1500);
  if (await page.getByTestId("crossline-in-app").count()) fail("a followed in-app message was shown again");
  console.log("the widget drew the in-app modal; its display and click were counted; it is not shown again");
  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
} finally {
  await browser.close();
  site.close();
  pushService.close();
}
console.log("push test passed");
