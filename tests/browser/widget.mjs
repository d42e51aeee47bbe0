// The embeddable widget on a customer's own site, in a real headless Chromium, and the conversation
// following the customer from that chat to SMS and to a phone call (Twilio's webhooks, signed as
// Twilio signs them). The host page is served from another origin, as a real site would be.
//
//   node widget.mjs --url http://127.0.0.1:PORT --workspace WS_ID --write-key WK --twilio-token TOKEN \
//     --identity-secret SECRET [--screenshot PATH]
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { createServer } from "node:http";

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, value, index, all) =>
  index % 2 === 0 ? [...pairs, [value.replace(/^--/, ""), all[index + 1]]] : pairs, []));
const fail = (message) => { console.error(`widget test failed: ${message}`); process.exit(1); };
for (const required of ["url", "workspace", "write-key", "twilio-token", "identity-secret"]) {
  if (!args[required]) fail(`--${required} is required`);
}

// Twilio's signature: HMAC-SHA1 of the URL followed by the sorted parameters, base64.
const twilio = async (kind, params, path = `/hooks/${args.workspace}/twilio/${kind}`) => {
  const url = `${args.url}${path}`;
  const signed = url + Object.keys(params).sort().map((name) => name + params[name]).join("");
  const signature = createHmac("sha1", args["twilio-token"]).update(signed).digest("base64");
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature },
    body: new URLSearchParams(params).toString(),
  });
  const body = await response.text();
  if (response.status !== 200) fail(`Twilio ${kind} webhook answered ${response.status}: ${body}`);
  return body;
};
const phone = "+14155550177";
let sid = 0;
const sms = (text) => twilio("sms", { MessageSid: `SM${String(++sid).padStart(32, "0")}`, AccountSid: "AC" + "0".repeat(32),
  From: phone, To: "+14155550100", Body: text });
// A call: the first request goes to the number's webhook, every later one to the action URL of
// the last <Gather> (it carries the prompt's position, as Twilio follows it).
let callAction = null;
const call = async (speech) => {
  const twiml = await twilio("voice", { CallSid: "CA" + "1".repeat(32), AccountSid: "AC" + "0".repeat(32),
    From: phone, To: "+14155550100", ...(speech ? { SpeechResult: speech } : {}) }, callAction ?? undefined);
  const action = /<Gather[^>]* action="([^"]*)"/.exec(twiml);
  callAction = action ? action[1].replaceAll("&amp;", "&") : null;
  return twiml;
};
const expect = (what, body, needle) => {
  if (!body.includes(needle)) fail(`${what}: expected ${JSON.stringify(needle)} in ${body}`);
};

// The site's server vouches for its signed-in customer: an HMAC, with the web chat's identity
// secret, over the user id and the email and phone it names (docs/channels/webchat.md).
const grace = { name: "Grace Hopper", email: "grace@example.com", phone };
const userHash = createHmac("sha256", args["identity-secret"])
  .update(`u-grace\nemail:${grace.email}\nphone:${grace.phone}`).digest("hex");

// The customer's site, on its own origin, with the one script tag.
const site = createServer((request, response) => {
  response.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
  response.end(`<!doctype html><html><head><title>Example Bank</title></head><body>
<h1>Welcome back, Grace</h1>
<script>
  window.Crossline = window.Crossline || { q: [] };
  window.Crossline.q.push(["identify", "u-grace", ${JSON.stringify(grace)}, { userHash: "${userHash}" }]);
  document.addEventListener("crossline:identified", (event) => { window.__identified = event.detail.verified; });
</script>
<script src="${args.url}/widget.js" data-write-key="${args["write-key"]}" async></script>
</body></html>`);
});
await new Promise((resolve) => site.listen(0, "127.0.0.1", resolve));
const siteUrl = `http://127.0.0.1:${site.address().port}/`;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(siteUrl);
  await page.click('[data-testid="crossline-launcher"]');
  const chat = page.frameLocator('[data-testid="crossline-frame"]');
  const botCount = () => chat.locator('[data-testid="chat-message"][data-author="bot"]').count();
  const lastBot = () => chat.locator('[data-testid="chat-message"][data-author="bot"]').last().textContent();
  const waitForBot = async (count) => {
    for (let tries = 0; tries < 100 && (await botCount()) < count; tries++) await page.waitForTimeout(100);
    if ((await botCount()) < count) fail(`expected ${count} bot messages in the widget, saw ${await botCount()}`);
  };
  await waitForBot(1);
  await page.waitForFunction(() => window.__identified === true, null, { timeout: 10000 })
    .catch(() => fail("Crossline.identify from the host page was not acknowledged"));

  // Quick replies: the greeting offers buttons; tapping one is a message.
  const buttons = chat.locator('[data-testid="chat-quick-reply"]');
  const offered = await buttons.allTextContents();
  if (!offered.includes("Book an appointment")) fail(`the greeting offers ${JSON.stringify(offered)}`);
  await buttons.filter({ hasText: "Book an appointment" }).click();
  await waitForBot(2);
  if ((await lastBot()) !== "What day suits you?") fail(`after the button the bot said "${await lastBot()}"`);
  const type = async (text) => {
    await chat.locator('[data-testid="chat-input"]').fill(text);
    await chat.locator('[data-testid="chat-send"]').click();
  };
  await type("tomorrow");
  await waitForBot(3);
  if ((await lastBot()) !== "What time suits you?") fail(`the bot asked "${await lastBot()}"`);
  if (args.screenshot) await page.screenshot({ path: args.screenshot });

  // Half filled in chat, finished by SMS: the bot knows where they were.
  let twiml = await sms("Hi, it's about my appointment");
  expect("the first SMS", twiml, "<Message>Picking up where we left off in chat: What time suits you?</Message>");
  twiml = await sms("3pm");
  expect("the time by SMS", twiml, "at 3 pm?\nReply Yes / No</Message>");
  twiml = await sms("yes");
  expect("the confirmation by SMS", twiml, "<Message>Booked: ");
  console.log("chat to SMS passed");

  // Again in chat, and this time finished on a phone call.
  const before = await botCount();
  await type("I'd like to book an appointment");
  await waitForBot(before + 1);
  await type("friday");
  await waitForBot(before + 2);
  if ((await lastBot()) !== "What time suits you?") fail(`the second booking asked "${await lastBot()}"`);
  twiml = await call(null);
  expect("the call's first prompt", twiml, "<Say>Picking up where we left off in chat: What time suits you?</Say>");
  expect("the call listens", twiml, '<Gather input="speech dtmf"');
  twiml = await call("four pm please");
  expect("the time by voice", twiml, " at 4 pm? You can say yes or no.</Say>");
  twiml = await call("yes please");
  expect("the confirmation by voice", twiml, "<Say>Booked: ");
  console.log("chat to voice passed");
  if (errors.length) fail(`JavaScript errors: ${errors.join("; ")}`);
  console.log("widget test passed");
} finally {
  await browser.close();
  site.close();
}
