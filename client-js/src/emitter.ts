// Emitter: a small typed event emitter for browsers and Node alike.
//
// Node's EventEmitter is not available in browsers and EventTarget is awkward
// to type, so the client carries its own. A throwing listener must not leave
// the client half-way through a state change, so listener errors are rethrown
// asynchronously (they still surface as uncaught errors, as with EventEmitter).

/** Maps event names to the type of their single argument. */
export type EventMap = { [event: string]: unknown };

export type Listener<T> = (event: T) => void;

export class Emitter<Events extends EventMap> {
  private readonly listeners = new Map<keyof Events, Array<Listener<never>>>();

  /** Calls `listener` for every `event`. */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    const list = this.listeners.get(event) ?? [];
    list.push(listener as Listener<never>);
    this.listeners.set(event, list);
    return this;
  }

  /** Calls `listener` for the next `event` only. */
  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    const wrapper: Listener<Events[K]> = (value) => {
      this.off(event, wrapper);
      listener(value);
    };
    return this.on(event, wrapper);
  }

  /** Removes one listener, or every listener of `event` when none is given. */
  off<K extends keyof Events>(event: K, listener?: Listener<Events[K]>): this {
    if (listener === undefined) {
      this.listeners.delete(event);
      return this;
    }
    const list = this.listeners.get(event);
    if (list === undefined) return this;
    const index = list.indexOf(listener as Listener<never>);
    if (index >= 0) list.splice(index, 1);
    if (list.length === 0) this.listeners.delete(event);
    return this;
  }

  /** Removes every listener of every event. */
  removeAllListeners(): this {
    this.listeners.clear();
    return this;
  }

  listenerCount<K extends keyof Events>(event: K): number {
    return this.listeners.get(event)?.length ?? 0;
  }

  protected emit<K extends keyof Events>(event: K, value: Events[K]): void {
    const list = this.listeners.get(event);
    if (list === undefined) return;
    for (const listener of [...list]) {
      try {
        (listener as Listener<Events[K]>)(value);
      } catch (err) {
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
  }
}
