import { describe, expect, it } from 'vitest';
import { classifyHttpFailure, parseRetryAfter } from '../../src/protocol/failure.js';
import {
  answerKind,
  contentDispositionFilename,
  defaultOutputName,
  detectChange,
  hasValidators,
  ifRangeValue,
  sameContent,
  sanitizeFileName,
  validateRangeResponse,
  validatorsFrom,
  weakEtagMatch,
  type Validators,
} from '../../src/protocol/download-validate.js';

const LM = 'Wed, 01 Jan 2025 00:00:00 GMT';
const LM2 = 'Thu, 02 Jan 2025 00:00:00 GMT';
const known: Validators = { length: 1000, lastModified: LM, etag: '"v1"' };
const one = [{ offset: 100, length: 50 }];
const two = [
  { offset: 100, length: 50 },
  { offset: 500, length: 10 },
];

describe('validators and If-Range', () => {
  it('reads length from Content-Length (200) or Content-Range (206)', () => {
    expect(validatorsFrom(200, { 'content-length': '1000', 'last-modified': LM, etag: '"v1"' })).toEqual(known);
    expect(validatorsFrom(206, { 'content-range': 'bytes 0-0/1000', 'content-length': '1' })).toEqual({ length: 1000 });
    expect(validatorsFrom(200, { 'content-length': '1000', 'content-encoding': 'gzip' })).toEqual({});
  });
  it('If-Range prefers a strong ETag, else Last-Modified', () => {
    expect(ifRangeValue(known)).toBe('"v1"');
    expect(ifRangeValue({ etag: 'W/"v1"', lastModified: LM })).toBe(LM);
    expect(ifRangeValue({})).toBeUndefined();
  });
  it('a changed Last-Modified or ETag is a change; a missing one is not', () => {
    expect(detectChange(known, { ...known, lastModified: LM2 })).toMatch(/Last-Modified changed/);
    expect(detectChange(known, { ...known, etag: '"v2"' })).toMatch(/ETag changed/);
    expect(detectChange(known, { length: 1000 })).toBeUndefined();
    expect(detectChange(known, { ...known, lastModified: 'Wed, 01 Jan 2025 00:00:00 +0000' })).toBeUndefined();
    // Without any validator, a new length is the only sign of a new version.
    expect(detectChange({ length: 1000 }, { length: 999 })).toMatch(/length changed/);
  });
  it('mirrors must match length and Last-Modified (ETags only without dates)', () => {
    expect(sameContent(known, { ...known, etag: '"other-format"' })).toBeUndefined();
    expect(sameContent(known, { ...known, length: 999 })).toMatch(/length/);
    expect(sameContent(known, { ...known, lastModified: LM2 })).toMatch(/Last-Modified/);
    expect(sameContent({ length: 5, etag: '"a"' }, { length: 5, etag: '"b"' })).toMatch(/ETag/);
  });
});

