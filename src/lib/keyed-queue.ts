/**
 * Runs tasks one after another per key (a channel id): each starts once the key's previous task
 * has settled, whether it succeeded or failed. Keys with nothing in line take no memory.
 */
export function keyedQueue() {
  const tails = new Map<number, Promise<void>>();
  return function inOrder<T>(key: number, task: () => Promise<T>): Promise<T> {
    const result = (tails.get(key) ?? Promise.resolve()).then(task);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    tails.set(key, tail);
    void tail.then(() => {
      if (tails.get(key) === tail) tails.delete(key);
    });
    return result;
  };
}
