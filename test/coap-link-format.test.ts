import { describe, expect, it } from 'vitest';
import { parseLinkFormat, resourceName } from '../gateways/coap/link-format.ts';
import { decodeUtf8, parseBeacon, parseValuePost } from '../gateways/coap/codec.ts';

describe('RFC 6690 link-format parser', () => {
  it('parses several links with attributes, flags and quoted values holding commas and semicolons', () => {
    const doc =
      '</.well-known/core>;ct=40,</name>;ct=0;title="Node name; with, punctuation",\n' +
      ' </temperature>;rt="temperature-c";if=sensor;obs, </led> ; ct=0 ; title="LED \\"1\\""';
    const { links, errors } = parseLinkFormat(doc);
    expect(errors).toEqual([]);
    expect(links.map((l) => l.target)).toEqual(['/.well-known/core', '/name', '/temperature', '/led']);
    expect(links[1].attrs).toEqual({ ct: '0', title: 'Node name; with, punctuation' });
    expect(links[2]).toMatchObject({ obs: true, attrs: { rt: 'temperature-c', if: 'sensor', obs: true } });
    expect(links[3]).toMatchObject({ obs: false, attrs: { ct: '0', title: 'LED "1"' } });
  });

  it('parses what libcoap and RIOT serve', () => {
    const libcoap =
      '</>;title="General Info";ct=0,</time>;if="clock";rt="ticks";title="Internal Clock";ct=0;obs,</async>;ct=0';
    expect(parseLinkFormat(libcoap).links.map((l) => [l.target, l.obs])).toEqual([
      ['/', false],
      ['/time', true],
      ['/async', false],
    ]);
    const riot = '</board>,</led>,</mcu>,</name>,</os>,</position>,</temperature>';
    expect(parseLinkFormat(riot).links).toHaveLength(7);
  });

  it('keeps the first of repeated parameters (RFC 5988 §5.3) and is empty on empty input', () => {
    expect(parseLinkFormat('</a>;ct=0;ct=40').links[0].attrs.ct).toBe('0');
    expect(parseLinkFormat('')).toEqual({ links: [], errors: [] });
    expect(parseLinkFormat('  \n ')).toEqual({ links: [], errors: [] });
  });

  it('reports garbage and recovers at the next link', () => {
    const r = parseLinkFormat('garbage,</ok>;ct=0,<unterminated');
    expect(r.links.map((l) => l.target)).toEqual(['/ok']);
    expect(r.errors).toHaveLength(2);
    const q = parseLinkFormat('</a>;title="never closed, </b>');
    expect(q.links).toEqual([]);
    expect(q.errors[0]).toMatch(/unterminated quoted/);
    expect(parseLinkFormat('</a> junk, </b>').links.map((l) => l.target)).toEqual(['/b']);
    expect(parseLinkFormat('</a>;=x').errors[0]).toMatch(/empty parameter/);
  });

  it('names resources without the leading slash and skips non-resources', () => {
    expect(resourceName('/temperature')).toBe('temperature');
    expect(resourceName('/sensors/temp')).toBe('sensors/temp');
    expect(resourceName('led')).toBe('led');
    expect(resourceName('/.well-known/core')).toBeUndefined();
    expect(resourceName('/')).toBeUndefined();
    expect(resourceName('coap://[::1]/x')).toBeUndefined();
  });
});

describe('beacon and value payloads', () => {
  it('takes the uid after the LAST colon and flags reset', () => {
    expect(parseBeacon('alive:abc')).toEqual({ ok: true, uid: 'abc', reset: false });
    expect(parseBeacon('Alive:1234')).toEqual({ ok: true, uid: '1234', reset: false });
    expect(parseBeacon('reset:0a1b2c')).toEqual({ ok: true, uid: '0a1b2c', reset: true });
    expect(parseBeacon('alive:x:y')).toMatchObject({ uid: 'y' });
    expect(parseBeacon('alive')).toMatchObject({ ok: false, code: '4.00' });
    expect(parseBeacon('alive:')).toMatchObject({ ok: false, code: '4.00' });
  });

  it('splits value posts at the FIRST colon; values keep colons and UTF-8', () => {
    expect(parseValuePost('temperature:23.5°C')).toEqual({ ok: true, resource: 'temperature', value: '23.5°C' });
    expect(parseValuePost('time:12:30:01')).toMatchObject({ resource: 'time', value: '12:30:01' });
    expect(parseValuePost('imu:[{"type":"acc","values":[1,2,3]}]')).toMatchObject({ resource: 'imu' });
    expect(parseValuePost('dwnld: 6')).toMatchObject({ value: ' 6' });
    expect(parseValuePost('nocolon')).toMatchObject({ ok: false, code: '4.00' });
    expect(parseValuePost(':value')).toMatchObject({ ok: false, code: '4.00' });
  });

  it('refuses uids and resource names that break the identifier rule (control characters, prototype names)', () => {
    expect(parseBeacon('alive:x\u0001y')).toMatchObject({ ok: false, code: '4.00', kind: 'bad-uid' });
    expect(parseBeacon('alive:a\u0085b')).toMatchObject({ ok: false, kind: 'bad-uid' });
    expect(parseBeacon('alive:__proto__')).toMatchObject({ ok: false, kind: 'bad-uid' });
    expect(parseBeacon('alive:constructor')).toMatchObject({ ok: false, kind: 'bad-uid' });
    expect(parseValuePost('te\u007fmp:1')).toMatchObject({ ok: false, code: '4.00', kind: 'bad-resource' });
    expect(parseValuePost('prototype:1')).toMatchObject({ ok: false, kind: 'bad-resource' });
    // Values are data, not names: control characters in a value pass.
    expect(parseValuePost('t:\u0001')).toMatchObject({ ok: true, value: '\u0001' });
  });

  it('decodes strict UTF-8 only', () => {
    expect(decodeUtf8(Buffer.from('23°C'))).toBe('23°C');
    expect(decodeUtf8(Buffer.from([0x61, 0xff, 0x62]))).toBeUndefined();
    expect(decodeUtf8(Buffer.from([0xc3]))).toBeUndefined();
  });
});
