import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import {
  PROTOCOL_GUID, PacketType, WIRE_PACKET_TYPE, getHeader, H, parsePacketType, parseSupportedProtocols,
} from '../../src/protocol/headers.js';
import { isGuid, newSessionId, normalizeGuid, sameGuid } from '../../src/protocol/guid.js';
import {
  ErrorContext, HRESULT, describeHresult, describeErrorContext, formatHresult, hresultFromHttpStatus,
  httpStatusFromHresult, isDiskFull, parseErrorContext, parseHresult,
} from '../../src/protocol/hresult.js';
import {
  formatContentRange, formatRangeHeader, parseContentRange, parseRangeHeader, parseReceivedContentRange,
  parseUnsatisfiedContentRange, resolveRanges, parseRangeList,
} from '../../src/protocol/content-range.js';
import { applyHostId, encodePathSegment, parseDestinationUrl, resolveReplyUrl } from '../../src/protocol/urls.js';
import { checkContentName, checkHeaderValue, encodeContentName } from '../../src/protocol/validate.js';
import { ServerError, ExitCode, AuthError, toBitsError } from '../../src/errors.js';
import { classifyAck, isSessionId, MAX_SESSION_ID_LENGTH, sameSessionId } from '../../src/protocol/ack.js';
import { classifyHttpFailure } from '../../src/protocol/failure.js';

const fixture = (name: string) => readFileSync(new URL(`../../fixtures/spec-examples/${name}`, import.meta.url), 'latin1');

describe('§2.2 packet types and headers', () => {
  it('matches packet types case-insensitively, as Windows sends them mixed-case', () => {
    expect(parsePacketType('Create-Session')).toBe(PacketType.CreateSession);
    expect(parsePacketType('Ping')).toBe('PING');
    expect(parsePacketType('ping')).toBe('PING');
    expect(parsePacketType(' FRAGMENT ')).toBe('FRAGMENT');
    expect(parsePacketType('close-session')).toBe('CLOSE-SESSION');
    expect(parsePacketType('Cancel-Session')).toBe('CANCEL-SESSION');
    expect(parsePacketType('ACK')).toBe('Ack');
    expect(parsePacketType('Create_Session')).toBeUndefined();
    expect(parsePacketType(undefined)).toBeUndefined();
  });

  it('sends the spelling of the Windows captures', () => {
    for (const [file, type] of [
      ['4.1-01-create-session-request-from-the-client.bin', 'CREATE-SESSION'],
      ['4.1-03-fragment-request-from-the-client-headers-only.bin', 'FRAGMENT'],
      ['4.1-06-ping-request-from-the-client.bin', 'PING'],
      ['4.1-08-close-session-request-from-the-client.bin', 'CLOSE-SESSION'],
    ] as const) {
      const line = fixture(file).split('\r\n').find((l) => l.startsWith('BITS-Packet-Type:'))!;
      expect(line.slice('BITS-Packet-Type: '.length)).toBe(WIRE_PACKET_TYPE[type]);
    }
  });

  it('parses the supported-protocols list, space or comma delimited', () => {
    expect(parseSupportedProtocols(`${PROTOCOL_GUID}`)).toEqual([PROTOCOL_GUID]);
    expect(parseSupportedProtocols(`{a}, ${PROTOCOL_GUID} {b}`)).toEqual(['{a}', PROTOCOL_GUID, '{b}']);
  });

  it('looks headers up case-insensitively and accepts the DataEntity/DataFile spellings', () => {
    expect(getHeader({ 'bits-packet-type': 'Ack' }, H.PacketType)).toBe('Ack');
    expect(getHeader({ 'BITS-Request-DataEntity-Name': 'C:\\x' }, H.RequestDataFileName)).toBe('C:\\x');
    expect(getHeader({}, H.SessionId)).toBeUndefined();
  });
});

describe('GUIDs', () => {
  it('accepts the capture session ids and rejects malformed ones', () => {
    expect(isGuid('{A0FF5911-4144-45B3-BF27-27AFC8EC8A67}')).toBe(true);
    expect(isGuid(PROTOCOL_GUID)).toBe(true);
    expect(isGuid('A0FF5911-4144-45B3-BF27-27AFC8EC8A67')).toBe(true);
    expect(isGuid('{A0FF5911-4144-45B3-BF27-27AFC8EC8A67')).toBe(false);
    expect(isGuid('{A0FF5911-4144-45B3-BF27-27AFC8EC8A6}')).toBe(false);
    expect(isGuid('{../../etc/passwd}')).toBe(false);
    expect(sameGuid('{a0ff5911-4144-45b3-bf27-27afc8ec8a67}', '{A0FF5911-4144-45B3-BF27-27AFC8EC8A67}')).toBe(true);
    expect(normalizeGuid('a0ff5911-4144-45b3-bf27-27afc8ec8a67')).toBe('{A0FF5911-4144-45B3-BF27-27AFC8EC8A67}');
    const id = newSessionId();
    expect(isGuid(id)).toBe(true);
    expect(id).toBe(normalizeGuid(id));
  });
});

