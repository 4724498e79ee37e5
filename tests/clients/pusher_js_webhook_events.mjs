// pusher-js (unchanged) doing what Pusher webhooks report: alice joins presence-room and
// subscribes to an empty cache channel (cache_miss), bob joins presence-room, alice sends
// a client event there, bob leaves. Channel auth comes from the `pusher` server SDK.
// Prints one JSON line per step; the Rust test (tests/webhooks_pusher.rs) checks the
// webhooks these steps cause.
// Usage: node pusher_js_webhook_events.mjs <port> <app_id> <key> <secret>
import Pusher from "pusher-js";
import PusherServer from "pusher";

const [port, appId, key, secret] = process.argv.slice(2);
const sdk = new PusherServer({ appId, key, secret, host: "127.0.0.1", port, useTLS: false });
const out = (value) => console.log(JSON.stringify(value));

function client(user) {
  return new Pusher(key, {
    cluster: "mt1",
    wsHost: "127.0.0.1",
    wsPort: Number(port),
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const presence = channelName.startsWith("presence-") ? { user_id: user } : undefined;
        callback(null, sdk.authorizeChannel(socketId, channelName, presence));
      },
    },
  });
}
const connected = (p) => new Promise((resolve) => p.connection.bind("connected", resolve));
const subscribed = (channel) =>
  new Promise((resolve, reject) => {
    channel.bind("pusher:subscription_succeeded", resolve);
    channel.bind("pusher:subscription_error", reject);
  });
const once = (channel, event) => new Promise((resolve) => channel.bind(event, resolve));

const alice = client("alice");
await connected(alice);
const room = alice.subscribe("presence-room");
await subscribed(room);
const cache = alice.subscribe("cache-empty");
const missed = once(cache, "pusher:cache_miss");
await subscribed(cache);
await missed;
out({ alice: alice.connection.socket_id });

const bob = client("bob");
await connected(bob);
const bobRoom = bob.subscribe("presence-room");
const typing = once(bobRoom, "client-typing");
const added = once(room, "pusher:member_added");
await subscribed(bobRoom);
await added;
room.trigger("client-typing", { from: "alice" });
await typing;
const removed = once(room, "pusher:member_removed");
bob.unsubscribe("presence-room");
await removed;
out({ done: true });
// Stays connected until the test ends it, so alice's member_removed is not sent.
