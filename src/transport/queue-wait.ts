/**
 * Waiting for a free connection: a pool pushes the waiter, a release calls it
 * with the connection; the request's signal takes the waiter out of the line.
 * Shared by HttpTransport's undici pool and the bulk reader's pool.
 */
export function waitInLine<T>(waiters: Array<(value: T) => void>, signal?: AbortSignal): Promise<T> {
  signal?.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const w = (value: T) => {
      signal?.removeEventListener('abort', onAbort);
      resolve(value);
    };
    const onAbort = () => {
      const i = waiters.indexOf(w);
      if (i >= 0) waiters.splice(i, 1);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    waiters.push(w);
  });
}
