/**
 * Options every transferring command shares (upload, download, resume): timers,
 * extra headers, and (transport helper) auth, proxy, TLS and rate limit.
 * Commands call addTransportOptions(cmd) and transportOptionsFrom(opts).
 */
import { Option, type Command } from 'commander';
import type { TransportOptions } from '../transport/http.js';
import { UsageError } from '../errors.js';
import { checkHeaderValue } from '../protocol/validate.js';

export function addTransportOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--request-timeout <seconds>', 'time allowed to send each request (§3.1.2.1)').default('120'))
    .addOption(new Option('--response-timeout <seconds>', 'time allowed to wait for each response (§3.1.2.2)').default('300'))
    .addOption(new Option('-H, --header <name:value>', 'extra request header (repeatable)').argParser(collect).default([]));
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function parseSeconds(name: string, v: unknown): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${name} must be a positive number of seconds, got ${JSON.stringify(v)}`);
  return n;
}

export function transportOptionsFrom(opts: Record<string, unknown>): TransportOptions {
  const headers: Record<string, string> = {};
  for (const h of (opts.header as string[] | undefined) ?? []) {
    const i = h.indexOf(':');
    if (i <= 0) throw new UsageError(`--header must be NAME:VALUE, got ${JSON.stringify(h)}`);
    const name = h.slice(0, i).trim();
    const value = h.slice(i + 1).trim();
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) throw new UsageError(`--header name is not a valid token: ${JSON.stringify(name)}`);
    const ok = checkHeaderValue(value);
    if (!ok.ok) throw new UsageError(`--header ${name}: value ${ok.reason}`);
    headers[name] = value;
  }
  return {
    requestTimeoutMs: parseSeconds('--request-timeout', opts.requestTimeout ?? 120) * 1000,
    responseTimeoutMs: parseSeconds('--response-timeout', opts.responseTimeout ?? 300) * 1000,
    headers,
  };
}
