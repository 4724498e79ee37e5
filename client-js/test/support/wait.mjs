// Awaiting events with a deadline: every wait in the tests is bounded and a
// missed deadline fails the test with a message saying what never happened.

/** Resolves with the next `event` from `emitter` that passes `filter`. */
export function waitForEvent(emitter, event, { timeout = 5000, filter = () => true, what } = {}) {
  return new Promise((resolve, reject) => {
    const listener = (value) => {
      if (!filter(value)) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(value);
    };
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`timed out after ${timeout} ms waiting for ${what ?? `event "${event}"`}`));
    }, timeout);
    emitter.on(event, listener);
  });
}

/** Resolves when `predicate()` turns true, checked whenever `emitter` emits `event`. */
export function waitUntil(emitter, event, predicate, { timeout = 5000, what } = {}) {
  if (predicate()) return Promise.resolve();
  return waitForEvent(emitter, event, { timeout, filter: () => predicate(), what }).then(() => undefined);
}

/** Rejects if `promise` does not settle within `timeout` ms. */
export function withTimeout(promise, timeout, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeout} ms waiting for ${what}`)), timeout);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Collects every emitted value of `event` into an array. */
export function collect(emitter, event) {
  const values = [];
  emitter.on(event, (value) => values.push(value));
  return values;
}
