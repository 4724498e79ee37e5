// The live newsroom demo: one pushwire subscription rendered as a feed.
//
// Query parameters: ?ws=ws://host:port/ws (default: same host, port 8080)
// and ?channel=feed:news. The channel's namespace should keep history so the
// page can backfill on load and recover after reconnects; allow_publish = "all"
// enables the compose box.
/* global Pushwire */
(function () {
  'use strict';

  const params = new URLSearchParams(location.search);
  const url = params.get('ws') || `ws://${location.hostname || '127.0.0.1'}:8080/ws`;
  const channel = params.get('channel') || 'feed:news';

  const $ = (id) => document.getElementById(id);
  const status = $('status');
  const feed = $('feed');
  const notice = $('notice');
  const stats = { stories: 0, reconnects: 0, recovered: 0, connects: 0 };
  const seen = new Set(); // "epoch:offset" of rendered stories
  window.feedStats = stats; // read by the browser test

  $('channel-name').textContent = channel;

  const client = new Pushwire.Client(url, { minReconnectDelay: 300, maxReconnectDelay: 5000 });
  const sub = client.subscribe(channel, { recover: true });

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function showNotice(text, ok) {
    notice.hidden = false;
    notice.className = ok ? 'notice ok' : 'notice';
    notice.textContent = text;
  }

  function updateStats(offset) {
    $('stat-stories').textContent = String(stats.stories);
    $('stat-reconnects').textContent = String(stats.reconnects);
    $('stat-recovered').textContent = String(stats.recovered);
    if (offset !== undefined) $('stat-offset').textContent = String(offset);
  }

  function story(data) {
    if (data && typeof data === 'object' && !(data instanceof Uint8Array)) return data;
    return { headline: data instanceof Uint8Array ? `${data.length} bytes of binary data` : String(data) };
  }

  function render(data, offset, epoch) {
    if (offset !== undefined) {
      const key = `${epoch}:${offset}`;
      if (seen.has(key)) return;
      seen.add(key);
    }
    const s = story(data);
    const item = document.createElement('li');
    item.className = 'story';
    if (offset !== undefined) item.dataset.offset = String(offset);
    const head = document.createElement('header');
    const tag = document.createElement('span');
    const category = String(s.category || 'World');
    tag.className = `tag ${category.toLowerCase()}`;
    tag.textContent = category;
    const time = document.createElement('time');
    time.textContent = new Date(s.at || Date.now()).toLocaleTimeString();
    const where = document.createElement('span');
    where.className = 'offset';
    where.textContent = offset === undefined ? '' : `#${offset}`;
    head.append(tag, time, where);
    const h2 = document.createElement('h2');
    h2.textContent = String(s.headline || '(untitled)');
    item.append(head, h2);
    if (s.body) {
      const p = document.createElement('p');
      p.textContent = String(s.body);
      item.append(p);
    }
    feed.prepend(item);
    stats.stories += 1;
    $('empty').hidden = true;
    updateStats(offset);
  }

  function divider(text) {
    const item = document.createElement('li');
    item.className = 'divider';
    item.textContent = text;
    feed.prepend(item);
  }

  client.on('connecting', (e) => {
    setStatus('connecting', 'reconnecting…');
    if (e.code !== 0) {
      stats.reconnects += 1;
      $('meta').textContent = `connection lost (${e.code}${e.reason ? `: ${e.reason}` : ''})`;
      updateStats();
    }
  });
  client.on('connected', (e) => {
    stats.connects += 1;
    setStatus('connected', 'live');
    $('meta').textContent = `node ${e.node} · ${client.encoding}`;
  });
  client.on('disconnected', (e) => {
    setStatus('disconnected', 'offline');
    $('meta').textContent = `stopped (${e.code}${e.reason ? `: ${e.reason}` : ''})`;
  });

  sub.on('subscribed', async (e) => {
    if (e.wasRecovering && e.recovered) {
      stats.recovered += 1;
      showNotice('Reconnected: every story published meanwhile was recovered.', true);
      updateStats();
      return;
    }
    if (e.wasRecovering) {
      showNotice('Reconnected, but the server lost its history (it restarted): stories from before may be missing.');
      divider('server restarted · history reset');
    }
    // Backfill the latest 20 stories (only those not shown yet): `reverse` gives the newest
    // first; render them oldest first, since each story goes on top.
    try {
      const history = await sub.history({ limit: 20, reverse: true });
      for (const m of history.messages.slice().reverse()) render(m.data, m.offset, history.epoch);
    } catch (err) {
      if (err.code !== Pushwire.ErrorCode.NotAvailable) console.warn('history failed', err);
    }
  });
  sub.on('message', (m) => render(m.data, m.offset, m.epoch));
  sub.on('gap', () => showNotice('Some stories were missed; reload to see everything.'));
  sub.on('error', (e) => showNotice(`Subscription error ${e.error.code || ''}: ${e.error.message}`));

  $('compose').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('compose-headline');
    const button = event.target.querySelector('button');
    button.disabled = true;
    try {
      await sub.publish({ headline: input.value, category: $('compose-category').value, at: Date.now() });
      input.value = '';
    } catch (err) {
      showNotice(`Could not publish (${err.code || err.name}): ${err.message}`);
    } finally {
      button.disabled = false;
    }
  });

  setStatus('connecting', 'connecting…');
  client.connect();
})();
