// pusher-js's browser build, unchanged, in real Chromium (/usr/bin/chromium, driven by
// playwright-core): a local HTTP server serves a page and node_modules/pusher-js's
// dist/web/pusher.js; the page connects to pushwire, subscribes, and reports what it sees.
// argv[2]: JSON {host, port, key, channel, event}. One JSON line per observation:
// {"kind": "subscribed"} then {"kind": "event", "data": ...}.
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const config = JSON.parse(process.argv[2]);
const print = (line) => console.log(JSON.stringify(line));
const library = readFileSync(new URL("node_modules/pusher-js/dist/web/pusher.js", import.meta.url));
const page = `<!doctype html><html><head><script src="/pusher.js"></script></head><body><script>
  const pusher = new Pusher(${JSON.stringify(config.key)}, {
    cluster: "mt1", wsHost: ${JSON.stringify(config.host)}, wsPort: ${config.port},
    forceTLS: false, enabledTransports: ["ws"], disableStats: true,
  });
  const channel = pusher.subscribe(${JSON.stringify(config.channel)});
  channel.bind("pusher:subscription_succeeded", () => window.report({ kind: "subscribed" }));
  channel.bind(${JSON.stringify(config.event)}, (data) => window.report({ kind: "event", data }));
</script></body></html>`;

const http = createServer((request, response) => {
  if (request.url === "/pusher.js") {
    response.writeHead(200, { "content-type": "text/javascript" }).end(library);
  } else {
    response.writeHead(200, { "content-type": "text/html" }).end(page);
  }
});
await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
const tab = await browser.newPage();
await tab.exposeFunction("report", print);
tab.on("console", (message) => process.stderr.write(`[page] ${message.text()}\n`));
await tab.goto(`http://127.0.0.1:${http.address().port}/`);
// Runs until the test kills it (the test waits for the lines it needs).
process.on("SIGTERM", async () => {
  await browser.close();
  http.close();
  process.exit(0);
});
