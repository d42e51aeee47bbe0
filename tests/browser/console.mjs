// The Crossline web console in a real headless Chromium: sign in with a workspace API key, check
// the overview's server-drawn chart, search a customer by email and check their 360 page; then make
// a segment, a template and a campaign (scheduled for 2099, so nothing is sent) with the REST API
// and check them in the console: the segments table, the template editor's live preview, the
// campaign's funnel and its pause and resume buttons.
//
// It starts nothing itself; run.sh starts a server with data and calls it:
//   node console.mjs --url http://127.0.0.1:PORT --api-key sk_... --profile-email ada@example.com \
//        --screenshot /tmp/console-360.png [--admin-token TOKEN]
// With --admin-token it also signs in as the operator, picks workspaces from the list and checks
// the empty states of a workspace named "empty-demo" when there is one (run.sh creates it).
// Exits 0 when every check passes, 1 with a sentence naming the failed check otherwise.

import { chromium } from 'playwright-core';
import { parseArgs } from 'node:util';

const { values: options } = parseArgs({
  options: {
    url: { type: 'string' },
    'api-key': { type: 'string' },
    'profile-email': { type: 'string' },
    'admin-token': { type: 'string' },
    screenshot: { type: 'string', default: 'console-360.png' },
    chromium: { type: 'string', default: process.env.CHROMIUM_PATH || '/usr/bin/chromium' },
  },
});
for (const required of ['url', 'api-key', 'profile-email']) {
  if (!options[required]) {
    console.error(`usage: node console.mjs --url URL --api-key KEY --profile-email EMAIL [--screenshot PATH]; --${required} is missing`);
    process.exit(2);
  }
}
const base = options.url.replace(/\/+$/, '');
const screenshot = options.screenshot;
const shot = (suffix) => screenshot.replace(/(\.png)?$/, `-${suffix}.png`);
const overviewShot = shot('overview');

class CheckFailed extends Error {}
function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}
function step(message) {
  console.log(`  ✓ ${message}`);
}

const browser = await chromium.launch({
  executablePath: options.chromium,
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 });
const page = await context.newPage();
page.setDefaultTimeout(15_000);
const pageErrors = [];
page.on('pageerror', (error) => pageErrors.push(error.message));
page.on('console', (message) => {
  if (message.type() === 'error') pageErrors.push(message.text());
});

