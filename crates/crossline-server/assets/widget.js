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

  const api = {
    loaded: true,
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
