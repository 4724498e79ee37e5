// Laravel Echo (with pusher-js), unchanged, as a Laravel front end uses it:
// Echo.channel(public).listen(".Event"), Echo.private(name).listen(".Event") and
// Echo.join(presence).here/joining/leaving. Authorisation signs with the `pusher`
// server SDK, as the app's /broadcasting/auth route would.
// argv[2]: JSON {host, port, appId, key, secret, broadcaster, user, public, private,
// presence, event}. One JSON line per observation on stdout:
// {"kind": "subscribed"|"event"|"here"|"joining"|"leaving"|"error", "channel", ...}.
import Echo from "laravel-echo";
import Pusher from "pusher-js";
import PusherServer from "pusher";

const config = JSON.parse(process.argv[2]);
const server = new PusherServer({ appId: config.appId, key: config.key, secret: config.secret });
const print = (line) => console.log(JSON.stringify(line));

const echo = new Echo({
  broadcaster: config.broadcaster,
  key: config.key,
  cluster: "mt1",
  wsHost: config.host,
  wsPort: config.port,
  wssPort: config.port,
  forceTLS: false,
  enabledTransports: ["ws"],
  disableStats: true,
  withoutInterceptors: true,
  Pusher,
  authorizer: (channel) => ({
    authorize: (socketId, callback) => {
      const presence = channel.name.startsWith("presence-")
        ? { user_id: config.user, user_info: { name: `User ${config.user}` } }
        : undefined;
      callback(null, server.authorizeChannel(socketId, channel.name, presence));
    },
  }),
});

const event = `.${config.event}`;
const watch = (channel, name) =>
  channel
    .subscribed(() => print({ kind: "subscribed", channel: name }))
    .error((error) => print({ kind: "error", channel: name, error }))
    .listen(event, (data) => print({ kind: "event", channel: name, data }));

if (config.public) watch(echo.channel(config.public), config.public);
if (config.private) watch(echo.private(config.private), `private-${config.private}`);
if (config.presence) {
  const name = `presence-${config.presence}`;
  watch(echo.join(config.presence), name)
    .here((users) => print({ kind: "here", channel: name, users: users.map((u) => u.name).sort() }))
    .joining((user) => print({ kind: "joining", channel: name, user: user.name }))
    .leaving((user) => print({ kind: "leaving", channel: name, user: user.name }));
}