let exitCode = 0;
try {
  console.log(`console test against ${base}`);

  // Signing in.
  const login = await page.goto(`${base}/`);
  check(login?.ok(), `GET / answered ${login?.status()}`);
  check(new URL(page.url()).pathname === '/login', `without a session / should lead to /login, got ${page.url()}`);
  await page.fill('[data-testid="login-token"]', 'sk_wrong');
  await page.click('[data-testid="login-submit"]');
  await page.waitForSelector('[data-testid="login-error"]');
  await page.screenshot({ path: shot('login') });
  step('a wrong key is refused with a message');
  await page.fill('[data-testid="login-token"]', options['api-key']);
  await Promise.all([page.waitForURL(`${base}/`), page.click('[data-testid="login-submit"]')]);
  step('signed in with the workspace API key');
  // The refused attempt above is answered 401, which Chromium reports as a console error.
  pageErrors.length = 0;

  // Overview: counters, the SVG chart drawn by the server, the per-channel bars.
  const chart = page.locator('svg[data-testid="events-chart"]');
  await chart.waitFor();
  const bars = await chart.locator('rect.bar').evaluateAll((rects) => rects.map((rect) => Number(rect.dataset.count)));
  check(bars.length >= 28, `the chart should have a bar per day of the last 30 days, found ${bars.length}`);
  check(bars.some((count) => count > 0), 'the chart shows no events although events were sent');
  const tallest = await chart.locator('rect.bar').evaluateAll((rects) => Math.max(...rects.map((rect) => rect.getBoundingClientRect().height)));
  check(tallest > 20, `the tallest bar is ${tallest}px high; the chart is not drawn`);
  const barTitle = await chart.locator('g.bar-group title').last().textContent();
  check(/\d+ events?$/.test(barTitle ?? ''), `bars should have hover titles such as "Mon, Nov 23, 2026: 12 events", got ${JSON.stringify(barTitle)}`);
  const profilesStat = await page.locator('[data-testid="stat-profiles"] .value').textContent();
  check(Number(profilesStat?.replace(/,/g, '')) >= 1, `the profiles counter shows ${JSON.stringify(profilesStat)}`);
  const channels = await page.locator('[data-testid="channel-bars"] li').count();
  check(channels >= 2, `events per channel should list at least two channels, found ${channels}`);
  await page.screenshot({ path: overviewShot, fullPage: true });
  step(`overview shows the chart (${bars.length} days, ${bars.reduce((a, b) => a + b, 0)} events) and ${channels} channels`);

  // Profile search.
  await page.click('nav a[href="/profiles"]');
  const search = page.locator('[data-testid="profile-search"]');
  await search.waitFor();
  await search.fill(options['profile-email']);
  await Promise.all([page.waitForURL(/\/profiles\?q=/), search.press('Enter')]);
  const rows = page.locator('[data-testid="profile-row"]');
  const found = await rows.count();
  check(found >= 1, `searching for ${options['profile-email']} found no profile`);
  step(`search for ${options['profile-email']} found ${found} profile(s)`);
  await page.goto(`${base}/profiles`);
  check((await rows.count()) >= 2, 'the profile list shows fewer than two profiles');
  await page.screenshot({ path: shot('profiles'), fullPage: true });
  step(`the profile list shows ${await rows.count()} profiles`);
  await page.goBack();

  // Customer 360.
  await Promise.all([page.waitForURL(/\/profiles\/[^/?]+/), rows.first().locator('a').first().click()]);
  const identities = await page.locator('[data-testid="identity"]').allTextContents();
  check(identities.length >= 2, `a merged profile should show several identities, found ${identities.length}`);
  check(
    identities.some((text) => text.toLowerCase().includes(options['profile-email'].toLowerCase())),
    `the identities do not include ${options['profile-email']}: ${JSON.stringify(identities)}`,
  );
  const traits = await page.locator('[data-testid="trait"]').count();
  check(traits >= 1, 'no traits are shown');
  const consent = await page.locator('[data-testid="consent"]').count();
  check(consent >= 1, 'no consent rows are shown');
  const events = await page.locator('[data-testid="timeline-event"]').evaluateAll((items) => items.map((item) => item.dataset.channel));
  check(events.length >= 2, `the timeline shows ${events.length} events`);
  const eventChannels = [...new Set(events.filter((channel) => channel !== 'system'))];
  check(eventChannels.length >= 2, `the timeline should hold events of at least two channels, found ${JSON.stringify(eventChannels)}`);
  const merges = await page.locator('[data-testid="merge-event"]').count();
  check(merges >= 1, 'the timeline of a merged profile shows no merge');
  step(`360 page: ${identities.length} identities, ${traits} traits, ${consent} consent rows, ${events.length} events on ${eventChannels.join(', ')}, ${merges} merge(s)`);

  // The channel filter (the one piece of JavaScript on the page) narrows the timeline.
  const filter = page.locator(`[data-timeline-filters] button[data-filter="${eventChannels[0]}"]`);
  if (await filter.count()) {
    await filter.click();
    const visible = await page.locator('[data-testid="timeline-event"]:visible').evaluateAll((items) => items.map((item) => item.dataset.channel));
    check(visible.length >= 1 && visible.every((channel) => channel === eventChannels[0]), `filtering by ${eventChannels[0]} shows ${JSON.stringify(visible)}`);
    await page.locator('[data-timeline-filters] button[data-filter=""]').click();
    step(`the timeline filter shows only ${eventChannels[0]} events`);
  }

  check(pageErrors.length === 0, `the page reported errors: ${pageErrors.join(' | ')}`);
  await page.screenshot({ path: screenshot, fullPage: true });

  // Bots: this workspace has none yet (run.sh adds one later); the page says how to define one.
  const botsPage = await page.goto(`${base}/bots`);
  check(botsPage?.ok(), `GET /bots answered ${botsPage?.status()}`);
  check((await page.getByText('No bots yet').count()) === 1, 'the bots page should say there are no bots yet');
  check((await page.locator('nav a[href="/bots"][aria-current="page"]').count()) === 1, 'Bots is not the current section');
  check(pageErrors.length === 0, `the bots page reported errors: ${pageErrors.join(' | ')}`);
  step('the bots page explains how to define a bot');

  // Engagement, made with the REST API and the workspace's API key.
  const api = async (path, body) => {
    const response = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${options['api-key']}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await response.text();
    check(response.ok, `POST ${path} answered ${response.status}: ${text}`);
    return JSON.parse(text);
  };
  const stamp = Date.now().toString(36);
  const segment = await api('/api/v1/segments', {
    name: `Pro customers ${stamp}`,
    filter: { all: [{ trait: 'plan', op: 'eq', value: 'pro' }, { reachable: 'email' }] },
  });
  const template = await api('/api/v1/templates', {
    name: `Welcome ${stamp}`,
    channel: 'email',
    subject: 'Welcome, {{ profile.traits.name | default: "friend" }}',
    body: '<p>Hello {{ profile.traits.name | default: "friend" }}!</p>',
  });
  const campaign = await api('/api/v1/campaigns', {
    name: `Winter ${stamp}`,
    segment_id: segment.id,
    channel: 'email',
    template_id: template.id,
    schedule: { at: '2099-01-01T00:00:00Z' },
  });
  check(campaign.status === 'scheduled', `a campaign for 2099 should be scheduled: ${JSON.stringify(campaign)}`);
  step(`made segment ${segment.id}, template ${template.id} and campaign ${campaign.id} with the API`);

  // Segments: the table, with each segment's size counted live.
  await page.goto(`${base}/segments`);
  const segmentRow = page.locator('[data-testid="segments-table"] [data-testid="segment-row"]', { hasText: `Pro customers ${stamp}` });
  await segmentRow.waitFor();
  const size = (await segmentRow.locator('[data-testid="segment-size"]').textContent())?.trim() ?? '';
  check(/^[\d,]+$/.test(size), `the segment's size should be a count, got ${JSON.stringify(size)}`);
  check((await page.locator('nav a[href="/segments"][aria-current="page"]').count()) === 1, 'Segments is not the current section');
  await page.screenshot({ path: shot('segments'), fullPage: true });
  step(`the segments table shows the new segment with ${size} profile(s)`);

  // The template editor: typing re-renders the preview frame; a broken template names its line and
  // column while the last good preview stays; Save stores what was typed.
  await page.goto(`${base}/templates`);
  const templateLink = page.locator('[data-testid="templates-table"] a', { hasText: `Welcome ${stamp}` });
  await Promise.all([page.waitForURL(/\/templates\/tpl_/), templateLink.click()]);
  const preview = page.locator('iframe[data-testid="template-preview"]');
  await preview.waitFor();
  check((await preview.getAttribute('srcdoc'))?.includes('Hello'), 'the editor should open with a preview rendered by the server');
  const marker = `browser-check-${stamp}`;
  const body = page.locator('[data-testid="template-body"]');
  const good = `<p>Hi {{ profile.traits.name | default: "friend" }}, ${marker}</p>`;
  await body.fill(good);
  await page.locator(`iframe[data-testid="template-preview"][srcdoc*="${marker}"]`).waitFor();
  await page.frameLocator('iframe[data-testid="template-preview"]').getByText(marker).waitFor();
  step('typing in the body re-renders the preview frame');
  await body.fill('<p>Hello</p>\n{{ profile.traits.name | shout }}');
  const fault = page.locator('[data-testid="template-error"]');
  await fault.waitFor({ state: 'visible' });
  const faultText = (await fault.textContent()) ?? '';
  check(/line 2, column \d+/.test(faultText), `a broken template should name its line and column, got ${JSON.stringify(faultText)}`);
  check((await preview.getAttribute('srcdoc'))?.includes(marker), 'the last good preview should stay while the template is broken');
  await page.screenshot({ path: shot('template-error'), fullPage: true });
  step(`a broken template is reported: ${faultText}`);
  await body.fill(good);
  await fault.waitFor({ state: 'hidden' });
  await Promise.all([page.waitForURL(/\?saved=1$/), page.click('[data-testid="template-save"]')]);
  await page.locator('[data-testid="template-saved"]').waitFor();
  check((await body.inputValue()).includes(marker), 'after saving, the editor should hold what was typed');
  await page.screenshot({ path: shot('template'), fullPage: true });
  step('the template is saved');

  // A test send with no email channel yet: the editor says why it did not go.
  await page.fill('[data-testid="template-test-to"]', 'author@example.com');
  await page.click('[data-testid="template-test-send"]');
  const testFailed = page.locator('[data-testid="template-test-failed"]');
  await testFailed.waitFor();
  const testFailure = (await testFailed.textContent()) ?? '';
  check(testFailure.includes('not configured'), `a test send without SMTP should say so, got ${JSON.stringify(testFailure)}`);
  // The refused test answers 409, which the browser logs; nothing else may have gone wrong.
  const unexpected = pageErrors.filter((error) => !error.includes('status of 409'));
  check(unexpected.length === 0, `the template page reported errors: ${unexpected.join(' | ')}`);
  pageErrors.length = 0;
  step(`Send test without an SMTP server: ${testFailure.trim()}`);

  // The Channels page: an SMTP server and quiet hours, saved from forms; the password is never shown.
  await page.goto(`${base}/channels`);
  check((await page.locator('nav a[href="/channels"][aria-current="page"]').count()) === 1, 'Channels is not the current section');
  const vapidKey = (await page.locator('[data-testid="vapid-public-key"]').textContent()).trim();
  check(/^B[A-Za-z0-9_-]{86}$/.test(vapidKey), `the Push card should show the VAPID public key, found ${JSON.stringify(vapidKey)}`);
  const smtpForm = page.locator('[data-testid="channels-smtp-form"]');
  await smtpForm.locator('[data-testid="channels-smtp-host"]').fill('smtp.example.com');
  await smtpForm.locator('input[name="from"]').fill('News <news@example.com>');
  const secret = `browser-secret-${stamp}`;
  await smtpForm.locator('input[name="username"]').fill('news');
  await smtpForm.locator('input[name="password"]').fill(secret);
  await Promise.all([page.waitForURL(/\/channels\?saved=smtp$/), page.click('[data-testid="channels-smtp-save"]')]);
  await page.locator('[data-testid="channels-saved"]').waitFor();
  check(!(await page.content()).includes(secret), 'the SMTP password should never be shown back');
  check((await page.locator('[data-testid="channels-smtp-host"]').inputValue()) === 'smtp.example.com', 'the saved host is shown');
  await page.fill('[data-testid="channels-quiet-start"]', '21:00');
  await page.fill('[data-testid="channels-quiet-end"]', '08:00');
  await Promise.all([page.waitForURL(/\/channels\?saved=messaging$/), page.click('[data-testid="channels-messaging-save"]')]);
  check((await page.locator('[data-testid="channels-quiet-start"]').inputValue()) === '21:00', 'quiet hours are saved');
  await page.screenshot({ path: shot('channels'), fullPage: true });
  check(pageErrors.length === 0, `the channels page reported errors: ${pageErrors.join(' | ')}`);
  step('the Channels page saves an SMTP server (password not shown back) and quiet hours');

  // The campaign: its status, a funnel per treatment drawn by the server, pause and resume.
  await page.goto(`${base}/campaigns`);
  const campaignRow = page.locator('[data-testid="campaigns-table"] [data-testid="campaign-row"]', { hasText: `Winter ${stamp}` });
  await campaignRow.waitFor();
  const listed = await campaignRow.locator('[data-testid="campaign-status"]').getAttribute('data-status');
  check(listed === 'scheduled', `the campaigns table shows the campaign as ${listed}`);
  await Promise.all([page.waitForURL(/\/campaigns\/cmp_/), campaignRow.locator('a').first().click()]);
  const funnel = page.locator('svg[data-testid="campaign-funnel"]').first();
  await funnel.waitFor();
  const stages = await funnel.locator('rect.bar').evaluateAll((rects) => rects.map((rect) => rect.dataset.stage));
  check(stages.join(' ') === 'targeted sent delivered opened clicked converted', `the funnel's stages are ${JSON.stringify(stages)}`);
  const funnelWidth = (await funnel.boundingBox())?.width ?? 0;
  check(funnelWidth > 200, `the funnel is ${funnelWidth}px wide; it is not drawn`);
  await page.screenshot({ path: shot('campaign'), fullPage: true });
  await page.click('[data-testid="campaign-pause"]');
  await page.locator('[data-testid="campaign-status"][data-status="paused"]').waitFor();
  await page.locator('[data-testid="campaign-resume"]').waitFor();
  await page.click('[data-testid="campaign-resume"]');
  // It never ran, so resuming makes it wait for its time again; either way it can be paused again.
  await page.locator('[data-testid="campaign-pause"]').waitFor();
  const resumed = await page.locator('[data-testid="campaign-status"]').getAttribute('data-status');
  check(resumed === 'scheduled' || resumed === 'running', `after resuming, the campaign is ${resumed}`);
  check(pageErrors.length === 0, `the engagement pages reported errors: ${pageErrors.join(' | ')}`);
  step(`campaign page: a funnel of ${stages.length} stages; paused, then resumed (${resumed})`);

  if (options['admin-token']) {
    // The operator: a fresh browser context, so nothing of the API-key session is shared.
    const operator = await (await browser.newContext({ viewport: { width: 1440, height: 900 } })).newPage();
    operator.setDefaultTimeout(15_000);
    operator.on('pageerror', (error) => pageErrors.push(error.message));
    await operator.goto(`${base}/login`);
    await operator.fill('[data-testid="login-token"]', options['admin-token']);
    await Promise.all([operator.waitForURL(`${base}/`), operator.click('[data-testid="login-submit"]')]);
    const workspaces = operator.locator('[data-testid="workspace-row"]');
    check((await workspaces.count()) >= 1, 'the operator should see the workspace list, found no rows');
    await operator.screenshot({ path: shot('workspaces'), fullPage: true });
    const empty = workspaces.filter({ hasText: 'empty-demo' });
    if (await empty.count()) {
      await Promise.all([operator.waitForURL(/\?workspace=/), empty.locator('a').click()]);
      await operator.getByText('No events yet').waitFor();
      await operator.screenshot({ path: shot('empty'), fullPage: true });
      await operator.click('nav a[href="/profiles"]');
      await operator.getByText('No profiles yet').waitFor();
      step('operator: workspace list, and empty states of a workspace without data');
    }
    await operator.click('nav a[href="/workspaces"]');
    await Promise.all([operator.waitForURL(/\?workspace=/), workspaces.filter({ hasNotText: 'empty-demo' }).first().locator('a').click()]);
    await operator.locator('svg[data-testid="events-chart"]').waitFor();
    await operator.click('nav a[href="/profiles"]');
    check((await operator.locator('[data-testid="profile-row"]').count()) >= 2, 'the chosen workspace is not remembered across pages');
    step('operator: the chosen workspace is remembered across pages');
    check(pageErrors.length === 0, `the operator's pages reported errors: ${pageErrors.join(' | ')}`);
  }
  step(`screenshots saved: ${screenshot} and ${shot('*')}`);
  console.log('console test passed');
} catch (error) {
  exitCode = 1;
  const failure = shot('failure');
  await page.screenshot({ path: failure, fullPage: true }).catch(() => {});
  if (error instanceof CheckFailed) {
    console.error(`console test FAILED: ${error.message} (page ${page.url()}, screenshot ${failure})`);
  } else {
    console.error(`console test FAILED: ${error.message.split('\n')[0]} (page ${page.url()}, screenshot ${failure})`);
  }
} finally {
  await browser.close();
}
process.exit(exitCode);
