/**
 * Validation of download responses, MC-BUP §3.6.5.2.4.2, as pure functions.
 * The download core (src/protocol/downloader.ts) turns each verdict into what the driver does next.
 *
 * The spec's rules, and how they are read here:
 * - Last-Modified (and, beyond the spec, ETag) differing from what was recorded
 *   means the URL content changed: back to STATE_INIT, i.e. start again.
 * - A Content-Length that does not match DATA_LENGTH is an error. When the
 *   server sends no validator at all, a new length is the only sign of a new
 *   version, so it is treated as a change; when the validators are unchanged a
 *   different length is a contradiction (ProtocolError).
 * - 200 to a ranged request: the server ignored the Range header (or If-Range
 *   failed). The spec suspends with an error; we keep the full body, which is
 *   still correct data, and take only the bytes we need from it.
 * - Multi-range answers that are not a proper multipart/byteranges (200, a
 *   single part, wrong Content-Range) fail validation: SINGLE_RANGE_ONLY.
 */
import { parseContentRange, type ContentRange } from './content-range.js';
import { parseByterangesBoundary } from './multipart.js';
import type { AppRange } from './download-ranges.js';

/** What identifies one version of the URL content (DATA_LENGTH, DATA_TIMESTAMP, ETag). */
export interface Validators {
  length?: number;
  lastModified?: string;
  etag?: string;
}

