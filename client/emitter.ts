// A tiny typed event emitter: no Node `events` import on the core path, and listeners get typed
// payloads. `on` returns the unsubscribe function.

export type Listener<T> = (value: T) => void;

export class Emitter<Events extends Record<string, unknown>> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return () => {
      set.delete(listener as Listener<never>);
    };
  }

  emit<K extends keyof Events>(event: K, value: Events[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<Events[K]>)(value);
      } catch (err) {
        // A failing listener must not break sync or the other listeners.
        console.error('ferry client: listener failed', err instanceof Error ? err.name : typeof err);
      }
    }
  }

  clear(): void {
    this.listeners.clear();
  }
}
