import { describe, expect, it } from 'vitest';
import { mapTransportError } from '../../src/transport/http.js';
import { ExitCode, TransportError, toBitsError } from '../../src/errors.js';
import { HRESULT } from '../../src/protocol/hresult.js';

const url = new URL('http://127.0.0.1:9/x');

describe('mapTransportError', () => {
  it('maps socket errors to resumable transport errors with the WinINet HRESULT', () => {
    const reset = mapTransportError(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), url);
    expect(reset).toBeInstanceOf(TransportError);
    expect((reset as TransportError).hresult).toBe(HRESULT.ERROR_INTERNET_CONNECTION_RESET);
    const refused = mapTransportError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), url);
    expect((refused as TransportError).hresult).toBe(HRESULT.ERROR_INTERNET_CANNOT_CONNECT);
    expect(toBitsError(refused).exitCode).toBe(ExitCode.NETWORK);
  });

  it('does not disguise a bug as a network fault (it would be retried until the no-progress timeout)', () => {
    const bug = mapTransportError(new TypeError('client.request is not a function'), url);
    expect(bug).not.toBeInstanceOf(TransportError);
    expect(toBitsError(bug).exitCode).toBe(ExitCode.INTERNAL);
  });
});
