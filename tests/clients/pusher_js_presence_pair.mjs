// Two pusher-js clients (unchanged) in presence-room on two nodes: alice on the first
// port, bob on the second. Prints alice's view: the here-list, bob's member_added, and
// then (after the test has killed bob's node) bob's member_removed. Channel auth comes
// from the `pusher` server SDK.
// Usage: node pusher_js_presence_pair.mjs <alice_port> <bob_port> <app_id> <key> <secret>
import Pusher from "pusher-js";
import PusherServer from "pusher";

const [alicePort, bobPort, appId, key, secret] = process.argv.slice(2);
const sdk = new PusherServer({ appId, key, secret, host: "127.0.0.1", port: alicePort, useTLS: false });
const out = (value) => console.log(JSON.stringify(value));

function client(user, port) {
  return new Pusher(key, {
    cluster: "mt1",
    wsHost: "127.0.0.1",
    wsPort: Number(port),
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        callback(null, sdk.authorizeChannel(socketId, channelName, { user_id: user }));
      },
    },
  });
}
const subscribed = (channel) =>
  new Promise((resolve, reject) => {
    channel.bind("pusher:subscription_succeeded", resolve);
    channel.bind("pusher:subscription_error", reject);
  });
const once = (channel, event) => new Promise((resolve) => channel.bind(event, resolve));

const alice = client("alice", alicePort);
const room = alice.subscribe("presence-room");
const here = await subscribed(room);
out({ here: Object.keys(here.members).sort() });
const added = once(room, "pusher:member_added");
const removed = once(room, "pusher:member_removed");
const bob = client("bob", bobPort);
await subscribed(bob.subscribe("presence-room"));
out({ member_added: (await added).id });
out({ member_removed: (await removed).id, members: Object.keys(room.members.members).sort() });
alice.disconnect();
bob.disconnect();
process.exit(0);