describe('§2.2.1.2 HRESULTs', () => {
  it('names the table of §2.2.1.2 with the statuses it pairs them with', () => {
    expect(describeHresult(0x8020001f)).toMatchObject({ name: 'BG_E_SESSION_NOT_FOUND', httpStatus: 500 });
    expect(describeHresult(0x80070005)).toMatchObject({ name: 'E_ACCESSDENIED', httpStatus: 403 });
    expect(describeHresult(0x80070057)).toMatchObject({ name: 'E_INVALIDARG', httpStatus: 400 });
    expect(describeHresult(0x80200020)).toMatchObject({ name: 'BG_E_TOO_LARGE', httpStatus: 500 });
    expect(describeHresult(0x80070112)).toMatchObject({ name: 'ERROR_DISK_FULL', httpStatus: 500 });
    expect(isDiskFull(0x80070112)).toBe(true);
    expect(isDiskFull(0x80070070)).toBe(true);
    expect(isDiskFull(0x80070005)).toBe(false);
  });

  it('maps HTTP statuses to BG_E_HTTP_ERROR 0x8019xxxx, as Windows reports them', () => {
    expect(hresultFromHttpStatus(404)).toBe(0x80190194);
    expect(formatHresult(hresultFromHttpStatus(404))).toBe('0x80190194');
    expect(httpStatusFromHresult(0x801901f4)).toBe(500);
    expect(httpStatusFromHresult(0x80070005)).toBeUndefined();
    expect(describeHresult(0x80190194).name).toBe('BG_E_HTTP_ERROR_404');
  });

  it('parses BITS-Error in the forms servers send', () => {
    expect(parseHresult('0x8020001F')).toBe(0x8020001f);
    expect(parseHresult('x80070005')).toBe(0x80070005);
    expect(parseHresult('-2145386465')).toBe(0x8020001f);
    expect(parseHresult('2149580831')).toBe(0x8020001f);
    expect(parseHresult('nonsense')).toBeUndefined();
    expect(parseHresult('0x123456789')).toBeUndefined();
    expect(parseErrorContext('0x5')).toBe(ErrorContext.Server);
    expect(parseErrorContext('7')).toBe(ErrorContext.RemoteApplication);
    expect(describeErrorContext(5)).toBe('server');
    expect(describeErrorContext(7)).toBe('remote application');
  });

  it('describes unknown codes without throwing', () => {
    expect(describeHresult(0xa0001234).name).toMatch(/customer/);
    expect(describeHresult(0x80070020).name).toBe('HRESULT_FROM_WIN32(32)');
    expect(describeHresult(0x12345678).name).toMatch(/unknown/);
  });

  it('prints a server refusal as one line with status, 0x8019 code, HRESULT name and advice', () => {
    const e = new ServerError({ httpStatus: 500, bitsError: HRESULT.BG_E_TOO_LARGE, bitsErrorContext: 5, request: 'FRAGMENT' });
    expect(e.message).not.toContain('\n');
    expect(e.message).toContain('HTTP 500');
    expect(e.message).toContain('0x801901F4');
    expect(e.message).toContain('0x80200020 BG_E_TOO_LARGE');
    expect(e.message).toContain('[server]');
    expect(e.exitCode).toBe(ExitCode.SERVER);
    expect(e.toJSON()).toMatchObject({ httpStatus: 500, hresult: '0x80200020', hresultName: 'BG_E_TOO_LARGE', context: 'server' });
    const plain = new ServerError({ httpStatus: 404, request: 'GET' });
    expect(plain.message).toBe('server refused GET: HTTP 404 not found (0x80190194)');
    expect(new AuthError({ httpStatus: 401 }).exitCode).toBe(ExitCode.AUTH);
  });

  it('maps local errno errors to LocalFileError with exit 3', () => {
    const e = toBitsError(Object.assign(new Error('x'), { code: 'ENOENT', path: '/nope' }));
    expect(e.exitCode).toBe(ExitCode.LOCAL_FILE);
    expect(e.message).toBe('/nope: no such file or directory');
    expect(toBitsError(new Error('boom')).exitCode).toBe(ExitCode.INTERNAL);
  });
});

