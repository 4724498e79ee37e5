import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encode } from '@msgpack/msgpack';
import { CodecError, JsonCodec, MsgpackCodec, createCodec, payloadOf, base64ToBytes } from '../../dist/esm/codec.js';
import { Outbox } from '../../dist/esm/outbox.js';

test('createCodec picks the subprotocol of PROTOCOL.md section 1', () => {
  assert.equal(createCodec('json').subprotocol, 'pushwire.v1.json');
  assert.equal(createCodec('msgpack').subprotocol, 'pushwire.v1.msgpack');
  assert.throws(() => createCodec('cbor'), TypeError);
});

test('JSON: a frame with several messages separated by \\n decodes in order', () => {
  const codec = new JsonCodec();
  const frame = '{"op":"message","channel":"a","data":1}\n{"op":"message","channel":"a","data":"x\\ny"}\n{"op":"ping"}';
  assert.deepEqual(codec.decode(frame), [
    { op: 'message', channel: 'a', data: 1 },
    { op: 'message', channel: 'a', data: 'x\ny' },
    { op: 'ping' },
  ]);
});

test('JSON: blank lines and a trailing newline are tolerated', () => {
  const codec = new JsonCodec();
  assert.deepEqual(codec.decode('\n{"op":"ping"}\n\n{"op":"pong"}\n'), [{ op: 'ping' }, { op: 'pong' }]);
});

test('JSON: a binary frame holding UTF-8 JSON decodes too', () => {
  const codec = new JsonCodec();
  const bytes = new TextEncoder().encode('{"op":"message","data":"héllo"}');
  assert.deepEqual(codec.decode(bytes.buffer), [{ op: 'message', data: 'héllo' }]);
});

test('JSON: encode + join makes one batch frame that decodes back', () => {
  const codec = new JsonCodec();
  const messages = [{ op: 'subscribe', id: 1, channel: 'a' }, { op: 'subscribe', id: 2, channel: 'b', data: 'line1\nline2' }];
  const frame = codec.join(messages.map((m) => codec.encode(m)));
  assert.equal(typeof frame, 'string');
  assert.equal(frame.split('\n').length, 2, 'newlines inside strings are escaped');
  assert.deepEqual(codec.decode(frame), messages);
});

test('JSON: garbage, non-maps and missing op are CodecErrors', () => {
  const codec = new JsonCodec();
  assert.throws(() => codec.decode('{"op":'), CodecError);
  assert.throws(() => codec.decode('[1,2]'), CodecError);
  assert.throws(() => codec.decode('{"code":1}'), CodecError);
  assert.throws(() => codec.decode(new Uint8Array([0xff, 0xfe])), CodecError);
});

test('MessagePack: maps concatenated back to back decode as a batch', () => {
  const codec = new MsgpackCodec();
  const a = encode({ op: 'message', channel: 'a', data: { n: 1 }, offset: 7, epoch: 'e' });
  const b = encode({ op: 'ping' });
  const frame = new Uint8Array(a.length + b.length);
  frame.set(a);
  frame.set(b, a.length);
  assert.deepEqual(codec.decode(frame.buffer), [
    { op: 'message', channel: 'a', data: { n: 1 }, offset: 7, epoch: 'e' },
    { op: 'ping' },
  ]);
});

test('MessagePack: bin data arrives as Uint8Array; absent fields are not sent as nil', () => {
  const codec = new MsgpackCodec();
  const encoded = codec.encode({ op: 'publish', id: 1, channel: 'c', data: new Uint8Array([1, 2, 3]), token: undefined });
  const [decoded] = codec.decode(encoded);
  assert.ok(decoded.data instanceof Uint8Array);
  assert.deepEqual([...decoded.data], [1, 2, 3]);
  assert.equal('token' in decoded, false);
});

test('MessagePack: encode + join, including views into a larger buffer', () => {
  const codec = new MsgpackCodec();
  const frame = codec.join([codec.encode({ op: 'a' }), codec.encode({ op: 'b' }), codec.encode({ op: 'c' })]);
  const padded = new Uint8Array(frame.length + 4);
  padded.set(frame, 2);
  const view = new DataView(padded.buffer, 2, frame.length);
  assert.deepEqual(codec.decode(view).map((m) => m.op), ['a', 'b', 'c']);
});

test('MessagePack: text frames and truncated maps are CodecErrors', () => {
  const codec = new MsgpackCodec();
  assert.throws(() => codec.decode('{"op":"ping"}'), CodecError);
  const truncated = encode({ op: 'message', data: 'abcdef' }).slice(0, 10);
  assert.throws(() => codec.decode(truncated), CodecError);
  assert.throws(() => codec.decode(encode([1, 2])), CodecError);
});

test('payloadOf: data, or data_b64 decoded to bytes for JSON clients', () => {
  assert.deepEqual(payloadOf({ data: { a: 1 } }), { a: 1 });
  const bytes = payloadOf({ data_b64: 'AAEC/w==' });
  assert.ok(bytes instanceof Uint8Array);
  assert.deepEqual([...bytes], [0, 1, 2, 255]);
  assert.deepEqual([...base64ToBytes('')], []);
  assert.equal(payloadOf({ data: null }), null);
});

test('Outbox: messages pushed in one tick leave as one frame', async () => {
  const codec = new JsonCodec();
  const frames = [];
  const outbox = new Outbox(codec, 16384, (frame) => (frames.push(frame), true));
  outbox.push({ op: 'subscribe', id: 1, channel: 'a' });
  outbox.push({ op: 'subscribe', id: 2, channel: 'b' });
  outbox.push({ op: 'pong' });
  assert.equal(frames.length, 0, 'nothing is sent synchronously');
  await Promise.resolve();
  assert.equal(frames.length, 1);
  assert.deepEqual(codec.decode(frames[0]).map((m) => m.op), ['subscribe', 'subscribe', 'pong']);
});

test('Outbox: batches are split to stay under maxBatchBytes; an oversized message goes alone', async () => {
  const codec = new MsgpackCodec();
  const frames = [];
  const outbox = new Outbox(codec, 100, (frame) => (frames.push(frame), true));
  for (let i = 0; i < 10; i++) outbox.push({ op: 'publish', id: i, channel: 'c', data: 'x'.repeat(20) });
  outbox.push({ op: 'publish', id: 99, channel: 'c', data: 'y'.repeat(300) });
  outbox.flush();
  const ids = frames.flatMap((f) => codec.decode(f).map((m) => m.id));
  assert.deepEqual(ids, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 99], 'order is kept across frames');
  assert.ok(frames.length >= 4);
  for (const frame of frames.slice(0, -1)) assert.ok(frame.byteLength <= 100, `frame of ${frame.byteLength} bytes`);
  assert.equal(codec.decode(frames.at(-1)).length, 1);
});

test('Outbox: clear() drops what was queued for a connection that is gone', async () => {
  const frames = [];
  const outbox = new Outbox(new JsonCodec(), 16384, (frame) => (frames.push(frame), true));
  outbox.push({ op: 'pong' });
  outbox.clear();
  await Promise.resolve();
  assert.deepEqual(frames, []);
});
