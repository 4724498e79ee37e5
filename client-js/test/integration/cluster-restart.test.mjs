// Two nodes sharing a Redis broker: one restarts while messages are published
// through the other. The client reconnects to the restarted node and, because
// the history lives in Redis, recovers every message it missed: nothing lost,
// nothing duplicated.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestServer, testConfig } from '../support/server.mjs';
import { RedisServer } from '../support/redis.mjs';
import { Recorder, connectedClient, subscribed } from '../support/clients.mjs';
import { collect, waitForEvent } from '../support/wait.mjs';

for (const encoding of ['json', 'msgpack']) {
  test(`${encoding}: Redis broker — a node restarts, messages published meanwhile elsewhere are recovered`, async (t) => {
    const redis = await RedisServer.start();
    let nodeA;
    let nodeB;
    // One hook, so the nodes stop before their Redis does.
    t.after(async () => {
      await nodeA?.dispose();
      await nodeB?.dispose();
      await redis.stop();
    });
    const config = (name) =>
      testConfig({ node_name: name, broker: { kind: 'redis' }, redis: { url: redis.url, key_prefix: `client-js-${encoding}` } });
    nodeA = await TestServer.start({ config: config('node-a') });
    nodeB = await TestServer.start({ config: config('node-b') });

    const client = await connectedClient(t, nodeA, { encoding });
    const channel = `feed:cluster-${encoding}`;
    const { sub, event } = await subscribed(client, channel, { recover: true });
    const recorder = new Recorder(sub);
    const gaps = collect(sub, 'gap');
    for (let n = 1; n <= 3; n++) await nodeB.publish(channel, n);
    await recorder.until(3);

    const connecting = waitForEvent(client, 'connecting', { timeout: 15000 });
    const exit = await nodeA.stop();
    assert.equal(exit.code, 0);
    assert.equal((await connecting).code, 1001);
    // Node A is down: these reach Redis (and history) through node B only.
    for (let n = 4; n <= 8; n++) await nodeB.publish(channel, n);

    const resubscribed = waitForEvent(sub, 'subscribed', { timeout: 15000, what: 'the resubscribe on the restarted node' });
    await nodeA.launch(nodeA.port);
    const again = await resubscribed;
    assert.equal(again.wasRecovering, true);
    assert.equal(again.recovered, true, 'history in Redis survives the node restart');
    // The stream began with message 1 (the subscribe before it saw no stream, offset 0).
    assert.equal(again.epoch, recorder.messages[0].epoch, 'same epoch: the stream was not lost');
    await recorder.until(8);
    await nodeB.publish(channel, 9);
    await recorder.until(9);
    assert.deepEqual(recorder.data, [1, 2, 3, 4, 5, 6, 7, 8, 9], 'each message once, in order');
    assert.deepEqual(recorder.offsets, recorder.offsets.map((_, i) => event.offset + i + 1));
    assert.deepEqual(gaps, []);
  });
}