describe('Content-Range and BITS-Received-Content-Range', () => {
  it('formats the fragment of capture 4.1-03', () => {
    expect(formatContentRange(0, 4892, 4892)).toBe('bytes 0-4891/4892');
    expect(fixture('4.1-03-fragment-request-from-the-client-headers-only.bin')).toContain('Content-Range: bytes 0-4891/4892\r\n');
  });

  it('never formats an empty fragment (bytes 10-9/10)', () => {
    expect(() => formatContentRange(10, 0, 10)).toThrow(/empty/);
    expect(() => formatContentRange(5, 6, 10)).toThrow(RangeError);
    expect(formatContentRange(9, 1, 10)).toBe('bytes 9-9/10');
  });

  it('parses Content-Range strictly', () => {
    expect(parseContentRange('bytes 0-4891/4892')).toEqual({ first: 0, last: 4891, total: 4892 });
    expect(parseContentRange('BYTES 10-19/*')).toEqual({ first: 10, last: 19, total: undefined });
    expect(parseContentRange('bytes 10-9/10')).toBeUndefined();
    expect(parseContentRange('bytes 0-10/10')).toBeUndefined();
    expect(parseContentRange('bytes */10')).toBeUndefined();
    expect(parseContentRange('bytes=0-1/2')).toBeUndefined();
    expect(parseContentRange('bytes 0-99999999999999999/1')).toBeUndefined();
    expect(parseUnsatisfiedContentRange('bytes */10')).toBe(10);
  });

  it('parses the acknowledged offset of capture 4.1-05', () => {
    const line = fixture('4.1-05-ack-response-from-the-server.bin').split('\r\n').find((l) => l.startsWith('BITS-Received-Content-Range'))!;
    expect(parseReceivedContentRange(line.split(': ')[1])).toBe(4892);
    expect(parseReceivedContentRange(' 213 ')).toBe(213);
    expect(parseReceivedContentRange('-1')).toBeUndefined();
    expect(parseReceivedContentRange('12a')).toBeUndefined();
  });

  it('parses and resolves Range headers without merging or reordering', () => {
    const specs = parseRangeHeader('bytes=500-599, 0-99,-100,9000-')!;
    expect(resolveRanges(specs, 1000)).toEqual([
      { first: 500, last: 599 }, { first: 0, last: 99 }, { first: 900, last: 999 },
    ]);
    expect(resolveRanges(parseRangeHeader('bytes=2000-')!, 1000)).toEqual([]);
    expect(resolveRanges(parseRangeHeader('bytes=0-5000')!, 1000)).toEqual([{ first: 0, last: 999 }]);
    expect(resolveRanges(parseRangeHeader('bytes=-0')!, 1000)).toEqual([]);
    expect(parseRangeHeader('bytes=5-1')).toBeUndefined();
    expect(parseRangeHeader('items=0-1')).toBeUndefined();
    expect(parseRangeHeader('bytes=-')).toBeUndefined();
    expect(formatRangeHeader([{ first: 0, last: 9976 }])).toBe('bytes=0-9976');
    expect(parseRangeList('0-99,1000-1099')).toEqual([{ kind: 'from', first: 0, last: 99 }, { kind: 'from', first: 1000, last: 1099 }]);
  });
});