describe('§3.6.5.2.4.2 response validation', () => {
  const base = { known, rangeSent: true };
  it('a proper 206 for a single range', () => {
    const v = validateRangeResponse({ ...base, status: 206, requested: one, headers: { 'content-range': 'bytes 100-149/1000', 'content-length': '50', etag: '"v1"' } });
    expect(v.kind).toBe('partial');
  });
  it('changed Last-Modified / ETag -> restart', () => {
    expect(validateRangeResponse({ ...base, status: 206, requested: one, headers: { 'content-range': 'bytes 100-149/1000', 'last-modified': LM2 } }).kind).toBe('changed');
    expect(validateRangeResponse({ ...base, status: 200, requested: one, headers: { 'content-length': '1200', etag: '"v2"' } }).kind).toBe('changed');
  });
  it('Content-Length / Content-Range contradicting the known length -> error', () => {
    const v1 = validateRangeResponse({ ...base, status: 206, requested: one, headers: { 'content-range': 'bytes 100-149/1001', etag: '"v1"' } });
    expect(v1).toMatchObject({ kind: 'error' });
    const v2 = validateRangeResponse({ ...base, status: 206, requested: one, headers: { 'content-range': 'bytes 100-149/1000', 'content-length': '49' } });
    expect(v2).toMatchObject({ kind: 'error', message: expect.stringMatching(/contradicts/) });
    const v3 = validateRangeResponse({ ...base, status: 200, rangeSent: false, requested: [{ offset: 0, length: 1000 }], headers: { 'content-length': '999', etag: '"v1"' } });
    expect(v3.kind).toBe('error');
    const v4 = validateRangeResponse({ ...base, status: 206, requested: one, headers: { 'content-range': 'bytes 200-249/1000' } });
    expect(v4.kind).toBe('error');
    expect(validateRangeResponse({ ...base, rangeSent: false, status: 206, requested: one, headers: { 'content-range': 'bytes 100-149/1000' } }).kind).toBe('error');
  });
  it('200 to a ranged request -> the server ignores ranges: keep the full body', () => {
    const v = validateRangeResponse({ ...base, status: 200, requested: one, headers: { 'content-length': '1000', etag: '"v1"' } });
    expect(v).toMatchObject({ kind: 'full', ignoredRange: true });
    expect(validateRangeResponse({ ...base, rangeSent: false, status: 200, requested: [{ offset: 0, length: 1000 }], headers: { 'content-length': '1000' } })).toMatchObject({ kind: 'full', ignoredRange: false });
  });
  it('multi-range answers that are not multipart fail validation (SINGLE_RANGE_ONLY)', () => {
    expect(validateRangeResponse({ ...base, status: 200, requested: two, headers: { 'content-length': '1000' } }).kind).toBe('multi-failed');
    const first = validateRangeResponse({ ...base, status: 206, requested: two, headers: { 'content-range': 'bytes 100-149/1000' } });
    expect(first).toMatchObject({ kind: 'multi-failed', usable: { first: 100, last: 149 } });
    const other = validateRangeResponse({ ...base, status: 206, requested: two, headers: { 'content-range': 'bytes 0-9/1000' } });
    expect(other.kind).toBe('multi-failed');
    expect((other as { usable?: unknown }).usable).toBeUndefined();
    expect(validateRangeResponse({ ...base, status: 206, requested: two, headers: { 'content-type': 'multipart/byteranges' } }).kind).toBe('multi-failed');
    expect(validateRangeResponse({ ...base, status: 206, requested: two, headers: { 'content-type': 'multipart/byteranges; boundary=abc' } })).toMatchObject({ kind: 'multipart', boundary: 'abc' });
  });
  it('refuses content codings', () => {
    expect(validateRangeResponse({ ...base, status: 200, requested: one, headers: { 'content-encoding': 'gzip' } }).kind).toBe('error');
  });
  it('only 200/206 carry bytes, 416 means a new version; the rest is the one failure policy\'s (failure.ts)', () => {
    expect([200, 206, 416, 401, 408, 429, 500, 503, 501, 404].map(answerKind)).toEqual([
      'bytes', 'bytes', 'unsatisfiable', 'failure', 'failure', 'failure', 'failure', 'failure', 'failure', 'failure',
    ]);
    // What a download does with those failures is the same table uploads use.
    expect([408, 429, 500, 503, 501, 404].map((s) => classifyHttpFailure(s))).toEqual(['retry', 'retry', 'retry', 'retry', 'fail', 'fail']);
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter('3', now)).toBe(3000);
    expect(parseRetryAfter(new Date(now + 10_000).toUTCString(), now)).toBe(10_000);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
  });
  it('RFC 7232 §2.3.2: the changed-source decision uses the weak comparison; If-Range only a strong validator', () => {
    // Apache turns W/"x" into "x" for an unchanged file: the same representation, no restart.
    expect(weakEtagMatch('W/"x"', '"x"')).toBe(true);
    expect(weakEtagMatch('"x"', '"y"')).toBe(false);
    expect(detectChange({ length: 10, etag: 'W/"x"' }, { length: 10, etag: '"x"' })).toBeUndefined();
    expect(detectChange({ length: 10, etag: 'W/"x"' }, { length: 10, etag: 'W/"y"' })).toMatch(/ETag changed/);
    expect(sameContent({ length: 10, etag: 'W/"x"' }, { length: 10, etag: '"x"' })).toBeUndefined();
    // If-Range needs a strong validator: a weak ETag falls back to Last-Modified (the length is checked on every answer).
    expect(ifRangeValue({ etag: 'W/"x"', lastModified: LM })).toBe(LM);
    expect(ifRangeValue({ etag: '"x"', lastModified: LM })).toBe('"x"');
    expect(ifRangeValue({ etag: 'W/"x"' })).toBeUndefined();
    expect(hasValidators({ length: 5 })).toBe(false);
    expect(hasValidators({ lastModified: LM })).toBe(true);
  });
});

describe('output names from untrusted input', () => {
  it('never leaves the current folder', () => {
    expect(sanitizeFileName('../../etc/passwd')).toBe('passwd');
    expect(sanitizeFileName('..\\..\\win.ini')).toBe('win.ini');
    expect(sanitizeFileName('..')).toBeUndefined();
    expect(sanitizeFileName('.bashrc')).toBe('bashrc');
    expect(sanitizeFileName('a\u0000b\nc')).toBe('abc');
    expect(sanitizeFileName('con.txt')).toBe('_con.txt');
    expect(sanitizeFileName('what?.iso')).toBe('what_.iso');
    expect(Buffer.byteLength(sanitizeFileName('é'.repeat(300))!)).toBeLessThanOrEqual(200);
  });
  it('Content-Disposition (filename* first) then the URL, then download.bin', () => {
    expect(contentDispositionFilename(`attachment; filename="a \\"b\\".txt"`)).toBe('a "b".txt');
    expect(contentDispositionFilename(`attachment; filename=plain.bin; filename*=UTF-8''na%C3%AFve.txt`)).toBe('naïve.txt');
    expect(defaultOutputName(new URL('http://h/dir/my%20file.iso?x=1'))).toBe('my file.iso');
    expect(defaultOutputName(new URL('http://h/dir/x.iso'), { 'content-disposition': 'attachment; filename="../../evil.sh"' })).toBe('evil.sh');
    expect(defaultOutputName(new URL('http://h/'))).toBe('download.bin');
    expect(defaultOutputName(new URL('http://h/%2e%2e'))).toBe('download.bin');
    expect(defaultOutputName(new URL('http://h/a%2F..%2F..%2Fb'))).toBe('b');
  });
});
