// The SDK against a scripted socket: what a real server cannot easily be made to do (offsets
// and recovery before history exists, chosen close codes, a silent network, a full queue).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Fanout, FanoutError, GAVE_UP, QUEUE_FULL, decodeBinary, encodeBinary } from "../../static/sdk/fanout.js";
import { next, sleep, until } from "./helpers.mjs";

/** A WebSocket stand-in: each instance is one connection the test plays the server of. */
function fakeServer() {
  const sockets = [];
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.sent = [];
      this.closed = null;
      sockets.push(this);
    }
    send(data) {
      this.sent.push(typeof data === "string" ? JSON.parse(data) : data);
    }
    close(code, reason) {
      this.closed = { code, reason };
    }
    // -- the test's side --
    open() {
      this.onopen?.({});
    }
    push(obj) {
      this.onmessage?.({ data: typeof obj === "string" || obj instanceof ArrayBuffer ? obj : JSON.stringify(obj) });
    }
    drop(code, reason = "") {
      this.onclose?.({ code, reason });
    }
    async command(op) {
      await until(() => this.sent.some((c) => c.op === op && !c.answered), "a " + op + " command", 3000);
      const cmd = this.sent.find((c) => c.op === op && !c.answered);
      cmd.answered = true;
      return cmd;
    }
    reply(cmd, res) {
      this.push({ id: cmd.id, res });
    }
    async handshake(res = { client: "c" + sockets.length, user: "" }) {
      this.open();
      this.reply(await this.command("connect"), res);
    }
  }
  return {
    sockets,
    FakeSocket,
    async socket(n) {
      await until(() => sockets.length >= n, "socket " + n, 3000);
      return sockets[n - 1];
    },
  };
}

function client(fake, opts = {}) {
  return new Fanout("ws://fake/ws", { websocket: fake.FakeSocket, minReconnectDelay: 1, maxReconnectDelay: 5, ...opts });
}

test("offers the fanout.v1 subprotocol and sends connect first, with the token", async () => {
  const fake = fakeServer();
  const c = client(fake, { token: "T" });
  c.connect();
  const s = await fake.socket(1);
  assert.deepEqual(s.protocols, ["fanout.v1"]);
  s.open();
  const cmd = await s.command("connect");
  assert.equal(cmd.token, "T");
  s.reply(cmd, { client: "abc", user: "u1" });
  assert.deepEqual(await next(c, "connected"), { client: "abc", user: "u1", ttl: undefined });
  c.disconnect();
  assert.equal(s.closed.code, 1000);
});

test("recovery: resubscribes with since and delivers every offset exactly once", async () => {
  const fake = fakeServer();
  const c = client(fake);
  const sub = c.newSubscription("hist.a");
  const got = [];
  const subscribed = [];
  sub.on("publication", (p) => got.push(p.offset));
  sub.on("subscribed", (ctx) => subscribed.push(ctx));
  sub.subscribe();
  c.connect();
  const s1 = await fake.socket(1);
  await s1.handshake();
  const first = await s1.command("sub");
  assert.equal(first.since, undefined);
  s1.reply(first, { o: 2, e: "E" });
  await next(sub, "subscribed");
  s1.push({ ch: "hist.a", d: { n: 3 }, o: 3 });
  s1.push({ ch: "hist.a", s: "four", o: 4 });
  s1.push({ ch: "hist.a", s: "four", o: 4 }); // a duplicate
  s1.push({ ch: "hist.a", d: 2, o: 2 }); // older than the subscription
  assert.deepEqual(got, [3, 4]);

  s1.drop(1006);
  const s2 = await fake.socket(2);
  await s2.handshake();
  const again = await s2.command("sub");
  assert.deepEqual(again.since, { o: 4, e: "E" });
  s2.push({ ch: "hist.a", d: 5, o: 5 }); // live, before the reply: held back, then deduplicated
  s2.reply(again, { o: 6, e: "E", recovered: true, pubs: [{ o: 4, s: "four" }, { o: 5, d: 5 }, { o: 6, d: 6 }] });
  await sleep(0); // the reply is handled in a later microtask, as after a socket event
  s2.push({ ch: "hist.a", d: 6, o: 6 });
  s2.push({ ch: "hist.a", d: 7, o: 7 });
  assert.deepEqual(got, [3, 4, 5, 6, 7]);
  assert.equal(subscribed[1].recovered, true);
  assert.equal(subscribed[1].wasRecovering, true);
  assert.equal(sub.offset, 7);
  c.disconnect();
});

