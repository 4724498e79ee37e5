// Compiled (not run) by test/unit/types.test.mjs against the published
// declarations: the API must type-check the way the README uses it.
import {
  Client,
  ConnectionClosedError,
  ErrorCode,
  ServerError,
  TimeoutError,
  type ConnectedEvent,
  type HistoryResult,
  type PresenceResult,
  type PresenceStats,
  type Publication,
  type Subscription,
  type SubscribedEvent,
} from 'pushwire-client';

export async function usage(): Promise<void> {
  const client = new Client('ws://127.0.0.1:8080/ws', {
    getToken: async () => 'jwt',
    encoding: 'msgpack',
    minReconnectDelay: 250,
    tokenRefreshMargin: 10_000,
  });
  client.on('connected', (e: ConnectedEvent) => console.log(e.clientId, e.pingInterval));
  client.on('disconnected', ({ code, reason }) => console.log(code.toFixed(), reason.trim()));
  client.connect();

  const sub: Subscription = client.subscribe('feed:news', { recover: true });
  sub.on('message', (m: Publication) => console.log(m.offset ?? 0, m.data));
  sub.on('subscribed', (e: SubscribedEvent) => {
    if (e.wasRecovering && !e.recovered) console.log('reload');
  });
  const position: { offset: number; epoch: string } | undefined = sub.position;
  console.log(position);

  try {
    const { offset } = await client.publish('feed:news', { title: 'x' });
    const history: HistoryResult = await sub.history({ limit: 10 });
    const { clients } = await client.presence('feed:news');
    console.log(offset, history.messages[0]?.offset, clients[0]?.clientId);
    let cursor: string | undefined;
    do {
      const page: PresenceResult = await sub.presence({ limit: 100, cursor });
      console.log(page.clients.length);
      cursor = page.cursor;
    } while (cursor !== undefined);
    const stats: PresenceStats = await client.presenceStats('feed:news');
    console.log(stats.clients.toFixed(), stats.users.toFixed());
  } catch (err) {
    if (err instanceof ServerError && err.code === ErrorCode.PermissionDenied) return;
    if (err instanceof TimeoutError || err instanceof ConnectionClosedError) return;
    throw err;
  }
  // @ts-expect-error: a presence cursor is the opaque string from the previous page
  await client.presence('feed:news', { cursor: 3 });
  // @ts-expect-error: encoding is 'json' | 'msgpack'
  new Client('ws://h/ws', { encoding: 'cbor' });
  // @ts-expect-error: internal members are not part of the public types
  sub._onMessage({ channel: 'x', data: 1 });
}
