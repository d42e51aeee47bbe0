// Crossline web chat widget. One tag on any page:
//
//   <script src="https://crossline.example.com/widget.js" data-write-key="wk_..." async></script>
//
// It adds a chat button in the corner that opens the workspace's chat in a frame, and defines
// `Crossline.identify(userId, traits, {userHash})` so a page that knows its visitor links the chat to
// that customer's profile. Only a verified identify links: with the web chat's identity secret set,
// userHash is the hex HMAC-SHA256, computed by the site's server, of userId followed by
// "\nemail:" + traits.email and "\nphone:" + traits.phone for each it names. Without a secret an
// identify is only a claim, kept on the visitor's own profile. Calls made before the script loaded
// are kept when the page first sets `window.Crossline = window.Crossline || {q: []}` and pushes
// `["identify", userId, traits, {userHash}]` onto `q`. The page hears `crossline:identified`
// (event.detail.verified says whether it linked).
//
// `Crossline.subscribePush({serviceWorker: "/widget-sw.js"})` asks the visitor's permission for
// notifications, registers the service worker (served from the page's own origin; it may just hold
// `importScripts("https://CROSSLINE/widget-sw.js")`), subscribes with the workspace's VAPID key and
// registers the subscription on the visitor's profile (the customer's, once identified). It resolves
// to {subscribed: true} or {subscribed: false, reason}.
//
// In-app messages a campaign left for the visitor are shown once the chat frame has connected: a
// top, middle or bottom banner, a modal or a full-screen message, with up to two buttons. The page
// hears `crossline:in_app` first (event.detail is Pinpoint's InAppMessageCampaign); calling
// preventDefault() on it shows nothing, for a page that draws its own and reports with
// `Crossline.inAppEvent(deliveryId, "displayed" | "clicked" | "dismissed")`. A deep link is handed
// to the page as `crossline:deep_link` (event.detail.link); http(s) links are opened. Add
// data-in-app="off" to the script tag to receive the events but never have messages drawn.
(() => {
  const script = document.currentScript;
  if (!script || window.Crossline && window.Crossline.loaded) return;
  const writeKey = script.dataset.writeKey;
  if (!writeKey) {
    console.error("Crossline widget: add data-write-key=\"wk_...\" to the script tag");
    return;
  }
  const origin = new URL(script.src).origin;
  const queued = (window.Crossline && window.Crossline.q) || [];
  let ready = false;
  let vapidKey = null;
  let pushWaiter = null;
  const outbox = [];

  const button = document.createElement("button");
  button.type = "button";
  button.setAttribute("aria-label", "Chat with us");
  button.setAttribute("data-testid", "crossline-launcher");
  // A speech bubble, drawn (an emoji depends on the visitor's fonts).
  button.innerHTML = '<svg width="26" height="26" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ' +
    'stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M21 12a8 8 0 0 1-11.6 7.1L4 20l1.1-4.6A8 8 0 1 1 21 12z"/></svg>';
  button.style.cssText = "position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;border:0;" +
    "background:#4f46e5;color:#fff;display:flex;align-items:center;justify-content:center;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.25);z-index:2147483646";
  const drawInApp = script.dataset.inApp !== "off";
  const shownInApp = new Set();
  const recordWaiters = new Map();
  const frame = document.createElement("iframe");
  frame.title = "Chat";
  frame.setAttribute("data-testid", "crossline-frame");
  frame.src = `${origin}/widget/frame?write_key=${encodeURIComponent(writeKey)}`;
  frame.style.cssText = "position:fixed;right:20px;bottom:88px;width:min(380px,calc(100vw - 40px));" +
    "height:min(560px,calc(100vh - 120px));border:1px solid #e5e7eb;border-radius:14px;background:#fff;" +
    "box-shadow:0 8px 30px rgba(0,0,0,.2);z-index:2147483647;display:none";
  const open = () => { frame.style.display = "block"; };
  const close = () => { frame.style.display = "none"; };
  button.addEventListener("click", () => (frame.style.display === "none" ? open() : close()));

  const post = (message) => {
    if (ready) frame.contentWindow.postMessage(message, origin);
    else outbox.push(message);
  };
  window.addEventListener("message", (event) => {
    if (event.origin !== origin || event.source !== frame.contentWindow || !event.data) return;
    if (event.data.type === "crossline.ready") {
      ready = true;
      vapidKey = typeof event.data.vapidKey === "string" ? event.data.vapidKey : null;
      outbox.splice(0).forEach((message) => frame.contentWindow.postMessage(message, origin));
    }
    if (event.data.type === "crossline.push_subscribed" && pushWaiter) {
      const settle = pushWaiter;
      pushWaiter = null;
      settle(event.data.ok === true ? { subscribed: true } : { subscribed: false, reason: String(event.data.message || "refused") });
    }
    if (event.data.type === "crossline.in_app" && Array.isArray(event.data.campaigns)) {
      showInApp(event.data.campaigns);
    }
    if (event.data.type === "crossline.in_app_recorded") {
      const settle = recordWaiters.get(String(event.data.deliveryId));
      if (settle) settle(event.data.ok === true);
    }
    if (event.data.type === "crossline.identified") {
      document.dispatchEvent(new CustomEvent("crossline:identified", { detail: { verified: event.data.verified === true } }));
    }
  });

  const whenReady = () => new Promise((resolve) => {
    const check = () => (ready ? resolve() : setTimeout(check, 50));
    check();
  });
  const applicationServerKey = (key) => {
    const text = atob(key.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (key.length % 4)) % 4));
    return Uint8Array.from(text, (c) => c.charCodeAt(0));
  };

  // Reports what the visitor did with an in-app message; resolves once the server has it (or after
  // a second), so a link is followed only after its click is recorded.
  const inAppEvent = (deliveryId, name) => new Promise((resolve) => {
    const id = String(deliveryId);
    const timer = setTimeout(() => { recordWaiters.delete(id); resolve(false); }, 1000);
    recordWaiters.set(id, (ok) => { clearTimeout(timer); recordWaiters.delete(id); resolve(ok); });
    post({ type: "crossline.in_app_event", deliveryId: id, event: name });
  });
  const isHttp = (link) => { try { return ["http:", "https:"].includes(new URL(link, location.href).protocol); } catch { return false; } };
  const LAYOUTS = {
    TOP_BANNER: "top:0;left:0;right:0;border-radius:0 0 12px 12px",
    MIDDLE_BANNER: "top:50%;left:0;right:0;transform:translateY(-50%)",
    BOTTOM_BANNER: "bottom:0;left:0;right:0;border-radius:12px 12px 0 0",
    MOBILE_FEED: "top:50%;left:50%;transform:translate(-50%,-50%);width:min(420px,calc(100vw - 40px));border-radius:14px",
    OVERLAYS: "inset:0;display:flex;flex-direction:column;justify-content:center",
  };
  // Draws one message with DOM text only: nothing in it is read as markup.
  const drawMessage = (campaign) => {
    const message = campaign.InAppMessage || {};
    const content = (message.Content || [])[0] || {};
    const layout = LAYOUTS[message.Layout] ? message.Layout : "MOBILE_FEED";
    const id = String(campaign.DeliveryId);
    const box = document.createElement("div");
    box.setAttribute("data-testid", "crossline-in-app");
    box.setAttribute("role", layout === "MOBILE_FEED" || layout === "OVERLAYS" ? "dialog" : "status");
    box.dataset.layout = layout;
    box.dataset.deliveryId = id;
    box.style.cssText = `position:fixed;${LAYOUTS[layout]};z-index:2147483645;padding:18px 22px;` +
      "box-shadow:0 8px 30px rgba(0,0,0,.25);font:15px/1.45 system-ui,sans-serif;text-align:center;box-sizing:border-box";
    box.style.background = content.BackgroundColor || "#fff";
    const close = async (name) => { box.remove(); await inAppEvent(id, name); };
    const cross = document.createElement("button");
    cross.type = "button";
    cross.textContent = "\u00d7";
    cross.setAttribute("aria-label", "Close");
    cross.setAttribute("data-testid", "crossline-in-app-close");
    cross.style.cssText = "position:absolute;top:6px;right:10px;border:0;background:none;font-size:22px;cursor:pointer;color:inherit";
    cross.addEventListener("click", () => close("dismissed"));
    box.append(cross);
    if (content.ImageUrl && isHttp(content.ImageUrl)) {
      const image = document.createElement("img");
      image.src = content.ImageUrl;
      image.alt = "";
      image.style.cssText = "max-width:100%;max-height:40vh;display:block;margin:0 auto 10px";
      box.append(image);
    }
    for (const [key, tag] of [["HeaderConfig", "strong"], ["BodyConfig", "p"]]) {
      const part = content[key];
      const text = part && (part.Header || part.Body);
      if (!text) continue;
      const element = document.createElement(tag);
      element.textContent = text;
      element.setAttribute("data-testid", key === "HeaderConfig" ? "crossline-in-app-title" : "crossline-in-app-body");
      element.style.cssText = "display:block;margin:0 24px 8px";
      element.style.color = part.TextColor || "#111827";
      box.append(element);
    }
    const row = document.createElement("div");
    row.style.cssText = "display:flex;gap:10px;justify-content:center;flex-wrap:wrap;margin-top:6px";
    for (const key of ["PrimaryBtn", "SecondaryBtn"]) {
      const config = content[key] && content[key].DefaultConfig;
      if (!config || !config.Text) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = config.Text;
      button.setAttribute("data-testid", "crossline-in-app-button");
      button.dataset.action = config.ButtonAction || "CLOSE";
      button.style.cssText = "border:0;padding:9px 18px;border-radius:8px;cursor:pointer;font:inherit";
      button.style.background = config.BackgroundColor || "#4f46e5";
      button.style.color = config.TextColor || "#fff";
      button.addEventListener("click", async () => {
        const link = config.Link;
        if (config.ButtonAction === "LINK" || config.ButtonAction === "DEEP_LINK") {
          await close("clicked");
          if (config.ButtonAction === "LINK" && isHttp(link)) location.assign(link);
          else document.dispatchEvent(new CustomEvent("crossline:deep_link", { detail: { link, deliveryId: id } }));
        } else {
          await close("dismissed");
        }
      });
      row.append(button);
    }
    if (row.childElementCount) box.append(row);
    document.body.append(box);
    inAppEvent(id, "displayed");
  };
  // The most urgent message not yet shown on this page (Pinpoint's Priority: 1 first).
  const showInApp = (campaigns) => {
    const waiting = campaigns
      .filter((campaign) => campaign && campaign.DeliveryId && !shownInApp.has(String(campaign.DeliveryId)))
      .sort((a, b) => (a.Priority || 3) - (b.Priority || 3));
    const campaign = waiting[0];
    if (!campaign) return;
    shownInApp.add(String(campaign.DeliveryId));
    const announced = new CustomEvent("crossline:in_app", { detail: campaign, cancelable: true });
    if (!document.dispatchEvent(announced) || !drawInApp) return;
    if (document.body) drawMessage(campaign);
    else document.addEventListener("DOMContentLoaded", () => drawMessage(campaign));
  };

  const api = {
    loaded: true,
    inAppEvent,
    async subscribePush(options) {
      const worker = (options && options.serviceWorker) || "/widget-sw.js";
      if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
        return { subscribed: false, reason: "this browser cannot receive push messages" };
      }
      const permission = await Notification.requestPermission();
      if (permission !== "granted") return { subscribed: false, reason: `notifications are ${permission}` };
      await whenReady();
      if (!vapidKey) return { subscribed: false, reason: "the chat frame gave no VAPID key" };
      const registration = await navigator.serviceWorker.register(worker);
      await navigator.serviceWorker.ready;
      const subscription = (await registration.pushManager.getSubscription()) ||
        (await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: applicationServerKey(vapidKey) }));
      if (pushWaiter) return { subscribed: false, reason: "a subscription is already being registered" };
      const answer = new Promise((resolve) => { pushWaiter = resolve; });
      post({ type: "crossline.push", subscription: subscription.toJSON() });
      return answer;
    },
    open,
    close,
    identify(userId, traits, options) {
      if (userId === undefined || userId === null || String(userId) === "") {
        console.error("Crossline.identify: give the customer's user id");
        return;
      }
      post({ type: "crossline.identify", userId: String(userId), traits: traits || {}, userHash: options && options.userHash });
    },
  };
  window.Crossline = api;
  const mount = () => { document.body.append(frame, button); };
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
  for (const [method, ...args] of queued) if (typeof api[method] === "function") api[method](...args);
})();