function toLength(v: string | undefined): number | undefined {
  if (v === undefined || !/^\s*\d{1,16}\s*$/.test(v)) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** True when the body is not the raw bytes of the content (gzip etc.). */
export function hasContentCoding(headers: Record<string, string>): boolean {
  const ce = headers['content-encoding'];
  return ce !== undefined && ce.trim() !== '' && ce.trim().toLowerCase() !== 'identity';
}

/** Validators a 200/206 (or HEAD) response states. */
export function validatorsFrom(status: number, headers: Record<string, string>): Validators {
  const v: Validators = {};
  const lm = headers['last-modified']?.trim();
  const etag = headers['etag']?.trim();
  if (lm) v.lastModified = lm;
  if (etag) v.etag = etag;
  if (status === 206) {
    const cr = parseContentRange(headers['content-range']);
    if (cr?.total !== undefined) v.length = cr.total;
  } else if (status === 200 && !hasContentCoding(headers)) {
    const n = toLength(headers['content-length']);
    if (n !== undefined) v.length = n;
  }
  return v;
}

export function isWeakEtag(etag: string): boolean {
  return /^W\//i.test(etag.trim());
}

/** The opaque-tag of an entity-tag, without the weakness indicator. */
function opaqueTag(etag: string): string {
  return etag.trim().replace(/^W\//i, '');
}

/**
 * RFC 7232 §2.3.2 weak comparison: the opaque-tags match, whether either is
 * weak. It answers "is this the same representation", which is all the
 * changed-source decision asks: Apache turns W/"x" into "x" for an unchanged
 * file (once its mtime is older than a second), and that is no change.
 */
export function weakEtagMatch(a: string, b: string): boolean {
  return opaqueTag(a) === opaqueTag(b);
}

/**
 * If-Range for a resumed request (RFC 7233 §3.2): it needs a strong
 * validator, because a 206 splices bytes of two responses. A strong ETag,
 * else the Last-Modified date (the length is compared on every answer). A
 * server whose content changed then answers 200 with the new content
 * instead of a 206 splicing two versions.
 */
export function ifRangeValue(v: Validators): string | undefined {
  if (v.etag && !isWeakEtag(v.etag)) return v.etag;
  return v.lastModified;
}

/** Whether the server identifies versions at all (ETag or Last-Modified); without, resumes verify bytes (issue 12.7). */
export function hasValidators(v: Validators): boolean {
  return v.etag !== undefined || v.lastModified !== undefined;
}

function sameDate(a: string, b: string): boolean {
  if (a === b) return true;
  const ta = Date.parse(a);
  const tb = Date.parse(b);
  return Number.isFinite(ta) && ta === tb;
}

/**
 * The reason the content is a different version, or undefined. Only values
 * both sides state are compared (a missing header is not a change).
 */
export function detectChange(known: Validators, got: Validators): string | undefined {
  if (known.etag !== undefined && got.etag !== undefined && !weakEtagMatch(known.etag, got.etag)) {
    return `ETag changed from ${known.etag} to ${got.etag}`;
  }
  if (known.lastModified !== undefined && got.lastModified !== undefined && !sameDate(known.lastModified, got.lastModified)) {
    return `Last-Modified changed from ${known.lastModified} to ${got.lastModified}`;
  }
  if (known.length !== undefined && got.length !== undefined && known.length !== got.length && !(hasValidators(known) && hasValidators(got))) {
    return `length changed from ${known.length} to ${got.length} bytes`;
  }
  return undefined;
}

/**
 * Whether a mirror serves the same content as the origin: same length, and
 * the same Last-Modified when both send one. ETags are compared only when a
 * Last-Modified is missing, because their format differs between server
 * software (nginx, IIS and Apache derive them differently from the same file).
 */
export function sameContent(origin: Validators, mirror: Validators): string | undefined {
  if (origin.length === undefined || mirror.length === undefined) return 'length unknown';
  if (origin.length !== mirror.length) return `length ${mirror.length} instead of ${origin.length}`;
  if (origin.lastModified && mirror.lastModified) {
    if (!sameDate(origin.lastModified, mirror.lastModified)) return `Last-Modified ${mirror.lastModified} instead of ${origin.lastModified}`;
    return undefined;
  }
  if (origin.etag && mirror.etag && !weakEtagMatch(origin.etag, mirror.etag)) return `ETag ${mirror.etag} instead of ${origin.etag}`;
  return undefined;
}

/**
 * §3.6.5.3: 200 and 206 carry bytes; 416 to a range the content had means
 * it shrank (a new version); everything else is a failure whose meaning
 * (retry or not) is src/protocol/failure.ts's to decide.
 */
export function answerKind(status: number): 'bytes' | 'unsatisfiable' | 'failure' {
  if (status === 200 || status === 206) return 'bytes';
  if (status === 416) return 'unsatisfiable';
  return 'failure';
}

export type RangeVerdict =
  /** 200: the body is the whole URL from offset 0. `ignoredRange`: a Range was sent. */
  | { kind: 'full'; validators: Validators; ignoredRange: boolean }
  /** 206 with one Content-Range: the body is bytes range.first..range.last. */
  | { kind: 'partial'; range: ContentRange; validators: Validators }
  /** 206 multipart/byteranges: parse the body with ByterangesParser. */
  | { kind: 'multipart'; boundary: string; validators: Validators }
  /**
   * A multi-range request failed validation: set SINGLE_RANGE_ONLY. `usable`:
   * the body is still a correct single part (a server answering only the
   * first range), so its bytes need not be fetched again.
   */
  | { kind: 'multi-failed'; reason: string; validators: Validators; usable?: ContentRange }
  /** The content is a new version: start again (§3.6.5.2.4.2 -> STATE_INIT). */
  | { kind: 'changed'; reason: string; validators: Validators }
  /** The response contradicts itself or the request: ProtocolError. */
  | { kind: 'error'; message: string };

export interface RangeRequestInfo {
  status: number;
  headers: Record<string, string>;
  /** FRAGMENT_RANGES as URL ranges. */
  requested: readonly AppRange[];
  /** Whether a Range header was sent (it is suppressed for the whole URL). */
  rangeSent: boolean;
  /** DATA_LENGTH / DATA_TIMESTAMP / ETag recorded so far. */
  known: Validators;
}

/** §3.6.5.2.4.2: validates a 200/206 answer to a GET for FRAGMENT_RANGES. */
export function validateRangeResponse(r: RangeRequestInfo): RangeVerdict {
  const { status, headers, known } = r;
  if (status !== 200 && status !== 206) return { kind: 'error', message: `unexpected HTTP ${status}` };
  if (hasContentCoding(headers)) {
    return { kind: 'error', message: `server applied Content-Encoding ${headers['content-encoding']} to a download; the bytes would not be the file's` };
  }
  const validators = validatorsFrom(status, headers);
  const changed = detectChange(known, validators);
  if (changed) return { kind: 'changed', reason: changed, validators };
  const multi = r.requested.length > 1;
  const lengthClash = (stated: number | undefined): RangeVerdict | undefined => {
    if (stated === undefined || known.length === undefined || stated === known.length) return undefined;
    // detectChange let it through: both sides have validators and they agree.
    return { kind: 'error', message: `server states length ${stated} but the same version was ${known.length} bytes long` };
  };

  if (status === 200) {
    const clash = lengthClash(validators.length);
    if (clash) return clash;
    if (multi) return { kind: 'multi-failed', reason: 'HTTP 200 to a multi-range request', validators };
    return { kind: 'full', validators, ignoredRange: r.rangeSent };
  }

  // 206
  if (!r.rangeSent) return { kind: 'error', message: 'HTTP 206 to a request without Range' };
  const ct = headers['content-type'];
  if (ct && /^\s*multipart\/byteranges\b/i.test(ct)) {
    const boundary = parseByterangesBoundary(ct);
    if (!boundary) {
      return multi
        ? { kind: 'multi-failed', reason: 'multipart/byteranges without a valid boundary', validators }
        : { kind: 'error', message: 'multipart/byteranges without a valid boundary' };
    }
    return { kind: 'multipart', boundary, validators };
  }
  const cr = parseContentRange(headers['content-range']);
  if (!cr) {
    return multi
      ? { kind: 'multi-failed', reason: 'HTTP 206 without Content-Range or multipart body', validators }
      : { kind: 'error', message: `HTTP 206 with invalid Content-Range ${JSON.stringify(headers['content-range'] ?? null)}` };
  }
  const clash = lengthClash(cr.total);
  if (clash) return clash;
  const cl = toLength(headers['content-length']);
  if (cl !== undefined && cl !== cr.last - cr.first + 1) {
    return { kind: 'error', message: `Content-Length ${cl} contradicts Content-Range bytes ${cr.first}-${cr.last}` };
  }
  const first = r.requested[0]!;
  const startsRight = cr.first <= first.offset && first.offset <= cr.last;
  if (multi) {
    return {
      kind: 'multi-failed',
      reason: `single part (bytes ${cr.first}-${cr.last}) to a ${r.requested.length}-range request`,
      validators,
      ...(startsRight ? { usable: cr } : {}),
    };
  }
  if (!startsRight) {
    return { kind: 'error', message: `Content-Range bytes ${cr.first}-${cr.last} does not contain the requested offset ${first.offset}` };
  }
  return { kind: 'partial', range: cr, validators };
}

// ---------------------------------------------------------------------------
// Output file names chosen from untrusted input (URL, Content-Disposition).

const WINDOWS_RESERVED = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i;

/**
 * A file name safe to create in the current folder: no separators, no `..`,
 * no control or Windows-reserved characters, no leading dots (hidden files),
 * at most 200 UTF-8 bytes. Undefined when nothing usable remains.
 */
export function sanitizeFileName(name: string): string | undefined {
  let s = name.normalize('NFC');
  // Only the last path element counts, whichever separator the sender used.
  s = s.split(/[/\\]/).pop() ?? '';
  s = s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '');
  s = s.replace(/[<>:"|?*]/g, '_');
  s = s.replace(/^[.\s]+/, '').replace(/[.\s]+$/, '');
  if (s === '') return undefined;
  if (WINDOWS_RESERVED.test(s)) s = `_${s}`;
  while (Buffer.byteLength(s, 'utf8') > 200) s = [...s].slice(0, -1).join('');
  return s === '' ? undefined : s;
}

/** The filename of a Content-Disposition header (RFC 6266; filename* preferred). */
export function contentDispositionFilename(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const star = /(?:^|;)\s*filename\*\s*=\s*([^']*)'[^']*'([^;]+)/i.exec(value);
  if (star) {
    try {
      const charset = star[1]!.trim().toLowerCase();
      const raw = star[2]!.trim();
      if (charset === 'utf-8' || charset === '') return decodeURIComponent(raw);
      if (charset === 'iso-8859-1') return unescape(raw); // %XX are latin1 code points
    } catch {
      /* fall through to filename= */
    }
  }
  const quoted = /(?:^|;)\s*filename\s*=\s*"((?:[^"\\]|\\.)*)"/i.exec(value);
  if (quoted) return quoted[1]!.replace(/\\(.)/g, '$1');
  const token = /(?:^|;)\s*filename\s*=\s*([^;\s]+)/i.exec(value);
  return token ? token[1] : undefined;
}

/**
 * The default output name: the server's Content-Disposition filename (what a
 * browser would save), else the URL's last path segment, decoded; always
 * sanitised; `download.bin` when neither yields a name.
 */
export function defaultOutputName(url: URL, headers: Record<string, string> = {}): string {
  const cd = contentDispositionFilename(headers['content-disposition']);
  const fromCd = cd !== undefined ? sanitizeFileName(cd) : undefined;
  if (fromCd) return fromCd;
  const segs = url.pathname.split('/');
  const last = segs[segs.length - 1] ?? '';
  let decoded = last;
  try {
    decoded = decodeURIComponent(last);
  } catch {
    /* keep it encoded */
  }
  return sanitizeFileName(decoded) ?? 'download.bin';
}
