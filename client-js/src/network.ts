// Network: the browser's `online` and `offline` events.
//
// A laptop that changes networks keeps its dead socket open until the ping
// watchdog notices; the browser knows sooner. `offline` drops the socket at
// once, `online` reconnects without waiting out the backoff delay.

import type { NetworkEventTarget } from './options.js';

/** Listens for online/offline on `target`; returns the function that stops listening. */
export function watchNetwork(
  target: NetworkEventTarget,
  handlers: { online: () => void; offline: () => void },
): () => void {
  const online = (): void => handlers.online();
  const offline = (): void => handlers.offline();
  target.addEventListener('online', online);
  target.addEventListener('offline', offline);
  return () => {
    target.removeEventListener('online', online);
    target.removeEventListener('offline', offline);
  };
}
