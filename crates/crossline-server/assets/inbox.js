// The agent inbox: the conversations waiting and those the agent has, one conversation's transcript
// with the customer 360 beside it, and the composer. Live: a WebSocket (/inbox/ws) tells the page
// which conversation changed, on any node; the page reads it again through the REST API with the
// console's session cookie. Everything a customer wrote is put on the page as text, never as HTML.
const root = document.querySelector("[data-inbox]");
if (root) {
  const me = root.dataset.agent || null;
  const lists = { queued: document.getElementById("inbox-queued"), mine: document.getElementById("inbox-mine"),
    others: document.getElementById("inbox-others"), snoozed: document.getElementById("inbox-snoozed") };
  const thread = document.getElementById("inbox-thread");
  const title = document.getElementById("inbox-title");
  const messages = document.getElementById("inbox-messages");
  const customer = document.getElementById("inbox-customer");
  const accept = document.getElementById("inbox-accept");
  const composer = document.getElementById("inbox-composer");
  const input = document.getElementById("inbox-reply-input");
  const problem = document.getElementById("inbox-error");
  const liveState = document.getElementById("inbox-live");
  const noteButton = document.getElementById("inbox-note");
  const send = document.getElementById("inbox-send");
  const canned = document.getElementById("inbox-canned");
  const typingNote = document.getElementById("inbox-typing");
  const snooze = document.getElementById("inbox-snooze");
  const transfer = document.getElementById("inbox-transfer");
  let open = null;

  // Every change the page asks for carries the session's CSRF token.
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  const api = async (path, options = {}) => {
    const headers = { "Content-Type": "application/json", "X-CSRF-Token": csrf };
    const response = await fetch(path, { credentials: "same-origin", headers, ...options });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    return body;
  };
  const element = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  const since = (iso) => {
    if (!iso) return "";
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (seconds < 60) return `${seconds}s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)}m`;
    return `${Math.round(seconds / 3600)}h`;
  };
  const say = (text) => { problem.textContent = text || ""; };

  const row = (conversation) => {
    const item = element("li", "inbox-row");
    item.setAttribute("data-testid", "inbox-conversation");
    item.dataset.conversationId = conversation.id;
    item.dataset.status = conversation.status;
    if (conversation.id === open) item.setAttribute("aria-current", "true");
    const link = element("button", "inbox-open");
    link.type = "button";
    link.append(element("span", "inbox-channel", conversation.channel),
      element("span", "inbox-queue", conversation.queue || "default"),
      element("span", "inbox-wait", conversation.snoozed_until
        ? `until ${new Date(conversation.snoozed_until).toLocaleString()}`
        : since(conversation.queued_at || conversation.updated_at)));
    link.addEventListener("click", () => show(conversation.id));
    item.append(link);
    return item;
  };

  const refresh = async () => {
    const { conversations } = await api("/api/v1/conversations?limit=200");
    const groups = { queued: [], mine: [], others: [], snoozed: [] };
    for (const conversation of conversations) {
      if (conversation.status === "queued") groups.queued.push(conversation);
      else if (me && conversation.assignee === me && conversation.snoozed_until) groups.snoozed.push(conversation);
      else if (me && conversation.assignee === me) groups.mine.push(conversation);
      else groups.others.push(conversation);
    }
    groups.queued.sort((a, b) => Date.parse(a.queued_at) - Date.parse(b.queued_at));
    for (const [name, list] of Object.entries(lists)) {
      if (!list) continue;
      list.replaceChildren(...groups[name].map(row));
      if (!groups[name].length) list.append(element("li", "inbox-empty", name === "queued" ? "Nobody is waiting." : "None."));
    }
  };

  const panel = (view) => {
    const parts = [];
    const profile = view.profile;
    const name = profile.traits.name || [profile.traits.first_name, profile.traits.last_name].filter(Boolean).join(" ");
    parts.push(element("h2", null, name || "Customer"));
    const facts = element("dl", "inbox-facts");
    const fact = (label, value) => { facts.append(element("dt", null, label), element("dd", null, value)); };
    for (const identity of profile.identities) fact(identity.kind, identity.value);
    for (const [trait, value] of Object.entries(profile.traits)) {
      fact(trait, typeof value === "string" ? value : JSON.stringify(value));
    }
    for (const [channel, status] of Object.entries(profile.consent)) fact(`consent: ${channel}`, status);
    parts.push(facts);
    if (view.form && view.form.intent) {
      parts.push(element("h3", null, "Half-filled form"));
      const form = element("dl", "inbox-form");
      form.append(element("dt", null, "intent"), element("dd", null, view.form.intent));
      for (const [slot, value] of Object.entries(view.form.slots || {})) {
        form.append(element("dt", null, slot), element("dd", null, value && value.text !== undefined ? value.text : JSON.stringify(value)));
      }
      parts.push(form);
    }
    if (view.sentiment.length) {
      parts.push(element("h3", null, "Sentiment"));
      const trend = element("p", "inbox-sentiment", view.sentiment.map((score) => score.toFixed(2)).join(" → "));
      trend.dataset.testid = "inbox-sentiment";
      parts.push(trend);
    }
    if (view.segments.length) {
      parts.push(element("h3", null, "Segments"));
      parts.push(element("p", null, view.segments.join(", ")));
    }
    if (view.conversations.length) {
      parts.push(element("h3", null, "Earlier conversations"));
      const list = element("ul", "inbox-earlier");
      for (const earlier of view.conversations) {
        list.append(element("li", null, `${earlier.channel} · ${earlier.status} · ${since(earlier.updated_at)} ago`));
      }
      parts.push(list);
    }
    parts.push(element("h3", null, "Recent activity"));
    const events = element("ul", "inbox-events");
    for (const event of view.events) {
      const what = event.event || event.name || event.type;
      events.append(element("li", null, `${event.channel} · ${what} · ${since(event.timestamp)} ago`));
    }
    parts.push(events);
    customer.replaceChildren(...parts);
  };

  const show = async (id) => {
    open = id;
    say("");
    const conversation = await api(`/api/v1/conversations/${encodeURIComponent(id)}`);
    thread.hidden = false;
    title.textContent = `${conversation.channel} · ${conversation.queue || "default"} · ${conversation.status}`;
    accept.hidden = !(me && (conversation.status === "queued" || conversation.status === "bot"));
    const mine = conversation.status === "assigned" && (!me || conversation.assignee === me);
    for (const button of root.querySelectorAll("[data-act]")) button.hidden = !mine;
    snooze.hidden = !mine || conversation.channel === "voice";
    transfer.hidden = !mine;
    if (mine) fillTransfer(conversation).catch(() => { transfer.hidden = true; });
    snooze.value = "";
    if (conversation.snoozed_until) title.textContent += ` · snoozed until ${new Date(conversation.snoozed_until).toLocaleString()}`;
    // The transcript, with colleagues' notes (never the customer's) in time order among it.
    const items = [
      ...conversation.messages.map((message) => ({ at: message.created_at, message })),
      ...(conversation.notes || []).map((note) => ({ at: note.created_at, note })),
    ].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
    messages.replaceChildren(...items.map(({ message, note }) => {
      if (note) {
        const item = element("div", "inbox-message inbox-note");
        item.setAttribute("data-testid", "inbox-note");
        item.append(element("span", "inbox-meta", `note · ${note.author_name}`), element("p", null, note.text));
        return item;
      }
      const item = element("div", `inbox-message inbox-by-${message.author}`);
      item.setAttribute("data-testid", "inbox-message");
      item.dataset.author = message.author;
      item.dataset.channel = message.channel;
      item.append(element("span", "inbox-meta", `${message.author} · ${message.channel}`), element("p", null, message.text));
      return item;
    }));
    noteButton.hidden = false;
    composer.hidden = false;
    send.hidden = !mine;
    input.placeholder = mine ? "Reply on the customer's channel, or add a note for colleagues…" : "A note for colleagues…";
    // Canned replies, rendered for this customer.
    api(`/api/v1/conversations/${encodeURIComponent(id)}/canned-replies`).then((list) => {
      canned.replaceChildren(element("option", null, "Canned replies…"), ...list.canned_replies.map((reply) => {
        const option = element("option", null, reply.name);
        option.value = reply.text;
        return option;
      }));
      canned.hidden = !mine || list.canned_replies.length === 0;
      canned.value = "Canned replies…";
    }).catch(() => { canned.hidden = true; });
    messages.scrollTop = messages.scrollHeight;
    for (const item of root.querySelectorAll("[data-testid=inbox-conversation]")) {
      item.toggleAttribute("aria-current", item.dataset.conversationId === id);
    }
    panel(await api(`/api/v1/conversations/${encodeURIComponent(id)}/customer`));
  };

  accept.addEventListener("click", async () => {
    try {
      await api(`/api/v1/conversations/${encodeURIComponent(open)}/assign`, { method: "POST", body: "{}" });
    } catch (error) { say(error.message); }
    await show(open);
    await refresh();
  });
  for (const button of root.querySelectorAll("[data-act]")) {
    button.addEventListener("click", async () => {
      try {
        await api(`/api/v1/conversations/${encodeURIComponent(open)}/${button.dataset.act}`, { method: "POST", body: "{}" });
        await show(open);
      } catch (error) { say(error.message); }
      await refresh();
    });
  }
  // Transfer: to a queue (it waits there) or to a colleague (who has it then).
  const fillTransfer = async (conversation) => {
    const [{ queues }, { agents }] = await Promise.all([api("/api/v1/queues"), api("/api/v1/agents")]);
    const names = new Set(queues.map((queue) => queue.name));
    names.add("default");
    if (conversation.queue) names.add(conversation.queue);
    const options = [element("option", null, "Transfer…")];
    options[0].value = "";
    for (const name of [...names].sort()) {
      const option = element("option", null, `to the ${name} queue`);
      option.value = `queue:${name}`;
      options.push(option);
    }
    for (const agent of agents) {
      if (agent.id === me) continue;
      const option = element("option", null, `to ${agent.name} (${agent.status})`);
      option.value = `agent:${agent.id}`;
      options.push(option);
    }
    transfer.replaceChildren(...options);
    transfer.value = "";
  };
  transfer.addEventListener("change", async () => {
    const [kind, target] = [transfer.value.slice(0, transfer.value.indexOf(":")), transfer.value.slice(transfer.value.indexOf(":") + 1)];
    if (!kind) return;
    const body = kind === "queue" ? { queue: target } : { agent_id: target };
    try {
      await api(`/api/v1/conversations/${encodeURIComponent(open)}/transfer`, { method: "POST", body: JSON.stringify(body) });
      await show(open);
    } catch (error) { say(error.message); }
    await refresh();
  });
  // Snooze: out of "Mine" until the time, or until the customer writes.
  snooze.addEventListener("change", async () => {
    if (snooze.value === "") return;
    try {
      await api(`/api/v1/conversations/${encodeURIComponent(open)}/snooze`, { method: "POST", body: JSON.stringify({ minutes: Number(snooze.value) }) });
      await show(open);
    } catch (error) { say(error.message); }
    await refresh();
  });
  // While the agent types, the customer's page shows it (a notice every 3 s at most).
  let typingSent = 0;
  input.addEventListener("input", () => {
    if (send.hidden || !open || Date.now() - typingSent < 3000) return;
    typingSent = Date.now();
    api(`/api/v1/conversations/${encodeURIComponent(open)}/typing`, { method: "POST", body: "{}" }).catch(() => {});
  });
  // A canned reply fills the composer; the agent edits it before sending.
  canned.addEventListener("change", () => {
    if (canned.selectedIndex > 0) input.value = canned.value;
    canned.selectedIndex = 0;
    input.focus();
  });
  noteButton.addEventListener("click", async () => {
    const text = input.value.trim();
    if (!text) return;
    try {
      await api(`/api/v1/conversations/${encodeURIComponent(open)}/notes`, { method: "POST", body: JSON.stringify({ text }) });
      input.value = "";
      await show(open);
    } catch (error) { say(error.message); }
  });
  // An agent's own status: available agents are routed to.
  const status = document.getElementById("inbox-status");
  if (status) {
    status.addEventListener("change", async () => {
      try {
        await api("/api/v1/agents/me/status", { method: "PUT", body: JSON.stringify({ status: status.value }) });
        say("");
      } catch (error) { say(error.message); }
    });
  }
  composer.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    try {
      await api(`/api/v1/conversations/${encodeURIComponent(open)}/messages`, { method: "POST", body: JSON.stringify({ text }) });
      input.value = "";
      await show(open);
    } catch (error) { say(error.message); }
  });

  // Live: notices read the list again, and the open conversation if it changed — at most once per
  // quarter second however many arrive (a busy workspace sends many).
  let pending = null;
  let reshow = false;
  const later = () => {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      refresh().catch((error) => say(error.message));
      if (reshow && open) show(open).catch((error) => say(error.message));
      reshow = false;
    }, 250);
  };
  let delay = 250;
  const connect = () => {
    const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/inbox/ws`);
    socket.onopen = () => { delay = 250; liveState.textContent = "Live"; refresh().catch((error) => say(error.message)); };
    socket.onmessage = (event) => {
      const notice = JSON.parse(event.data);
      if (notice.typing) {
        if (notice.typing === "customer" && notice.conversation_id === open) {
          typingNote.hidden = false;
          clearTimeout(typingNote.timer);
          typingNote.timer = setTimeout(() => { typingNote.hidden = true; }, 5000);
        }
        return;
      }
      if (notice.conversation_id === null || notice.conversation_id === open) reshow = true;
      later();
    };
    socket.onclose = () => {
      liveState.textContent = "Reconnecting…";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 5000);
    };
  };
  connect();
}
