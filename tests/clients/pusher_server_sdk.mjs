// Drives the official `pusher` npm server SDK, unchanged, against a pushwire node.
// argv[2]: JSON {host, port, appId, key, secret, calls: [[method, ...args], ...]}.
// Each call is made in order; one JSON line per call on stdout:
// {"call": method, "status": 200, "body": {...}} or {"call", "status", "error", "body"}.
import Pusher from "pusher";

const config = JSON.parse(process.argv[2]);
const pusher = new Pusher({
  appId: config.appId,
  key: config.key,
  secret: config.secret,
  host: config.host,
  port: String(config.port),
  useTLS: false,
});

for (const [method, ...args] of config.calls) {
  try {
    const response = await pusher[method](...args);
    const text = await response.text();
    console.log(JSON.stringify({ call: method, status: response.status, body: JSON.parse(text) }));
  } catch (error) {
    let body = error.body ?? null;
    try {
      body = JSON.parse(body);
    } catch {}
    console.log(
      JSON.stringify({ call: method, status: error.status ?? null, error: String(error.message), body }),
    );
  }
}
