// Topic and payload parsing, the per-node ACL and the packet size scanner: the pure parts of the MQTT gateway.
import { describe, expect, it } from 'vitest';
import { mayPublish, maySubscribe } from '../gateways/mqtt/acl.ts';
import { PacketSizeScanner } from '../gateways/mqtt/frame-guard.ts';
import { parseResourcesPayload, setPayload } from '../gateways/mqtt/codec.ts';
import { nodeIdProblem, parseNodeTopic } from '../gateways/mqtt/topics.ts';

describe('mqtt topics', () => {
  it('classifies node topics by level', () => {
    expect(parseNodeTopic('node/check')).toEqual({ kind: 'check' });
    expect(parseNodeTopic('node/n1/resources')).toEqual({ kind: 'resources', id: 'n1' });
    expect(parseNodeTopic('node/n1/led')).toEqual({ kind: 'value', id: 'n1', resource: 'led' });
    expect(parseNodeTopic('node/check/led')).toEqual({ kind: 'value', id: 'check', resource: 'led' });
    expect(parseNodeTopic('node/n1')).toMatchObject({ kind: 'bad', reason: 'bad-topic' });
    expect(parseNodeTopic('node/n1/a/b')).toMatchObject({ kind: 'bad', reason: 'bad-topic' });
    expect(parseNodeTopic('node//led')).toMatchObject({ kind: 'bad', reason: 'bad-id' });
    expect(parseNodeTopic('node/n1/')).toMatchObject({ kind: 'bad', reason: 'bad-resource' });
  });

  it('refuses ids with wildcards, separators, control characters, or too long', () => {
    for (const bad of ['', 'a+b', 'a#', 'a/b', 'a\u0000b', 'x'.repeat(65)]) expect(nodeIdProblem(bad)).toBeDefined();
    for (const ok of ['n1', 'wipy-1', 'mqtt_test_node', 'é', 'x'.repeat(64)]) expect(nodeIdProblem(ok)).toBeUndefined();
  });

  it('parses resource lists and set payloads as pyaiot did', () => {
    expect(parseResourcesPayload(Buffer.from('["a","b","a"]'))).toEqual({ ok: true, value: ['a', 'b'] });
    expect(parseResourcesPayload(Buffer.from('["resources"]'))).toMatchObject({ ok: false, reason: 'bad-resource' });
    expect(setPayload('1')).toBe('1');
    expect(setPayload({ on: true })).toBe('{"on":true}');
  });
});

describe('mqtt ACL', () => {
  it('lets a node publish only as itself and subscribe only to what is addressed to it', () => {
    expect(mayPublish('n1', 'node/n1/led', Buffer.from('{}')).ok).toBe(true);
    expect(mayPublish('n1', 'node/check', Buffer.from('{"id":"n1"}')).ok).toBe(true);
    expect(mayPublish('n1', 'node/check', Buffer.from('{"id":"n2"}')).ok).toBe(false);
    expect(mayPublish('n1', 'node/n10/led', Buffer.from('{}')).ok).toBe(false);
    expect(mayPublish('n1', 'gateway/n1/led/set', Buffer.from('1')).ok).toBe(false);
    expect(maySubscribe('n1', 'gateway/n1/#').ok).toBe(true);
    expect(maySubscribe('n1', 'gateway/check').ok).toBe(true);
    expect(maySubscribe('n1', 'gateway/+/discover').ok).toBe(false);
    expect(maySubscribe('n1', 'gateway/n10/discover').ok).toBe(false);
  });
});

describe('mqtt packet size scanner', () => {
  const publish = (bodyLength: number) => {
    // Remaining length as the MQTT variable byte integer ([MQTT-2.2.3]).
    const len: number[] = [];
    let x = bodyLength;
    do {
      let b = x % 128;
      x = Math.floor(x / 128);
      if (x > 0) b |= 0x80;
      len.push(b);
    } while (x > 0);
    return Buffer.concat([Buffer.from([0x30, ...len]), Buffer.alloc(bodyLength)]);
  };

  it('follows packet boundaries across arbitrary chunking', () => {
    const s = new PacketSizeScanner(200);
    const stream = Buffer.concat([publish(10), publish(200), publish(0), publish(150)]);
    for (let i = 0; i < stream.length; i += 7) expect(s.feed(stream.subarray(i, i + 7))).toBeUndefined();
  });

  it('refuses a packet as soon as its header announces more than the limit', () => {
    const s = new PacketSizeScanner(200);
    expect(s.feed(publish(100))).toBeUndefined();
    expect(s.feed(publish(201).subarray(0, 3))).toBe('oversized');
    expect(new PacketSizeScanner(1e9).feed(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff]))).toBe('malformed-length');
  });
});