describe('URLs: BITS-Host-Id and BITS-Reply-URL', () => {
  const dest = new URL('http://frankcao8/upload-ref-isapi-WebFarm/2100mb-rfc2119.txt');

  it('resolves the relative backslash reply URL of §4.2 as the Windows client did (4.2-19)', () => {
    const ack = fixture('4.2-18-ack-response-from-the-server.bin');
    const reply = /BITS-Reply-URL: (.*)\r\n/.exec(ack)![1]!;
    const u = resolveReplyUrl(dest, reply);
    const get = fixture('4.2-19-higher-layer-protocol-requesting-the-response-data.bin').split('\r\n')[0]!;
    expect(`GET ${u.pathname} HTTP/1.1`).toBe(get);
    expect(u.href).toBe('http://frankcao8/upload-ref-isapi-WebFarm/BITS-Sessions/Replies/%7BC85B4E0A-9EB9-4114-BFA4-8A43B4710091%7D/responsefile.bin');
  });

  it('takes absolute reply URLs as they are and refuses other schemes', () => {
    expect(resolveReplyUrl(dest, 'https://other.example/r.bin').href).toBe('https://other.example/r.bin');
    expect(() => resolveReplyUrl(dest, 'file:///etc/passwd')).toThrow(/scheme/);
    expect(() => resolveReplyUrl(dest, '')).toThrow();
    expect(resolveReplyUrl(dest, '/abs/path with space.bin').href).toBe('http://frankcao8/abs/path%20with%20space.bin');
    expect(resolveReplyUrl(dest, 'a%20b\\c.bin').pathname).toBe('/upload-ref-isapi-WebFarm/a%20b/c.bin');
    expect(encodePathSegment('100%')).toBe('100%25');
  });

  it('replaces only the host for BITS-Host-Id', () => {
    const d = new URL('https://lb.example:8443/up/file.bin?x=1');
    expect(applyHostId(d, 'FRANKCAO8')!.href).toBe('https://frankcao8:8443/up/file.bin?x=1');
    expect(applyHostId(d, '127.0.0.2')!.href).toBe('https://127.0.0.2:8443/up/file.bin?x=1');
    expect(applyHostId(d, '::1')!.href).toBe('https://[::1]:8443/up/file.bin?x=1');
    expect(applyHostId(d, '[::1]')!.host).toBe('[::1]:8443');
    expect(applyHostId(d, 'evil.example/path')).toBeUndefined();
    expect(applyHostId(d, 'host:99')).toBeUndefined();
    expect(applyHostId(d, '')).toBeUndefined();
  });

  it('accepts only absolute http(s) destination URLs', () => {
    expect(parseDestinationUrl('http://[::1]:8080/a%20b?q=1').hostname).toBe('[::1]');
    // One wording for every URL a user gives.
    expect(() => parseDestinationUrl('ftp://x/y')).toThrow(/^URL must be an http:\/\/ or https:\/\/ URL with a host, got "ftp:\/\/x\/y"$/);
    expect(() => parseDestinationUrl('not a url')).toThrow(/^URL must be an http:\/\/ or https:\/\/ URL with a host, got "not a url"$/);
    expect(() => parseDestinationUrl('http://alice:pw@x/y')).toThrow(/must not carry a user name or password \(http:\/\/x\/y\)/);
  });
});

describe('§2.2.1 header-value rules', () => {
  it('rejects CR/LF and values over 4 KB', () => {
    expect(checkHeaderValue('ok').ok).toBe(true);
    expect(checkHeaderValue('a\r\nX-Evil: 1').ok).toBe(false);
    expect(checkHeaderValue('x'.repeat(4096)).ok).toBe(true);
    expect(checkHeaderValue('x'.repeat(4097)).ok).toBe(false);
  });

  it('checks Content-Name: 260 characters, none of \\ / : * ? " < > |', () => {
    expect(checkContentName('rfc2119.txt').ok).toBe(true);
    expect(checkContentName('a/b').ok).toBe(false);
    expect(checkContentName('a:b').ok).toBe(false);
    expect(checkContentName('x'.repeat(261)).ok).toBe(false);
  });

  it('makes a valid Content-Name from any local file name', () => {
    expect(encodeContentName('rfc2119.txt')).toBe('rfc2119.txt');
    expect(encodeContentName('a:b*c?.bin')).toBe('a_b_c_.bin');
    expect(encodeContentName('résumé data.bin')).toBe('r%C3%A9sum%C3%A9 data.bin');
    expect(encodeContentName('x'.repeat(300))).toHaveLength(260);
    expect(encodeContentName('é'.repeat(100)).length).toBeLessThanOrEqual(260);
    for (const n of ['résumé.bin', 'a\nb', '日本語.txt', '%41']) expect(checkContentName(encodeContentName(n)).ok).toBe(true);
  });
});

