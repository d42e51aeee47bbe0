// Crossline's push service worker. Crossline.subscribePush() registers it; a push message is the JSON
// {"title", "body", "url"?, "icon"?, "data"?, "delivery_id"} (docs/channels/webpush.md), shown as a
// notification whose click opens `url`. Serve it from your site's origin (service workers are
// same-origin): a file holding `importScripts("https://CROSSLINE/widget-sw.js")` will do.
self.addEventListener("push", (event) => {
  let message = {};
  try {
    message = event.data ? event.data.json() : {};
  } catch (_) {
    message = { body: event.data ? event.data.text() : "" };
  }
  event.waitUntil(self.registration.showNotification(String(message.title || ""), {
    body: String(message.body || ""),
    icon: message.icon || undefined,
    tag: message.delivery_id || undefined,
    data: { url: message.url || null, delivery_id: message.delivery_id || null, data: message.data || null },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = event.notification.data && event.notification.data.url;
  // Only web pages: a message cannot make the browser open another scheme.
  if (url && /^https?:\/\//i.test(url)) event.waitUntil(self.clients.openWindow(url));
});
