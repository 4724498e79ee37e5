// A client that stops reading is evicted (close 4008) and, once it reads
// again, reconnects and recovers everything it missed, each message once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestServer } from '../support/server.mjs';
import { Recorder, connectedClient, subscribed } from '../support/clients.mjs';
import { recordingWebSocket } from '../support/sockets.mjs';
import { collect, waitForEvent } from '../support/wait.mjs';

// The server bounds a recovery to what fits in twice the queue (docs/protocol.md, "Queue
// bounds"), and the client's paused socket absorbs up to its receive buffer (at most
// 6 MiB on Linux loopback) before the server's queue fills. So: 16 MiB published, a
// 9 MiB queue (overflows after at most 6 MiB buffered), and a replay bound of 18 MiB.
const COUNT = 512;
const PAYLOAD = 'x'.repeat(32 * 1024);

for (const encoding of ['json', 'msgpack']) {
  test(`${encoding}: slow-consumer eviction, then recovery of every message`, async (t) => {
    const server = await TestServer.start({
      overrides: {
        server: { socket_send_buffer_bytes: 16384 },
        client: { queue_max_messages: 1000, queue_max_bytes: 9 * 1024 * 1024, write_timeout_secs: 30 },
      },
    });
    t.after(() => server.dispose());
    const recording = recordingWebSocket();
    const client = await connectedClient(t, server, { encoding, websocket: recording.WebSocket });
    const channel = `feed:slow-${encoding}`;
    const { sub } = await subscribed(client, channel, { recover: true });
    const recorder = new Recorder(sub);
    const gaps = collect(sub, 'gap');
    const closes = collect(client, 'connecting');
    await server.publish(channel, { n: 0, pad: '' });
    await recorder.until(1);

    // Stop reading from the TCP socket: the kernel buffers fill, then the
    // server's queue for this client overflows.
    const tcp = recording.sockets.at(-1)._socket;
    tcp.pause();
    const evicted = waitForEvent(client, 'connecting', { timeout: 30000, what: 'the eviction to reach the client' });
    const resubscribed = waitForEvent(sub, 'subscribed', { timeout: 30000, what: 'the resubscribe after the eviction' });
    // Published 20 at a time, so offsets (not n) give the order: remember which n got which offset.
    const nAtOffset = new Map([[1, 0]]);
    for (let n = 1; n <= COUNT; n += 20) {
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const { offset } = await server.publish(channel, { n: n + i, pad: PAYLOAD });
          nAtOffset.set(offset, n + i);
        }),
      );
    }
    tcp.resume();
    const event = await evicted;
    assert.equal(event.code, 4008, `evicted as a slow consumer (close ${event.code} "${event.reason}")`);

    const again = await resubscribed;
    assert.equal(again.wasRecovering, true);
    const evictions = closes.filter((c) => c.code === 4008).length;
    assert.equal(again.recovered, true, `recovery delivered (evictions before the resubscribe settled: ${evictions})`);
    await recorder.until(COUNT + 1, 20000);
    assert.deepEqual(recorder.offsets, Array.from({ length: COUNT + 1 }, (_, i) => i + 1), 'every offset once, in order');
    assert.deepEqual(
      recorder.data.map((d) => d.n),
      recorder.offsets.map((offset) => nAtOffset.get(offset)),
      'each offset carries the message published at it',
    );
    assert.deepEqual(gaps, []);
    assert.equal(sub.state, 'subscribed');
  });
}
