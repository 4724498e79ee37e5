// pusher-js (unchanged) subscribed to "news" and "other": prints its socket_id once both
// subscriptions succeeded, then every message the connection decodes (event, channel,
// data), so a test can check that nothing but Pusher events reaches it.
// Usage: node pusher_js_raw_messages.mjs <port> <key>
import Pusher from "pusher-js";

const [port, key] = process.argv.slice(2);
const out = (value) => console.log(JSON.stringify(value));
const pusher = new Pusher(key, {
  cluster: "mt1",
  wsHost: "127.0.0.1",
  wsPort: Number(port),
  forceTLS: false,
  enabledTransports: ["ws"],
  disableStats: true,
});
let subscribed = 0;
for (const name of ["news", "other"]) {
  pusher.subscribe(name).bind("pusher:subscription_succeeded", () => {
    if (++subscribed === 2) {
      out({ socket_id: pusher.connection.socket_id });
      pusher.connection.bind("message", (message) =>
        out({ message: { event: message.event ?? null, channel: message.channel ?? null } }),
      );
    }
  });
}
process.on("SIGTERM", () => {
  pusher.disconnect();
  process.exit(0);
});