describe('Acks as real peers send them (src/protocol/ack.ts, issue 12)', () => {
  const SID = '{A0FF5911-4144-45B3-BF27-27AFC8EC8A67}';
  const a = (request: Parameters<typeof classifyAck>[0]['request'], status: number, headers: Record<string, string>, sentSessionId?: string) =>
    classifyAck({ request, status, headers: { 'BITS-Packet-Type': 'Ack', ...headers }, sentSessionId });

  it('12.1 reads the HRESULT from BITS-Error or BITS-Error-Code; BITS-Error wins when both are present', () => {
    expect(a('FRAGMENT', 500, { 'BITS-Error-Code': '0x8020001F' }, SID)).toMatchObject({ kind: 'session-not-found', bitsError: HRESULT.BG_E_SESSION_NOT_FOUND });
    expect(a('FRAGMENT', 500, { 'bits-error': '0x8020001F' }, SID).kind).toBe('session-not-found');
    expect(getHeader({ 'bits-error-code': '0x1', 'BITS-Error': '0x2' }, H.Error)).toBe('0x2');
    expect(getHeader({ 'BITS-Error': '0x2', 'bits-error-code': '0x1' }, H.Error)).toBe('0x2');
  });

  it('12.2 a BITS error on a 200 Ack (BITS-Error-Code: 1 on PING) is not a failure, not even BG_E_SESSION_NOT_FOUND', () => {
    const ping = a('PING', 200, { 'BITS-Error-Code': '1' });
    expect(ping.kind).toBe('ok');
    expect(ping.bitsError).toBeUndefined();
    expect(a('PING', 200, { 'BITS-Error': '0x8020001F' }).kind).toBe('ok');
  });

  it('12.3 session ids: any printable header token up to 256 characters, compared exactly (GUIDs as GUIDs)', () => {
    expect(isSessionId('-5816921724287494047')).toBe(true);
    expect(isSessionId(SID)).toBe(true);
    expect(isSessionId('a b')).toBe(true);
    expect(isSessionId('x'.repeat(MAX_SESSION_ID_LENGTH))).toBe(true);
    expect(isSessionId('x'.repeat(MAX_SESSION_ID_LENGTH + 1))).toBe(false);
    expect(isSessionId('a\r\nSet-Cookie: x')).toBe(false);
    expect(isSessionId('a\u0000b')).toBe(false);
    expect(isSessionId('é')).toBe(false);
    expect(isSessionId('')).toBe(false);
    const created = a('CREATE-SESSION', 200, { 'BITS-Session-Id': '-5816921724287494047' });
    expect(created).toMatchObject({ kind: 'ok', sessionId: '-5816921724287494047' });
    expect(a('CREATE-SESSION', 200, { 'BITS-Session-Id': 'x'.repeat(300) }).kind).toBe('invalid');
    expect(sameSessionId(SID, SID.toLowerCase())).toBe(true);
    expect(sameSessionId('-58', '-58')).toBe(true);
    expect(sameSessionId('abc', 'ABC')).toBe(false);
    expect(a('FRAGMENT', 200, { 'BITS-Session-Id': '-57', 'BITS-Received-Content-Range': '10' }, '-58').kind).toBe('invalid');
  });

  it('12.4 a 501 without a BITS error is a web server that does not speak BITS: permanent; with one it is a BITS refusal', () => {
    expect(classifyAck({ request: 'CREATE-SESSION', status: 501, headers: {} })).toMatchObject({ kind: 'permanent', problem: expect.stringMatching(/not a BITS upload server/) });
    const refused = a('CREATE-SESSION', 501, { 'BITS-Error': '0x80070005' });
    expect(refused).toMatchObject({ kind: 'permanent', bitsError: 0x80070005 });
    expect(refused.problem).toBeUndefined();
  });

  it('12.5 BITS-Recieved-Content-Range (misspelled) counts as BITS-Received-Content-Range, in a 416 and in a 200', () => {
    expect(a('FRAGMENT', 416, { 'BITS-Recieved-Content-Range': '4096' }, SID)).toMatchObject({ kind: 'resync', receivedContentRange: 4096 });
    expect(a('FRAGMENT', 200, { 'BITS-Recieved-Content-Range': '4096' }, SID)).toMatchObject({ kind: 'ok', receivedContentRange: 4096 });
  });

  it('error statuses are classified by the one failure table (src/protocol/failure.ts), Retry-After kept for the retry wait', () => {
    for (const status of [400, 403, 404, 405, 408, 429, 500, 502, 503, 504, 505, 507]) {
      for (const bitsError of [undefined, '0x80070057']) {
        const ack = a('FRAGMENT', status, bitsError ? { 'BITS-Error': bitsError } : {}, SID);
        const want = classifyHttpFailure(status, bitsError ? 0x80070057 : undefined) === 'retry' ? 'transient' : 'permanent';
        expect(ack.kind, `${status} ${bitsError}`).toBe(want);
      }
    }
    expect(a('FRAGMENT', 503, { 'Retry-After': '2' }, SID)).toMatchObject({ kind: 'transient', retryAfter: '2' });
  });
});
