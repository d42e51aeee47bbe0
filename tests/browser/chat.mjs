// The hosted web chat page in a real headless Chromium: a customer books an appointment by chat,
// the page reloads mid-conversation (a dropped connection), and the conversation carries on.
//
//   node chat.mjs --url http://127.0.0.1:PORT --workspace WS_ID [--screenshot PATH]
import { chromium } from "playwright-core";

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, value, index, all) =>
  index % 2 === 0 ? [...pairs, [value.replace(/^--/, ""), all[index + 1]]] : pairs, []));
const fail = (message) => { console.error(`chat test failed: ${message}`); process.exit(1); };
if (!args.url || !args.workspace) fail("usage: node chat.mjs --url URL --workspace WS_ID [--screenshot PATH]");

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(`${args.url}/chat/${args.workspace}`);
  const bot = page.locator('[data-testid="chat-message"][data-author="bot"]');
  await bot.first().waitFor({ timeout: 10000 });
  const say = async (text, expectedBotMessages) => {
    await page.fill('[data-testid="chat-input"]', text);
    await page.click('[data-testid="chat-send"]');
    await page.waitForFunction((count) =>
      document.querySelectorAll('[data-testid="chat-message"][data-author="bot"]').length >= count, expectedBotMessages, { timeout: 10000 });
  };
  await say("I want to book an appointment", 2);
  const asked = await bot.last().textContent();
  if (asked !== "What day suits you?") fail(`expected the bot to ask for the day, got "${asked}"`);
  const mine = await page.locator('[data-testid="chat-message"][data-author="customer"]').count();
  if (mine !== 1) fail(`expected 1 customer message on the page, found ${mine}`);

  // The connection drops (the page reloads); the conversation carries on where it was.
  await page.reload();
  await page.waitForFunction(() => document.getElementById("status").textContent === "", null, { timeout: 10000 })
    .catch(async () => fail(`the page did not reconnect: status "${await page.textContent("#status")}"`));
  await page.waitForFunction(() => {
    const texts = [...document.querySelectorAll('[data-testid="chat-message"]')].map((item) => item.textContent);
    return texts.includes("I want to book an appointment") && texts.includes("What day suits you?");
  }, null, { timeout: 10000 }).catch(async () => fail(`after a reload the transcript is not shown again; found ${
    JSON.stringify(await page.locator('[data-testid="chat-message"]').allTextContents())}`));
  await page.fill('[data-testid="chat-input"]', "tomorrow");
  await page.click('[data-testid="chat-send"]');
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="chat-message"][data-author="bot"]')]
    .some((item) => item.textContent === "What time suits you?"), null, { timeout: 10000 });
  if (errors.length) fail(`JavaScript errors: ${errors.join("; ")}`);
  if (args.screenshot) await page.screenshot({ path: args.screenshot });
  console.log("chat test passed");

  // The kiosk: the same bot, spoken aloud, with large touch buttons and typing as the fallback.
  const kiosk = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  kiosk.on("pageerror", (error) => errors.push(error.message));
  await kiosk.addInitScript(() => {
    window.__spoken = [];
    window.speechSynthesis.speak = (utterance) => window.__spoken.push(utterance.text);
  });
  await kiosk.goto(`${args.url}/kiosk/${args.workspace}`);
  await kiosk.locator('[data-testid="chat-message"][data-author="bot"]').first().waitFor({ timeout: 10000 });
  await kiosk.fill('[data-testid="chat-input"]', "when are you open?");
  await kiosk.click('[data-testid="chat-send"]');
  await kiosk.waitForFunction(() => window.__spoken.some((text) => text.startsWith("Our branches are open")), null, { timeout: 10000 })
    .catch(async () => fail(`the kiosk did not speak the answer; spoke ${JSON.stringify(await kiosk.evaluate(() => window.__spoken))}`));
  await kiosk.click('#quick button[data-say="talk to a person"]');
  await kiosk.waitForFunction(() => window.__spoken.some((text) => text.includes("connect you")), null, { timeout: 10000 })
    .catch(() => fail("a touch button did not reach the bot"));
  if (errors.length) fail(`JavaScript errors on the kiosk: ${errors.join("; ")}`);
  if (args.screenshot) await kiosk.screenshot({ path: args.screenshot.replace(/\.png$/, "-kiosk.png") });
  console.log("kiosk test passed");
} finally {
  await browser.close();
}
