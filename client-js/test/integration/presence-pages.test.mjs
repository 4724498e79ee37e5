// Paged presence and presence_stats against the real server: several
// connections of several users (and anonymous ones) on one channel; walking
// the pages lists every connection exactly once, in the server's order (user,
// then connection), and presenceStats counts connections and distinct users.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { NAMESPACES, TestServer } from '../support/server.mjs';
import { connectedClient, subscribed } from '../support/clients.mjs';
import { mintHs256, nowSecs } from '../support/jwt.mjs';

const SECRET = 'client-js-presence-secret-long-enough';
const token = (sub) => mintHs256(SECRET, { sub, exp: nowSecs() + 3600 });
// A page without `limit` holds at most presence_max_page entries.
const MAX_PAGE = 3;

let server;
before(async () => {
  server = await TestServer.start({
    overrides: {
      auth: { token_hmac_secret: SECRET },
      namespaces: { ...NAMESPACES, room: { presence: true, presence_max_page: MAX_PAGE } },
    },
  });
});
after(() => server?.dispose());

/** Walks `channel`'s presence pages from `cursor` (the start by default); returns the pages. */
async function walk(client, channel, options, cursor = undefined) {
  const pages = [];
  do {
    const page = await client.presence(channel, { ...options, cursor });
    pages.push(page);
    cursor = page.cursor;
    assert.ok(pages.length <= 20, 'the walk ends');
  } while (cursor !== undefined);
  return pages;
}

for (const encoding of ['json', 'msgpack']) {
  describe(`${encoding} encoding`, () => {
    test('limit 2 walks every member exactly once; presenceStats counts clients and unique users', async (t) => {
      const channel = `room:lobby-${encoding}`;
      const users = ['alice', 'bob', 'alice', 'carol', 'carol', 'alice', '', ''];
      const clients = [];
      for (const user of users) {
        const client = await connectedClient(t, server, { encoding, ...(user ? { token: token(user) } : {}) });
        assert.equal(client.connectionInfo.user, user);
        await subscribed(client, channel);
        clients.push(client);
      }
      const [first] = clients;

      const pages = await walk(first, channel, { limit: 2 });
      // Full pages of 2 with a cursor; a cursor after the last full page may lead to one empty page.
      assert.ok(pages.every((p) => p.channel === channel));
      assert.ok(pages.slice(0, -1).every((p) => p.clients.length === 2 && typeof p.cursor === 'string'));
      assert.ok(pages.at(-1).clients.length <= 2 && pages.at(-1).cursor === undefined);
      assert.ok([4, 5].includes(pages.length), `${pages.length} pages for 8 connections`);
      const listed = pages.flatMap((p) => p.clients);
      const expected = clients.map((c) => ({ clientId: c.clientId, user: c.connectionInfo.user }));
      assert.deepEqual(
        listed.map((c) => c.clientId).sort(),
        expected.map((c) => c.clientId).sort(),
        'every connection listed exactly once',
      );
      assert.deepEqual(
        listed,
        [...expected].sort((a, b) => cmp(a.user, b.user) || cmp(a.clientId, b.clientId)),
        'ordered by user, then connection, with each user attached',
      );

      // Without options: one page of presence_max_page, with a cursor to go on from.
      const plain = await first.presence(channel);
      assert.deepEqual(plain.clients, listed.slice(0, MAX_PAGE));
      assert.equal(typeof plain.cursor, 'string');
      const rest = await walk(first, channel, {}, plain.cursor);
      assert.deepEqual([...plain.clients, ...rest.flatMap((p) => p.clients)], listed);

      // 8 connections; users alice, bob, carol, and each anonymous connection counts as one.
      assert.deepEqual(await first.presenceStats(channel), { clients: 8, users: 5 });
      const sub = first.getSubscription(channel);
      assert.deepEqual(await sub.presenceStats(), { clients: 8, users: 5 });
      assert.deepEqual((await sub.presence({ limit: 2 })).clients, listed.slice(0, 2));
    });
  });
}

const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
