// pusher-js (unchanged) staying connected to one address while the test stops, kills and
// restarts the node behind it: prints every connection state change, each (re)subscription
// to "news" and each "headline" event, so the test can await each step.
// Usage: node pusher_js_reconnect.mjs <port> <key>
import Pusher from "pusher-js";

const [port, key] = process.argv.slice(2);
const out = (value) => { console.log(JSON.stringify(value)); console.error(Date.now() % 100000, JSON.stringify(value)); };
const pusher = new Pusher(key, {
  cluster: "mt1",
  wsHost: "127.0.0.1",
  wsPort: Number(port),
  forceTLS: false,
  enabledTransports: ["ws"],
  disableStats: true,
});
pusher.connection.bind("state_change", ({ current }) => out({ state: current }));
let subscriptions = 0;
const news = pusher.subscribe("news");
news.bind("pusher:subscription_succeeded", () => out({ subscribed: ++subscriptions }));
news.bind("headline", (data) => out({ headline: data }));
process.on("SIGTERM", () => {
  pusher.disconnect();
  process.exit(0);
});