test("a new epoch means not recovered, and offsets start over", async () => {
  const fake = fakeServer();
  const c = client(fake);
  const sub = c.newSubscription("hist.b", { since: { offset: 40, epoch: "old" } });
  const got = [];
  sub.on("publication", (p) => got.push(p.offset));
  sub.subscribe();
  c.connect();
  const s = await fake.socket(1);
  await s.handshake();
  const cmd = await s.command("sub");
  assert.deepEqual(cmd.since, { o: 40, e: "old" });
  const subscribed = next(sub, "subscribed");
  s.reply(cmd, { o: 3, e: "new", recovered: false, pubs: [] });
  const ctx = await subscribed;
  assert.equal(ctx.recovered, false);
  assert.equal(ctx.epoch, "new");
  s.push({ ch: "hist.b", d: 4, o: 4 });
  assert.deepEqual(got, [4]);
  c.disconnect();
});

test("1012 with reconnect_after_ms: waits at least that long", async () => {
  const fake = fakeServer();
  const c = client(fake);
  c.connect();
  const s1 = await fake.socket(1);
  await s1.handshake();
  const t0 = Date.now();
  const gone = next(c, "disconnected");
  s1.drop(1012, JSON.stringify({ reconnect_after_ms: 300 }));
  const ctx = await gone;
  assert.equal(ctx.willReconnect, true);
  assert.ok(ctx.delay >= 300, String(ctx.delay));
  await fake.socket(2);
  assert.ok(Date.now() - t0 >= 290, String(Date.now() - t0));
  c.disconnect();
});

test("never reconnects after a 4500-4999 close; does after 4000-4499 and 1006", async () => {
  for (const [code, again] of [[4500, false], [4501, false], [4503, false], [4999, false], [4008, true], [4499, true], [1006, true]]) {
    const fake = fakeServer();
    const c = client(fake);
    const events = [];
    c.on("connecting", () => events.push("connecting"));
    c.connect();
    const s = await fake.socket(1);
    await s.handshake();
    const gone = next(c, "disconnected");
    s.drop(code, "bye");
    const ctx = await gone;
    assert.equal(ctx.code, code);
    assert.equal(ctx.willReconnect, again, "close " + code);
    await sleep(100);
    assert.equal(fake.sockets.length, again ? 2 : 1, "close " + code);
    assert.equal(c.state, again ? "connecting" : "disconnected");
    c.disconnect();
  }
});

test("an expired static token is not retried; getToken() is asked for a new one", async () => {
  const fake = fakeServer();
  const c = client(fake, { token: "old" });
  c.connect();
  const s = await fake.socket(1);
  await s.handshake();
  s.drop(4001, "token expired");
  assert.equal(c.state, "disconnected");

  const fake2 = fakeServer();
  let asked = 0;
  const c2 = client(fake2, { token: "old", getToken: async () => "new" + ++asked });
  c2.connect();
  const a = await fake2.socket(1);
  await a.handshake();
  a.drop(4001, "token expired");
  const b = await fake2.socket(2);
  b.open();
  assert.equal((await b.command("connect")).token, "new1");
  c2.disconnect();
});

test("application ping when idle; no pong means the socket is given up and replaced", async () => {
  const fake = fakeServer();
  const c = client(fake, { pingInterval: 100, pongTimeout: 100 });
  c.connect();
  const s1 = await fake.socket(1);
  await s1.handshake();
  s1.reply(await s1.command("ping"), {}); // answered: nothing happens
  const ping = await s1.command("ping"); // the next idle period: not answered
  assert.ok(ping.id > 0);
  const ctx = await next(c, "disconnected");
  assert.deepEqual([ctx.code, ctx.reason, ctx.willReconnect], [GAVE_UP, "no pong", true]);
  assert.equal(s1.closed.code, GAVE_UP);
  await fake.socket(2);
  c.disconnect();
});

