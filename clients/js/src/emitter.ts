/** A listener's exception must not break the client: it is thrown again later, on its own. */
const rethrow = (e: unknown) =>
  setTimeout(() => {
    throw e;
  }, 0);

/** Typed events: `on` returns a function that removes the listener. */
export class Emitter<E> {
  /** @internal */
  _l: { [K in keyof E]?: ((event: E[K]) => void)[] } = {};

  /** Calls `fn` on every event `name`; returns a function that stops it. */
  on<K extends keyof E>(name: K, fn: (event: E[K]) => void): () => void {
    (this._l[name] ||= []).push(fn);
    return () => this.off(name, fn);
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof E>(name: K, fn: (event: E[K]) => void): void {
    this._l[name] = this._l[name]?.filter((f) => f !== fn);
  }

  /** @internal */
  _emit<K extends keyof E>(name: K, event: E[K]): void {
    for (const f of this._l[name]?.slice() || []) {
      try {
        f(event);
      } catch (e) {
        rethrow(e);
      }
    }
  }
}
