/**
 * A JSON Schema validator for the subset schema/events.schema.json uses
 * (type, const, enum, properties, required, additionalProperties, items,
 * minimum, maximum, pattern, oneOf, anyOf, local $ref). Small enough to read,
 * so the suite needs no validator dependency; a keyword it does not know is an
 * error, so the schema cannot silently use more than is checked.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export type Schema = { [k: string]: unknown };

const KNOWN = new Set([
  '$schema', '$id', '$defs', 'title', 'description',
  'type', 'const', 'enum', 'properties', 'required', 'additionalProperties', 'items', 'minimum', 'maximum', 'pattern', 'oneOf', 'anyOf', '$ref',
]);

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function typeMatches(want: string, v: unknown): boolean {
  const t = typeOf(v);
  return want === t || (want === 'number' && t === 'integer');
}

/** Errors (`at /path: why`) of `value` against `schema`; empty when valid. */
export function validate(root: Schema, value: unknown, schema: Schema = root, at = ''): string[] {
  for (const k of Object.keys(schema)) if (!KNOWN.has(k)) throw new Error(`json-schema.ts does not implement keyword ${k} (at ${at || '/'})`);
  const where = at || '/';
  if (typeof schema.$ref === 'string') {
    const m = /^#\/\$defs\/([^/]+)$/.exec(schema.$ref);
    const target = m ? (root.$defs as Record<string, Schema> | undefined)?.[m[1]!] : undefined;
    if (!target) throw new Error(`unresolvable $ref ${schema.$ref}`);
    return validate(root, value, target, at);
  }
  if (schema.oneOf) {
    const results = (schema.oneOf as Schema[]).map((s) => validate(root, value, s, at));
    const ok = results.filter((r) => r.length === 0).length;
    if (ok === 1) return [];
    if (ok > 1) return [`at ${where}: matches ${ok} branches of oneOf`];
    // The branch that got furthest (fewest errors) says most about what is wrong.
    const best = results.reduce((a, b) => (b.length < a.length ? b : a));
    return [`at ${where}: matches no branch of oneOf; closest: ${best.join('; ')}`];
  }
  if (schema.anyOf) {
    const results = (schema.anyOf as Schema[]).map((s) => validate(root, value, s, at));
    if (results.some((r) => r.length === 0)) return [];
    return [`at ${where}: matches no branch of anyOf`];
  }
  const errors: string[] = [];
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? (schema.type as string[]) : [schema.type as string];
    if (!types.some((t) => typeMatches(t, value))) return [`at ${where}: expected ${types.join(' or ')}, got ${typeOf(value)} ${JSON.stringify(value)}`];
  }
  if ('const' in schema && value !== schema.const) errors.push(`at ${where}: expected ${JSON.stringify(schema.const)}, got ${JSON.stringify(value)}`);
  if (schema.enum && !(schema.enum as unknown[]).includes(value)) errors.push(`at ${where}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) errors.push(`at ${where}: ${value} < ${schema.minimum}`);
    if (typeof schema.maximum === 'number' && value > schema.maximum) errors.push(`at ${where}: ${value} > ${schema.maximum}`);
  }
  if (typeof value === 'string' && typeof schema.pattern === 'string' && !new RegExp(schema.pattern, 'u').test(value)) {
    errors.push(`at ${where}: ${JSON.stringify(value)} does not match ${schema.pattern}`);
  }
  if (Array.isArray(value) && schema.items) value.forEach((v, i) => errors.push(...validate(root, v, schema.items as Schema, `${at}/${i}`)));
  if (typeOf(value) === 'object') {
    const obj = value as Record<string, unknown>;
    const props = (schema.properties ?? {}) as Record<string, Schema>;
    for (const r of (schema.required ?? []) as string[]) if (!(r in obj)) errors.push(`at ${where}: missing ${r}`);
    for (const [k, v] of Object.entries(obj)) {
      if (props[k]) errors.push(...validate(root, v, props[k]!, `${at}/${k}`));
      else if (schema.additionalProperties === false) errors.push(`at ${where}: unexpected property ${k}`);
      else if (schema.additionalProperties && typeof schema.additionalProperties === 'object') {
        errors.push(...validate(root, v, schema.additionalProperties as Schema, `${at}/${k}`));
      }
    }
  }
  return errors;
}

export const EVENTS_SCHEMA_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../schema/events.schema.json');
let eventsSchema: Schema | undefined;

export function loadEventsSchema(): Schema {
  eventsSchema ??= JSON.parse(readFileSync(EVENTS_SCHEMA_PATH, 'utf8')) as Schema;
  return eventsSchema;
}

/** Every complete line of a `--json` stdout checked against the schema; the problems, one per bad line. */
export function checkJsonLines(stdout: string): string[] {
  const schema = loadEventsSchema();
  const problems: string[] = [];
  // A line without its newline was cut by a kill: nothing a script would read as an object.
  const lines = stdout.split('\n').slice(0, -1);
  for (const line of lines) {
    if (line.trim() === '') continue;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch {
      problems.push(`not JSON: ${line.slice(0, 200)}`);
      continue;
    }
    const errs = validate(schema, obj);
    if (errs.length) problems.push(`${line.slice(0, 300)}\n  ${errs.join('\n  ')}`);
  }
  return problems;
}