test("commands wait for the connection in a bounded queue, after the resubscriptions", async () => {
  const fake = fakeServer();
  const c = client(fake, { maxQueue: 2 });
  c.connect();
  c.subscribe("room");
  const p1 = c.publish("room", { a: 1 });
  const p2 = c.publishText("room", "two");
  await assert.rejects(c.publish("room", 3), (err) => err instanceof FanoutError && err.code === QUEUE_FULL);
  const s = await fake.socket(1);
  await s.handshake();
  await until(() => s.sent.length === 4, "four commands");
  assert.deepEqual(s.sent.map((c) => c.op), ["connect", "sub", "pub", "pub"]);
  s.push({ id: s.sent[2].id, res: {} });
  s.push({ id: s.sent[3].id, error: { code: 403, message: "not allowed" } });
  assert.deepEqual(await p1, {});
  await assert.rejects(p2, (err) => err.code === 403 && err.message === "not allowed");
  c.disconnect();
  await assert.rejects(c.publish("room", 1), (err) => err.code === 499);
});

test("full-jitter backoff stays between 0 and min(max, min * 2^attempt)", () => {
  const c = new Fanout("ws://x", { minReconnectDelay: 100, maxReconnectDelay: 1000 });
  for (let attempt = 1; attempt < 8; attempt++) {
    const cap = Math.min(1000, 100 * 2 ** attempt);
    const seen = Array.from({ length: 200 }, () => c._backoff(attempt));
    assert.ok(seen.every((d) => d >= 0 && d <= cap), attempt + ": " + Math.max(...seen));
    assert.ok(Math.max(...seen) > cap / 2, "jittered over the whole range");
  }
});

test("binary frames: publications with and without an offset, and the publish frame", () => {
  const ch = new TextEncoder().encode("bin");
  const plain = new Uint8Array([1, 0, ch.length, ...ch, 9, 8]);
  assert.deepEqual(decodeBinary(plain.buffer), { channel: "bin", offset: undefined, binary: new Uint8Array([9, 8]) });
  const withOffset = new Uint8Array([1, 1, 0, 0, 0, 0, 0, 0, 1, 2, ch.length, ...ch, 7]);
  assert.deepEqual(decodeBinary(withOffset), { channel: "bin", offset: 258, binary: new Uint8Array([7]) });
  assert.equal(decodeBinary(new Uint8Array([2, 0, 0])), null);
  assert.deepEqual([...encodeBinary(5, "bin", new Uint8Array([1, 2]))], [2, 0, 0, 0, 5, 3, ...ch, 1, 2]);
});

test("join, leave, gap and a server unsub reach the subscription", async () => {
  const fake = fakeServer();
  const c = client(fake);
  const sub = c.subscribe("room");
  const seen = [];
  for (const ev of ["join", "leave", "gap", "unsubscribed"]) sub.on(ev, (ctx) => seen.push([ev, ctx]));
  c.connect();
  const s = await fake.socket(1);
  await s.handshake();
  s.reply(await s.command("sub"), {});
  s.push({ ch: "room", ev: "join", who: { client: "x", user: "u", info: { name: "Ann" } } });
  s.push({ ch: "room", ev: "leave", who: { client: "x", user: "u" } });
  s.push({ ch: "room", ev: "gap", reason: "backend" });
  s.push({ ch: "room", ev: "unsub", code: 2000, reason: "kicked" });
  assert.deepEqual(seen, [
    ["join", { channel: "room", client: "x", user: "u", info: { name: "Ann" } }],
    ["leave", { channel: "room", client: "x", user: "u" }],
    ["gap", { channel: "room", reason: "backend" }],
    ["unsubscribed", { channel: "room", code: 2000, reason: "kicked" }],
  ]);
  assert.equal(sub.state, "unsubscribed");
  c.disconnect();
});
