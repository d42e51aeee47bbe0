// The contact centre end to end in a real headless Chromium: a customer who texted the bot by SMS
// opens the chat on the business's site and asks for a person; an agent signed in to the console
// (a second browser context) sees the conversation arrive without reloading, accepts it, sees the
// customer 360 and the earlier SMS turns, and replies; the customer sees the reply live.
//
//   node inbox.mjs --url http://127.0.0.1:PORT --workspace WS_ID --write-key WK --api-key KEY \
//     --twilio-token TOKEN --identity-secret SECRET [--screenshot PATH]
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { createServer } from "node:http";

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, value, index, all) =>
  index % 2 === 0 ? [...pairs, [value.replace(/^--/, ""), all[index + 1]]] : pairs, []));
const fail = (message) => { console.error(`inbox test failed: ${message}`); process.exit(1); };
for (const required of ["url", "workspace", "write-key", "api-key", "twilio-token", "identity-secret"]) {
  if (!args[required]) fail(`--${required} is required`);
}

// Lin texts the support number first (signed as Twilio signs).
const phone = "+14155550188";
let sid = 0;
const sms = async (text) => {
  const url = `${args.url}/hooks/${args.workspace}/twilio/sms`;
  const params = { MessageSid: `SM${String(++sid).padStart(30, "0")}ib`, AccountSid: "AC" + "0".repeat(32),
    From: phone, To: "+14155550100", Body: text };
  const signed = url + Object.keys(params).sort().map((name) => name + params[name]).join("");
  const signature = createHmac("sha1", args["twilio-token"]).update(signed).digest("base64");
  const response = await fetch(url, { method: "POST", body: new URLSearchParams(params).toString(),
    headers: { "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature } });
  if (response.status !== 200) fail(`the SMS webhook answered ${response.status}: ${await response.text()}`);
  return response.text();
};
const api = async (method, path, body) => {
  const response = await fetch(`${args.url}${path}`, { method, body: body && JSON.stringify(body),
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${args["api-key"]}` } });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) fail(`${method} ${path} answered ${response.status}: ${JSON.stringify(answer)}`);
  return answer;
};

const twiml = await sms("when are you open");
if (!twiml.includes("open")) fail(`the bot's SMS answer: ${twiml}`);

// An agent who has the skill the bank's card queue asks for, invited as a user with the agent role;
// and a supervisor.
const agent = await api("POST", "/api/v1/users", { name: "Grace <b>Hopper</b>", email: "grace.inbox@example.com", role: "agent", skills: ["cards"] });
const supervisor = await api("POST", "/api/v1/users", { name: "Sam", email: "sam.inbox@example.com", role: "supervisor" });
const password = "correct horse battery staple";
await api("PUT", "/api/v1/queues/vip", { skills: ["vip"] });
await api("PUT", "/api/v1/canned-replies/greet", { text: "Hello {{ profile.traits.name | default: \"there\" }}, one moment please." });

// The business's site, on its own origin; it vouches for Lin with an HMAC of her id and phone.
const lin = { name: "Lin <img src=x onerror=alert(1)>", phone };
const userHash = createHmac("sha256", args["identity-secret"]).update(`u-lin\nphone:${phone}`).digest("hex");
const site = createServer((request, response) => {
  response.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
  response.end(`<!doctype html><html><head><title>Example Bank</title></head><body><h1>Hello Lin</h1>
<script>
  window.Crossline = window.Crossline || { q: [] };
  window.Crossline.q.push(["identify", "u-lin", ${JSON.stringify(lin)}, { userHash: "${userHash}" }]);
  document.addEventListener("crossline:identified", (event) => { window.__identified = event.detail.verified; });
</script>
<script src="${args.url}/widget.js" data-write-key="${args["write-key"]}" async></script></body></html>`);
});
await new Promise((resolve) => site.listen(0, "127.0.0.1", resolve));

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const errors = [];
try {
  // The agent opens the invitation, sets a password, signs out and signs in with email and password,
  // and lands in the inbox before anyone waits.
  const desk = await browser.newContext({ viewport: { width: 1400, height: 860 } });
  const inbox = await desk.newPage();
  inbox.on("pageerror", (error) => errors.push(`inbox: ${error.message}`));
  inbox.on("dialog", (dialog) => { errors.push(`a dialog opened: ${dialog.message()}`); dialog.dismiss(); });
  await inbox.goto(agent.invite_url);
  await inbox.fill('[data-testid="invite-password"]', password);
  await inbox.fill('[data-testid="invite-confirm"]', password);
  await inbox.click('[data-testid="invite-submit"]');
  await inbox.waitForURL(`${args.url}/inbox`).catch(() => fail(`setting the password did not open the inbox: ${inbox.url()}`));
  await inbox.click('form[action="/logout"] button');
  await inbox.waitForURL(`${args.url}/login`);
  await inbox.fill('[data-testid="login-email"]', "grace.inbox@example.com");
  await inbox.fill('[data-testid="login-password"]', password);
  await inbox.click('[data-testid="login-password-submit"]');
  await inbox.waitForURL(`${args.url}/inbox`).catch(() => fail(`signing in did not open the inbox: ${inbox.url()}`));
  await inbox.waitForFunction(() => document.getElementById("inbox-live").textContent === "Live", null, { timeout: 10000 })
    .catch(() => fail("the inbox did not go live"));
  const before = await inbox.locator('[data-testid="inbox-conversation"]').count();
  // Nothing but the inbox for an agent.
  const elsewhere = await desk.request.get(`${args.url}/profiles`);
  if (elsewhere.status() !== 403) fail(`an agent opened /profiles: ${elsewhere.status()}`);

  // Lin, on the site, asks for a person.
  const shop = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  const page = await shop.newPage();
  page.on("pageerror", (error) => errors.push(`site: ${error.message}`));
  page.on("dialog", (dialog) => { errors.push(`a dialog opened: ${dialog.message()}`); dialog.dismiss(); });
  await page.goto(`http://127.0.0.1:${site.address().port}/`);
  await page.click('[data-testid="crossline-launcher"]');
  await page.waitForFunction(() => window.__identified === true, null, { timeout: 10000 })
    .catch(() => fail("the site's identify was not verified"));
  const chat = page.frameLocator('[data-testid="crossline-frame"]');
  await chat.locator('[data-testid="chat-input"]').fill("I lost my card, can I talk to a person?");
  await chat.locator('[data-testid="chat-send"]').click();

  // It arrives in the inbox without a reload.
  await inbox.waitForFunction((count) => document.querySelectorAll('[data-testid="inbox-conversation"]').length > count,
    before, { timeout: 10000 }).catch(() => fail("the handed-off conversation did not appear live"));
  const arrived = inbox.locator('[data-testid="inbox-conversation"][data-status="queued"]').last();
  await arrived.locator("button").click();
  await inbox.locator('[data-testid="inbox-accept"]').waitFor({ state: "visible", timeout: 10000 });
  await inbox.click('[data-testid="inbox-accept"]');
  await inbox.locator('[data-testid="inbox-reply-input"]').waitFor({ state: "visible", timeout: 10000 })
    .catch(() => fail("accepting did not open the composer"));

  // The customer 360 and the whole story: the earlier SMS turns are in the transcript.
  const panel = inbox.locator('[data-testid="inbox-customer"]');
  await inbox.waitForFunction((number) => document.querySelector('[data-testid="inbox-customer"]').textContent.includes(number),
    phone, { timeout: 10000 }).catch(async () => fail(`the customer panel lacks the phone: ${await panel.textContent()}`));
  const panelText = await panel.textContent();
  if (!panelText.includes("Lin <img src=x onerror=alert(1)>")) fail(`the customer's name is not shown as text: ${panelText}`);
  const channels = await inbox.locator('[data-testid="inbox-message"]').evaluateAll((items) =>
    items.map((item) => `${item.dataset.author}/${item.dataset.channel}`));
  if (!channels.includes("customer/sms") || !channels.includes("bot/sms")) fail(`the earlier SMS turns are missing: ${channels}`);
  if (!channels.includes("customer/chat")) fail(`the chat message is missing: ${channels}`);

  // Typing shows across: Lin types, Grace sees it; Grace types, Lin sees it.
  // (The page says so at most every 3 seconds: Lin's last keystrokes, asking for a person, were just now.)
  await page.waitForTimeout(3100);
  await chat.locator('[data-testid="chat-input"]').fill("one more th");
  await inbox.locator('[data-testid="inbox-typing"]').waitFor({ state: "visible", timeout: 10000 })
    .catch(() => fail("the agent did not see the customer typing"));
  await chat.locator('[data-testid="chat-input"]').fill("");
  await inbox.fill('[data-testid="inbox-reply-input"]', "Hi Lin");
  await chat.locator("#typing").waitFor({ state: "visible", timeout: 10000 })
    .catch(() => fail("the customer did not see the agent typing"));

  // The agent replies; Lin sees it live.
  await inbox.fill('[data-testid="inbox-reply-input"]', "Hi Lin, I'm Grace. I've frozen the card for you.");
  await inbox.click('[data-testid="inbox-reply-send"]');
  await chat.locator('[data-testid="chat-message"][data-author="agent"]').first().waitFor({ timeout: 10000 })
    .catch(() => fail("the customer did not see the agent's reply"));
  const reply = await chat.locator('[data-testid="chat-message"][data-author="agent"]').first().textContent();
  if (reply !== "Hi Lin, I'm Grace. I've frozen the card for you.") fail(`the customer saw "${reply}"`);
  await inbox.waitForFunction(() => [...document.querySelectorAll('[data-testid="inbox-message"][data-author="agent"]')]
    .some((item) => item.textContent.includes("frozen the card")), null, { timeout: 10000 })
    .catch(() => fail("the reply is not in the agent's transcript"));
  // A canned reply fills the composer for this customer; a note stays with colleagues.
  await inbox.locator('[data-testid="inbox-canned"]').waitFor({ state: "visible", timeout: 10000 })
    .catch(() => fail("the canned replies are not offered"));
  await inbox.selectOption('[data-testid="inbox-canned"]', { label: "greet" });
  const filled = await inbox.inputValue('[data-testid="inbox-reply-input"]');
  if (filled !== "Hello Lin <img src=x onerror=alert(1)>, one moment please.") fail(`the canned reply read "${filled}"`);
  await inbox.fill('[data-testid="inbox-reply-input"]', "Card frozen; she will call back about the replacement.");
  await inbox.click('[data-testid="inbox-note-add"]');
  await inbox.locator('[data-testid="inbox-note"]').first().waitFor({ timeout: 10000 })
    .catch(() => fail("the note is not in the transcript"));
  await page.waitForTimeout(500);
  const seen = await chat.locator('[data-testid="chat-message"]').allTextContents();
  if (seen.some((text) => text.includes("replacement"))) fail(`the customer saw the note: ${seen}`);
  // Snoozed for an hour: the conversation moves to her Snoozed list; Lin writes, and it is back in Mine, live.
  await inbox.selectOption('[data-testid="inbox-snooze"]', "60");
  await inbox.locator('[data-testid="inbox-snoozed"] [data-testid="inbox-conversation"]').first().waitFor({ timeout: 10000 })
    .catch(() => fail("the snoozed conversation is not in the Snoozed list"));
  await chat.locator('[data-testid="chat-input"]').fill("Thanks! Also, when does the new card arrive?");
  await chat.locator('[data-testid="chat-send"]').click();
  await inbox.locator('#inbox-mine [data-testid="inbox-conversation"]').first().waitFor({ timeout: 10000 })
    .catch(() => fail("the customer's message did not wake the snoozed conversation"));
  if (await inbox.locator('[data-testid="inbox-snoozed"] [data-testid="inbox-conversation"]').count() !== 0) {
    fail("the woken conversation is still in the Snoozed list");
  }
  // Grace makes herself available (routing offers her conversations from now on; she took this one herself).
  const statusSaved = inbox.waitForResponse((response) => response.url().endsWith("/api/v1/agents/me/status"));
  await inbox.selectOption('[data-testid="inbox-status"]', "available");
  if ((await statusSaved).status() !== 200) fail("setting the agent's status failed");

  // The supervisor sees Grace holding the conversation.
  const office = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const view = await office.newPage();
  view.on("pageerror", (error) => errors.push(`supervisor: ${error.message}`));
  await view.goto(supervisor.invite_url);
  await view.fill('[data-testid="invite-password"]', password);
  await view.fill('[data-testid="invite-confirm"]', password);
  await view.click('[data-testid="invite-submit"]');
  await view.goto(`${args.url}/supervisor`);
  const holding = await view.locator('[data-testid="supervisor-agent"]').evaluateAll((rows) =>
    rows.map((row) => `${row.textContent.includes("Grace <b>Hopper</b>")}:${row.dataset.status}:${row.dataset.holding}`));
  // She holds the one she took, and any the router gave her once she was available.
  if (!holding.some((row) => /^true:available:[1-9]/.test(row))) fail(`the supervisor does not see Grace available and holding: ${holding}`);
  if (await view.locator('[data-testid="supervisor-queues"]').count() !== 1) fail("the queue chart is missing");
  // Grace transfers the conversation to the VIP queue (a skill she lacks): it waits there, for everyone.
  await inbox.locator('#inbox-mine [data-testid="inbox-conversation"]').first().click();
  await inbox.locator('[data-testid="inbox-transfer"]').waitFor({ state: "visible", timeout: 10000 })
    .catch(() => fail("the transfer menu is not offered"));
  await inbox.waitForFunction(() => document.querySelector('[data-testid="inbox-transfer"]').options.length > 1, null, { timeout: 10000 })
    .catch(() => fail("the transfer menu lists no queue"));
  await inbox.selectOption('[data-testid="inbox-transfer"]', "queue:vip");
  await inbox.locator('#inbox-queued [data-testid="inbox-conversation"]').first().waitFor({ timeout: 10000 })
    .catch(() => fail("the transferred conversation does not wait in the queue"));
  const users = await office.request.get(`${args.url}/users`);
  if (users.status() !== 403) fail(`a supervisor opened /users: ${users.status()}`);
  if (errors.length) fail(errors.join("; "));
  if (args.screenshot) {
    await inbox.screenshot({ path: args.screenshot });
    await view.screenshot({ path: args.screenshot.replace(/\.png$/, "-supervisor.png"), fullPage: true });
  }
  console.log("inbox test passed");
} finally {
  await browser.close();
  site.close();
}
