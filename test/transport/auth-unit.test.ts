import { describe, expect, it } from 'vitest';
import { md4 } from '../../src/transport/auth/md4.js';
import {
  computeNtlmv2,
  createAuthenticateMessage,
  createChallengeMessage,
  createNegotiateMessage,
  encodeAvPairs,
  ntowfv1,
  ntowfv2,
  parseAuthenticateMessage,
  parseChallengeMessage,
  unwrapSpnego,
  verifyAuthenticateMessage,
} from '../../src/transport/auth/ntlm.js';
import { parseChallenges } from '../../src/transport/auth/challenge.js';
import { rankChallenges } from '../../src/transport/auth/session.js';
import { digestResponse } from '../../src/transport/auth/digest.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('MD4 (RFC 1320 §A.5 test suite)', () => {
  const vectors: Array<[string, string]> = [
    ['', '31d6cfe0d16ae931b73c59d7e0c089c0'],
    ['a', 'bde52cb31de33e46245e05fbdbd6fb24'],
    ['abc', 'a448017aaf21d8525fc10ae87aa6729d'],
    ['message digest', 'd9130a8164549fe818874806e1c7014b'],
    ['abcdefghijklmnopqrstuvwxyz', 'd79e1c308aa5bbcdeea8ed63df412da9'],
    ['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789', '043f8582f241db351ce627e153e7f0e4'],
    ['12345678901234567890123456789012345678901234567890123456789012345678901234567890', 'e33b4ddc9c38f2199c3e7b164fcc0536'],
  ];
  for (const [input, want] of vectors) {
    it(`MD4("${input.slice(0, 20)}")`, () => expect(md4(Buffer.from(input)).toString('hex')).toBe(want));
  }
  it('handles the 55/56/64-byte padding boundaries consistently', () => {
    // 55 bytes fit one block with the length, 56 need two: both must differ and be stable.
    const a = md4(Buffer.alloc(55, 0x61)).toString('hex');
    const b = md4(Buffer.alloc(56, 0x61)).toString('hex');
    expect(a).not.toBe(b);
    expect(md4(Buffer.alloc(64, 0x61))).toHaveLength(16);
  });
});

describe('MS-NLMP §4.2 test vectors', () => {
  // §4.2.1 common values.
  const user = 'User';
  const domain = 'Domain';
  const password = 'Password';
  const serverChallenge = hex('0123456789abcdef');
  const clientChallenge = hex('aaaaaaaaaaaaaaaa');

  it('NTOWFv1 (§4.2.2.1.2) = MD4 of the UTF-16LE password', () => {
    expect(ntowfv1(password).toString('hex')).toBe('a4f49c406510bdcab6824ee7c30fd852');
  });

  it('NTOWFv2 (§4.2.4.1.1)', () => {
    expect(ntowfv2(password, user, domain).toString('hex')).toBe('0c868a403bfd7a93a3001ef22ef02e3f');
  });

  it('parses the §4.2.4.3 CHALLENGE_MESSAGE', () => {
    const msg = hex(`4e544c4d53535000020000000c000c003800000033828ae20123456789abcdef
      00000000000000002400240044000000060070170000000f53006500720076006500720002000c00
      44006f006d00610069006e0001000c0053006500720076006500720000000000`);
    const c = parseChallengeMessage(msg);
    expect(c.serverChallenge.toString('hex')).toBe('0123456789abcdef');
    expect(c.targetName).toBe('Server');
    expect(c.flags >>> 0).toBe(0xe28a8233);
    expect(c.avPairs.map((p) => [p.id, p.value.toString('utf16le')])).toEqual([
      [2, 'Domain'],
      [1, 'Server'],
    ]);
  });

  it('NTLMv2 response, LMv2 response and session base key (§4.2.4.1.2, §4.2.4.2.1-2)', () => {
    const targetInfo = encodeAvPairs([
      { id: 2, value: Buffer.from('Domain', 'utf16le') },
      { id: 1, value: Buffer.from('Server', 'utf16le') },
    ]);
    const r = computeNtlmv2({ user, domain, password, serverChallenge, clientChallenge, time: 0n, targetInfo });
    expect(r.ntProofStr.toString('hex')).toBe('68cd0ab851e51c96aabc927bebef6a1c');
    expect(r.lmChallengeResponse.toString('hex')).toBe('86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa');
    expect(r.sessionBaseKey.toString('hex')).toBe('8de40ccadbc14a82f15cb0ad0de95ca3');
    // temp = 0x0101 Z(6) time Z... clientChallenge Z(4) targetInfo Z(4)
    expect(r.ntChallengeResponse.subarray(16).toString('hex')).toBe(
      '0101000000000000' + '0000000000000000' + 'aaaaaaaaaaaaaaaa' + '00000000' + targetInfo.toString('hex') + '00000000',
    );
  });
});

