// Checks one webhook request with the `pusher` server SDK's own validator, unchanged:
// `pusher.webhook({headers, rawBody}).isValid()`.
// Usage: node pusher_webhook_verify.mjs <app key> <app secret> <headers JSON> <raw body>
// Prints {"valid": bool, "valid_with_wrong_secret": bool, "events": [...], "time_ms": n}.
import Pusher from "pusher";

const [key, secret, headersJson, rawBody] = process.argv.slice(2);
const headers = JSON.parse(headersJson);
const check = (s) => new Pusher({ appId: "1", key, secret: s }).webhook({ headers, rawBody });
const webhook = check(secret);
const valid = webhook.isValid();
console.log(
  JSON.stringify({
    valid,
    valid_with_wrong_secret: check(secret + "x").isValid(),
    events: valid ? webhook.getEvents() : null,
    time_ms: valid ? webhook.getTime().getTime() : null,
  }),
);
