// A Server-Sent Events reader in Node: the `eventsource` npm package, unchanged.
// Usage: node sse_node.mjs <url> <channel>... [--header Name=Value]...
// Prints one JSON line per observation: {"open": n} on each (re)connection,
// {"channel", "id", "data"} per event, {"event": "recovered", "data"} for the
// server's recovery notices, {"error": ...} when the stream drops.
import { EventSource } from 'eventsource';

const args = process.argv.slice(2);
const url = args.shift();
const channels = [];
const headers = {};
while (args.length) {
  const arg = args.shift();
  if (arg === '--header') {
    const [name, ...value] = args.shift().split('=');
    headers[name] = value.join('=');
  } else {
    channels.push(arg);
  }
}

const out = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
const es = new EventSource(url, {
  fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, ...headers } }),
});
let opens = 0;
es.onopen = () => out({ open: ++opens });
es.onerror = (err) => out({ error: err?.message ?? 'error', code: err?.code ?? null });
for (const channel of channels) {
  es.addEventListener(channel, (e) => out({ channel, id: e.lastEventId, data: JSON.parse(e.data) }));
}
es.addEventListener('recovered', (e) => out({ event: 'recovered', data: JSON.parse(e.data) }));
process.on('SIGTERM', () => { es.close(); process.exit(0); });
