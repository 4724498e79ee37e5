// pusher-js (unchanged) against pushwire's /app/{key}: public, private, client events,
// presence and sign-in. Channel and user auth come from the `pusher` server SDK's own
// authorizeChannel/authenticateUser. Prints one JSON line per observation; the Rust test
// (tests/pusher_ws.rs) triggers server events when it reads the "ready" lines.
// Usage: node pusher_js_session.mjs <port> <app_id> <key> <secret>
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
        const presence = channelName.startsWith("presence-")
          ? { user_id: user, user_info: { name: user.toUpperCase() } }
          : undefined;
        callback(null, sdk.authorizeChannel(socketId, channelName, presence));
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, callback) => {
        callback(null, sdk.authenticateUser(socketId, { id: user }));
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

const alice = client("alice");
const bob = client("bob");
const connected = (p) => new Promise((resolve) => p.connection.bind("connected", resolve));
await Promise.all([connected(alice), connected(bob)]);
out({ connected: [alice.connection.socket_id, bob.connection.socket_id] });

// Public: the test publishes "greet" once it reads this line.
const news = alice.subscribe("news;1");
await subscribed(news);
const greeted = once(news, "greet");
out({ ready: "public" });
out({ public: await greeted });

// Private + client events: reach the other subscriber, never the sender.
const [chatA, chatB] = [alice.subscribe("private-chat"), bob.subscribe("private-chat")];
await Promise.all([subscribed(chatA), subscribed(chatB)]);
let aliceOwn = 0;
chatA.bind("client-typing", () => (aliceOwn += 1));
const bobGot = once(chatB, "client-typing");
chatA.trigger("client-typing", { from: "alice" });
out({ client_event: await bobGot });
const aliceGot = once(chatA, "client-reply");
chatB.trigger("client-reply", { from: "bob" });
await aliceGot;
out({ echoed_to_sender: aliceOwn });

// Presence: here-list, member_added on bob's arrival, member_removed on his leaving.
const roomA = alice.subscribe("presence-room");
const here = await subscribed(roomA);
out({ here_alice: Object.keys(here.members).sort(), count: here.count });
const added = once(roomA, "pusher:member_added");
const roomB = bob.subscribe("presence-room");
const hereB = await subscribed(roomB);
out({ here_bob: Object.keys(hereB.members).sort(), count: hereB.count });
out({ member_added: await added });
const removed = once(roomA, "pusher:member_removed");
bob.unsubscribe("presence-room");
out({ member_removed: await removed });

// Sign-in, then the test sends to #server-to-user-alice.
const notice = new Promise((resolve) => alice.user.bind("notice", resolve));
alice.signin();
await alice.user.signinDonePromise;
out({ ready: "signin" });
out({ to_user: await notice });

alice.disconnect();
bob.disconnect();
process.exit(0);