describe('NTLM messages round trip through the server-side check', () => {
  const negotiate = createNegotiateMessage();
  const serverChallenge = Buffer.from('1122334455667788', 'hex');

  it('with a server timestamp: Z(24) LM response and a MIC that verifies', () => {
    const challengeBytes = createChallengeMessage({ serverChallenge, targetName: 'CORP' });
    const challenge = parseChallengeMessage(challengeBytes);
    const msg = createAuthenticateMessage(negotiate, challenge, { user: 'alice', domain: 'CORP', password: 's3cret!' });
    const auth = parseAuthenticateMessage(msg);
    expect(auth.user).toBe('alice');
    expect(auth.domain).toBe('CORP');
    expect(auth.lmChallengeResponse.equals(Buffer.alloc(24))).toBe(true);
    expect(auth.mic).toBeDefined();
    expect(verifyAuthenticateMessage({ auth, serverChallenge, password: 's3cret!', negotiate, challenge: challengeBytes })).toBe(true);
    expect(verifyAuthenticateMessage({ auth, serverChallenge, password: 's3cret?', negotiate, challenge: challengeBytes })).toBe(false);
    // A tampered message fails the MIC even with the right password.
    const tampered = Buffer.from(msg);
    tampered[60] ^= 0x10; // flags
    expect(verifyAuthenticateMessage({ auth: parseAuthenticateMessage(tampered), serverChallenge, password: 's3cret!', negotiate, challenge: challengeBytes })).toBe(false);
  });

  it('without a server timestamp: LMv2 response, no MIC', () => {
    const challengeBytes = createChallengeMessage({ serverChallenge, timestamp: null });
    const msg = createAuthenticateMessage(negotiate, parseChallengeMessage(challengeBytes), { user: 'bob', domain: '', password: 'pw' });
    const auth = parseAuthenticateMessage(msg);
    expect(auth.lmChallengeResponse).toHaveLength(24);
    expect(auth.lmChallengeResponse.equals(Buffer.alloc(24))).toBe(false);
    expect(verifyAuthenticateMessage({ auth, serverChallenge, password: 'pw' })).toBe(true);
  });

  it('finds the NTLM token inside a SPNEGO wrapper', () => {
    const inner = createChallengeMessage({ serverChallenge });
    const wrapped = Buffer.concat([Buffer.from([0xa1, 0x81, 0x00, 0x30, 0x00, 0xa2, 0x81, 0x00, 0x04, 0x81, inner.length]), inner, Buffer.from([0xa3, 0x02, 0x04, 0x00])]);
    expect(unwrapSpnego(wrapped).equals(inner)).toBe(true);
    expect(unwrapSpnego(inner).equals(inner)).toBe(true);
    expect(() => unwrapSpnego(Buffer.from('6082kerberos'))).toThrow(/Kerberos/);
  });
});

describe('WWW-Authenticate parsing and ranking', () => {
  it('splits several challenges with parameters and tokens', () => {
    const c = parseChallenges('Negotiate, NTLM, Digest realm="a, b", qop="auth,auth-int", nonce="n1", algorithm=SHA-256, Basic realm="x"');
    expect(c.map((x) => x.scheme)).toEqual(['Negotiate', 'NTLM', 'Digest', 'Basic']);
    expect(c[2]!.params).toEqual({ realm: 'a, b', qop: 'auth,auth-int', nonce: 'n1', algorithm: 'SHA-256' });
    expect(c[3]!.params['realm']).toBe('x');
  });

  it('reads token68 with padding', () => {
    const c = parseChallenges('NTLM TlRMTVNTUAACAAAA==, Basic realm="r"');
    expect(c[0]).toEqual({ scheme: 'NTLM', token68: 'TlRMTVNTUAACAAAA==', params: {} });
    expect(c[1]!.scheme).toBe('Basic');
  });

  it('handles escaped quotes', () => {
    expect(parseChallenges('Basic realm="a \\"q\\" b"')[0]!.params['realm']).toBe('a "q" b');
  });

  it('ranks Negotiate > NTLM > Digest SHA-256 > Digest MD5 > Basic; skips auth-int-only Digest', () => {
    const c = parseChallenges(
      'Basic realm="x", Digest realm="r", nonce="1", algorithm=MD5, qop="auth", Digest realm="r", nonce="1", algorithm=SHA-256, qop="auth", Digest realm="r", nonce="2", qop="auth-int", NTLM, Negotiate, Bearer',
    );
    expect(rankChallenges(c).map((x) => `${x.scheme}${x.params['algorithm'] ? '/' + x.params['algorithm'] : ''}`)).toEqual([
      'Negotiate',
      'NTLM',
      'Digest/SHA-256',
      'Digest/MD5',
      'Basic',
    ]);
  });
});

describe('Digest response (RFC 7616 §3.9.1 example)', () => {
  const base = {
    user: 'Mufasa',
    realm: 'http-auth@example.org',
    password: 'Circle of Life',
    method: 'GET',
    uri: '/dir/index.html',
    nonce: '7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v',
    cnonce: 'f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ',
    nc: '00000001',
    qop: 'auth',
  };
  it('MD5', () => expect(digestResponse({ ...base, algorithm: 'MD5' })).toBe('8ca523f5e9506fed4657c9700eebdbec'));
  it('SHA-256', () =>
    expect(digestResponse({ ...base, algorithm: 'SHA-256' })).toBe('753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1'));
});
