// Fanout JavaScript SDK: a fanout.v1 client for browsers and Node 20+. One ES module, no
// dependencies, no build step. Types: fanout.d.ts beside this file. MIT licensed.
//
//   import { Fanout } from "/sdk/fanout.js";
//   const client = new Fanout("ws://localhost:8000/ws");
//   const sub = client.newSubscription("chat.lobby");
//   sub.on("publication", (p) => console.log(p.data));
//   sub.subscribe();
//   client.connect();
//   await client.publish("chat.lobby", { text: "hi" });

const SUBPROTOCOL = "fanout.v1";
const enc = new TextEncoder();
const dec = new TextDecoder();

const DEFAULTS = {
  token: undefined,
  getToken: undefined,
  websocket: undefined,
  minReconnectDelay: 500,
  maxReconnectDelay: 20000,
  timeout: 10000,
  pingInterval: 25000,
  pongTimeout: 10000,
  maxQueue: 1000,
  refreshBefore: 10000,
};

/** The close code the SDK reports when it gives up on a socket itself (no pong, no
 * connect reply, getToken() failed); Fanout never sends it. It reconnects, as 4000-4499 do. */
export const GAVE_UP = 4000;
/** Error codes of failures the SDK sees itself; the server's are HTTP-like (400-503). */
export const TIMEOUT = 408;
export const QUEUE_FULL = 429;
export const DISCONNECTED = 499;

/** A command that failed: `code` is the server's error code (or TIMEOUT, QUEUE_FULL,
 * DISCONNECTED for failures the SDK saw itself). */
export class FanoutError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "FanoutError";
    this.code = code;
  }
}

class Emitter {
  constructor() {
    this._ev = new Map();
  }
  on(event, fn) {
    let set = this._ev.get(event);
    if (!set) this._ev.set(event, (set = new Set()));
    set.add(fn);
    return this;
  }
  off(event, fn) {
    const set = this._ev.get(event);
    if (set) set.delete(fn);
    return this;
  }
  once(event, fn) {
    const wrap = (ctx) => {
      this.off(event, wrap);
      fn(ctx);
    };
    return this.on(event, wrap);
  }
  _emit(event, ctx) {
    const set = this._ev.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(ctx);
      } catch (err) {
        // A listener's bug must not break the client's state: report it out of band.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

function publicationFrom(channel, obj) {
  const p = { channel, offset: typeof obj.o === "number" ? obj.o : undefined };
  if ("d" in obj) p.data = obj.d;
  else if ("s" in obj) p.text = obj.s;
  else if (typeof obj.b === "string") p.binary = base64ToBytes(obj.b);
  return p;
}

function base64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Decode a binary publication frame: 0x01 | flags | [offset u64 BE] | len | channel | payload. */
export function decodeBinary(buf) {
  const bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  if (bytes.length < 3 || bytes[0] !== 0x01) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 2;
  let offset;
  if (bytes[1] & 1) {
    if (bytes.length < 11) return null;
    offset = Number(view.getBigUint64(2));
    pos = 10;
  }
  const len = bytes[pos++];
  if (bytes.length < pos + len) return null;
  const channel = dec.decode(bytes.subarray(pos, pos + len));
  return { channel, offset, binary: bytes.slice(pos + len) };
}

/** Encode a binary publish: 0x02 | id u32 BE | len | channel | payload. */
export function encodeBinary(id, channel, payload) {
  const ch = enc.encode(channel);
  const data = payload instanceof Uint8Array ? payload : new Uint8Array(payload);
  const out = new Uint8Array(6 + ch.length + data.length);
  out[0] = 0x02;
  new DataView(out.buffer).setUint32(1, id);
  out[5] = ch.length;
  out.set(ch, 6);
  out.set(data, 6 + ch.length);
  return out;
}

/** One channel of a Fanout client: subscribe, recover, receive. */
export class Subscription extends Emitter {
  constructor(client, channel, opts = {}) {
    super();
    this.client = client;
    this.channel = channel;
    this.state = "unsubscribed";
    this.token = opts.token;
    this.offset = opts.since ? opts.since.offset : undefined;
    this.epoch = opts.since ? opts.since.epoch : undefined;
    this._buffer = null; // pushes that arrive while a recovering `sub` waits for its reply
    this._retry = null;
  }

  /** Ask to be subscribed; done now if connected, else as soon as the client connects. */
  subscribe() {
    if (this.state !== "unsubscribed") return;
    this._setState("subscribing");
    this._emit("subscribing", { channel: this.channel });
    if (this.client.state === "connected") this._send();
  }

  unsubscribe() {
    const was = this.state;
    this._cancel();
    if (was === "unsubscribed") return;
    this._setState("unsubscribed");
    if (this.client.state === "connected") {
      this.client._call("unsub", { ch: this.channel }, false).catch(() => {});
    }
    this._emit("unsubscribed", { channel: this.channel, code: 0, reason: "unsubscribe called" });
  }

  publish(data) {
    return this.client.publish(this.channel, data);
  }
  publishText(text) {
    return this.client.publishText(this.channel, text);
  }
  history(opts) {
    return this.client.history(this.channel, opts);
  }
  presence() {
    return this.client.presence(this.channel);
  }
  presenceStats() {
    return this.client.presenceStats(this.channel);
  }

  _setState(state) {
    this.state = state;
  }

  _cancel() {
    if (this._retry) clearTimeout(this._retry);
    this._retry = null;
    this._buffer = null;
  }

  async _send() {
    const cmd = { ch: this.channel };
    if (this.token) cmd.token = this.token;
    const recovering = this.offset !== undefined && this.epoch !== undefined;
    if (recovering) cmd.since = { o: this.offset, e: this.epoch };
    this._buffer = [];
    const conn = this.client._connId;
    let res;
    try {
      res = await this.client._call("sub", cmd, false);
    } catch (err) {
      if (this.state !== "subscribing" || conn !== this.client._connId) return;
      this._buffer = null;
      if (err.code === 409) {
        // Already subscribed (a channel from the token's `channels` claim).
        res = {};
      } else if (err.code === TIMEOUT || err.code >= 500) {
        this._emit("error", { channel: this.channel, error: err });
        this._retry = setTimeout(() => {
          this._retry = null;
          if (this.state === "subscribing" && this.client.state === "connected") this._send();
        }, this.client._backoff(1));
        return;
      } else {
        if (err.code !== DISCONNECTED) {
          this._setState("unsubscribed");
          this._emit("error", { channel: this.channel, error: err });
          this._emit("unsubscribed", { channel: this.channel, code: err.code, reason: err.message });
        }
        return;
      }
    }
    // unsubscribe() meanwhile sent its `unsub` after this `sub`: the server undid it in order.
    if (this.state !== "subscribing" || conn !== this.client._connId) return;
    const buffered = this._buffer || [];
    this._buffer = null;
    const sameEpoch = typeof res.e === "string" && res.e === this.epoch;
    const recovered = recovering && res.recovered === true && sameEpoch;
    if (typeof res.e === "string" && !sameEpoch) {
      // A new epoch: offsets start over; the old ones mean nothing any more.
      this.epoch = res.e;
      this.offset = undefined;
    }
    this._setState("subscribed");
    const pubs = Array.isArray(res.pubs) ? res.pubs.map((p) => publicationFrom(this.channel, p)) : [];
    const latest = typeof res.o === "number" ? res.o : undefined;
    this._emit("subscribed", {
      channel: this.channel,
      recovered,
      wasRecovering: recovering,
      offset: latest,
      epoch: this.epoch,
    });
    for (const p of pubs) this._publication(p);
    for (const p of buffered) this._publication(p);
    // Nothing older than the position the server reported can arrive any more.
    if (latest !== undefined && (this.offset === undefined || latest > this.offset)) {
      this.offset = latest;
    }
  }

  _publication(p) {
    if (this._buffer) {
      this._buffer.push(p);
      return;
    }
    if (this.state !== "subscribed") return;
    if (p.offset !== undefined) {
      if (this.offset !== undefined && p.offset <= this.offset) return; // seen: a duplicate
      this.offset = p.offset;
    }
    this._emit("publication", p);
  }

  _event(obj) {
    const ctx = { channel: this.channel };
    if (obj.ev === "join" || obj.ev === "leave") {
      Object.assign(ctx, obj.who || {});
      this._emit(obj.ev, ctx);
    } else if (obj.ev === "gap") {
      ctx.reason = obj.reason;
      this._emit("gap", ctx);
    } else if (obj.ev === "unsub") {
      this._cancel();
      this._setState("unsubscribed");
      this._emit("unsubscribed", { channel: this.channel, code: obj.code, reason: obj.reason });
    }
  }
}

/** A fanout.v1 connection: many channels over one WebSocket, reconnecting on its own. */
export class Fanout extends Emitter {
  constructor(url, opts = {}) {
    super();
    this.url = url;
    this.opts = { ...DEFAULTS, ...opts };
    this.state = "disconnected";
    this.client = undefined;
    this.user = undefined;
    this._token = this.opts.token;
    this._subs = new Map();
    this._ws = null;
    this._connId = 0;
    this._nextId = 1;
    this._pending = new Map(); // id -> {resolve, reject, timer}
    this._queue = []; // commands waiting for a connection
    this._attempt = 0;
    this._reconnectTimer = null;
    this._refreshTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._lastSeen = 0;
  }

  /** Connect, and keep reconnecting until disconnect() or a 4500-4999 close. */
  connect() {
    if (this.state !== "disconnected") return;
    this._attempt = 0;
    this._open("connect called");
  }

  /** Close for good: no reconnect; queued and unanswered commands fail with DISCONNECTED. */
  disconnect() {
    if (this.state === "disconnected") return;
    this._teardown(1000, "disconnect called");
    this._failAll("disconnect called");
    this._setDisconnected({ code: 1000, reason: "disconnect called", willReconnect: false });
  }

  newSubscription(channel, opts) {
    if (this._subs.has(channel)) throw new Error("a subscription to " + channel + " exists");
    const sub = new Subscription(this, channel, opts);
    this._subs.set(channel, sub);
    return sub;
  }

  getSubscription(channel) {
    return this._subs.get(channel) || null;
  }

  removeSubscription(sub) {
    if (!sub) return;
    sub.unsubscribe();
    this._subs.delete(sub.channel);
  }

  /** newSubscription(channel, opts) and subscribe() in one call. */
  subscribe(channel, opts) {
    const sub = this._subs.get(channel) || this.newSubscription(channel, opts);
    sub.subscribe();
    return sub;
  }

  subscriptions() {
    return new Map(this._subs);
  }

  /** Publish JSON `data`; resolves with the ack ({offset, epoch} on history channels). */
  publish(channel, data) {
    return this._call("pub", { ch: channel, data }, true).then(ackOf);
  }
  publishText(channel, text) {
    return this._call("pub", { ch: channel, text: String(text) }, true).then(ackOf);
  }
  publishBinary(channel, bytes) {
    return this._call(null, { ch: channel, bytes }, true).then(ackOf);
  }
  history(channel, opts = {}) {
    const cmd = { ch: channel };
    if (opts.since) cmd.since = { o: opts.since.offset, e: opts.since.epoch };
    if (opts.limit !== undefined) cmd.limit = opts.limit;
    return this._call("history", cmd, true).then((res) => ({
      offset: res.o,
      epoch: res.e,
      publications: (res.pubs || []).map((p) => publicationFrom(channel, p)),
    }));
  }
  presence(channel) {
    return this._call("presence", { ch: channel }, true).then((res) => res.clients || {});
  }
  presenceStats(channel) {
    return this._call("presence_stats", { ch: channel }, true);
  }
  /** A round trip to the server. */
  ping() {
    return this._call("ping", {}, false).then(() => undefined);
  }

  // -- connection -------------------------------------------------------------------------

  _open(reason, code) {
    this._reconnectTimer = null;
    const Impl = this.opts.websocket || globalThis.WebSocket;
    this.state = "connecting";
    this._emit("connecting", { code, reason });
    if (!Impl) {
      this._teardown();
      this._failAll("no WebSocket");
      this._emit("error", { type: "transport", error: new Error("no WebSocket: pass opts.websocket (e.g. the ws package)") });
      this._setDisconnected({ code: 0, reason: "no WebSocket implementation", willReconnect: false });
      return;
    }
    const connId = ++this._connId;
    let ws;
    try {
      ws = new Impl(this.url, [SUBPROTOCOL]);
    } catch (err) {
      this._emit("error", { type: "transport", error: err });
      this._closed(connId, 1006, String(err && err.message));
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    ws.onopen = () => {
      if (connId === this._connId) this._onOpen(connId);
    };
    ws.onmessage = (ev) => {
      if (connId === this._connId) this._onMessage(ev.data);
    };
    ws.onerror = () => {
      if (connId === this._connId) this._emit("error", { type: "transport", error: new Error("WebSocket error") });
    };
    ws.onclose = (ev) => {
      if (connId === this._connId) this._closed(connId, ev.code, ev.reason || "");
    };
  }

  async _onOpen(connId) {
    this._lastSeen = Date.now();
    let token = this._token;
    if (token === undefined && this.opts.getToken) {
      try {
        token = this._token = await this.opts.getToken();
      } catch (err) {
        if (connId !== this._connId) return;
        this._emit("error", { type: "token", error: err });
        this._abort(connId, GAVE_UP, "getToken failed");
        return;
      }
      if (connId !== this._connId) return;
    }
    const cmd = { id: this._nextId++, op: "connect" };
    if (token) cmd.token = token;
    this._expect(cmd.id, connId).then(
      (res) => this._onConnected(connId, res),
      (err) => {
        if (connId !== this._connId) return;
        this._emit("error", { type: "connect", error: err });
        this._abort(connId, GAVE_UP, "no connect reply");
      },
    );
    this._ws.send(JSON.stringify(cmd));
  }

  _onConnected(connId, res) {
    if (connId !== this._connId) return;
    this.state = "connected";
    this._attempt = 0;
    this.client = res.client;
    this.user = res.user;
    this._emit("connected", { client: res.client, user: res.user, ttl: res.ttl });
    this._scheduleRefresh(res.ttl);
    this._armPing();
    for (const sub of this._subs.values()) if (sub.state === "subscribing") sub._send();
    const queue = this._queue;
    this._queue = [];
    for (const item of queue) this._transmit(item);
  }

  // The socket closed (or was given up on): decide whether and when to come back.
  _closed(connId, code, reason) {
    if (connId !== this._connId) return;
    this._teardown();
    let willReconnect = !(code >= 4500 && code <= 4999);
    let delay;
    if (code === 4001) {
      // Token expired: a static token cannot be renewed, a getToken() callback can.
      this._token = undefined;
      if (!this.opts.getToken) willReconnect = false;
    }
    if (willReconnect) {
      delay = this._backoff(++this._attempt);
      if (code === 1012) {
        try {
          const hint = JSON.parse(reason);
          if (hint && typeof hint.reconnect_after_ms === "number") delay += hint.reconnect_after_ms;
        } catch (_) {
          // A reason that is not JSON: plain backoff.
        }
      }
    } else {
      this._failAll("connection closed for good");
    }
    for (const sub of this._subs.values()) {
      sub._cancel();
      if (sub.state === "subscribed") sub._setState("subscribing");
    }
    // Commands sent on this socket may or may not have been applied: they fail, not repeat.
    for (const [id, p] of this._pending) {
      this._pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new FanoutError(DISCONNECTED, "connection closed before the reply (" + code + ")"));
    }
    if (willReconnect) {
      this.state = "connecting";
      this._emit("disconnected", { code, reason, willReconnect: true, delay });
      this._reconnectTimer = setTimeout(() => this._open("reconnect", code), delay);
    } else {
      this._setDisconnected({ code, reason, willReconnect: false });
    }
  }

  // Give up on a socket without waiting for its close handshake (a dead network never finishes it).
  _abort(connId, code, reason) {
    const ws = this._ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close(code, reason);
      } catch (_) {
        // Already closed.
      }
    }
    this._closed(connId, code, reason);
  }

  _setDisconnected(ctx) {
    this.state = "disconnected";
    for (const sub of this._subs.values()) {
      sub._cancel();
      if (sub.state === "subscribed") sub._setState("subscribing");
    }
    this._emit("disconnected", ctx);
  }

  _teardown(code, reason) {
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._refreshTimer);
    clearTimeout(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._reconnectTimer = this._refreshTimer = this._pingTimer = this._pongTimer = null;
    const ws = this._ws;
    this._ws = null;
    this._connId++;
    if (ws && code) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close(code, reason);
      } catch (_) {
        // Already closed.
      }
    }
  }

  _failAll(reason) {
    const queue = this._queue;
    this._queue = [];
    for (const item of queue) {
      clearTimeout(item.timer);
      item.reject(new FanoutError(DISCONNECTED, reason));
    }
    for (const [id, p] of this._pending) {
      this._pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new FanoutError(DISCONNECTED, reason));
    }
  }

  /** Full jitter: a uniform wait between 0 and min(max, min * 2^attempt) ms. */
  _backoff(attempt) {
    const { minReconnectDelay: lo, maxReconnectDelay: hi } = this.opts;
    return Math.round(Math.random() * Math.min(hi, lo * 2 ** Math.min(attempt, 30)));
  }

  // -- tokens -----------------------------------------------------------------------------

  _scheduleRefresh(ttl) {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (typeof ttl !== "number" || !this.opts.getToken) return;
    const ms = Math.max(ttl * 1000 - this.opts.refreshBefore, ttl * 500, 250);
    this._refreshTimer = setTimeout(() => this._refresh(), ms);
  }

  async _refresh() {
    this._refreshTimer = null;
    const connId = this._connId;
    try {
      const token = await this.opts.getToken();
      if (connId !== this._connId) return;
      this._token = token;
      const res = await this._call("refresh", { token }, false);
      if (connId === this._connId) this._scheduleRefresh(res.ttl);
    } catch (err) {
      if (connId !== this._connId) return;
      this._emit("error", { type: "refresh", error: err });
      // Try again soon; if it never works the server closes with 4001 and we reconnect.
      this._refreshTimer = setTimeout(() => this._refresh(), 1000 + this._backoff(2));
    }
  }

  // -- keepalive --------------------------------------------------------------------------

  _armPing() {
    clearTimeout(this._pingTimer);
    const idle = Date.now() - this._lastSeen;
    this._pingTimer = setTimeout(() => this._idleCheck(), Math.max(0, this.opts.pingInterval - idle));
  }

  _idleCheck() {
    this._pingTimer = null;
    if (this.state !== "connected") return;
    if (Date.now() - this._lastSeen < this.opts.pingInterval) return this._armPing();
    const connId = this._connId;
    const sentAt = Date.now();
    this._call("ping", {}, false).catch(() => {});
    this._pongTimer = setTimeout(() => {
      this._pongTimer = null;
      if (connId !== this._connId) return;
      if (this._lastSeen >= sentAt) this._armPing();
      else this._abort(connId, GAVE_UP, "no pong");
    }, this.opts.pongTimeout);
  }

  // -- commands ---------------------------------------------------------------------------

  // Send a command (op null: a binary publish); queue it while not connected when `queue`.
  _call(op, fields, queue) {
    return new Promise((resolve, reject) => {
      const item = { op, fields, resolve, reject, timer: null };
      if (this.state === "connected") return this._transmit(item);
      if (!queue || this.state === "disconnected") {
        return reject(new FanoutError(DISCONNECTED, "not connected"));
      }
      if (this._queue.length >= this.opts.maxQueue) {
        return reject(new FanoutError(QUEUE_FULL, "not connected and " + this.opts.maxQueue + " commands wait already"));
      }
      item.timer = setTimeout(() => {
        const i = this._queue.indexOf(item);
        if (i >= 0) this._queue.splice(i, 1);
        reject(new FanoutError(TIMEOUT, "not connected within " + this.opts.timeout + " ms"));
      }, this.opts.timeout);
      this._queue.push(item);
    });
  }

  _transmit(item) {
    clearTimeout(item.timer);
    const id = this._nextId++;
    if (this._nextId > 0xffffffff) this._nextId = 1;
    this._expect(id, this._connId).then(item.resolve, item.reject);
    if (item.op === null) {
      this._ws.send(encodeBinary(id, item.fields.ch, item.fields.bytes));
    } else {
      this._ws.send(JSON.stringify({ id, op: item.op, ...item.fields }));
    }
  }

  _expect(id, connId) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new FanoutError(TIMEOUT, "no reply within " + this.opts.timeout + " ms"));
      }, this.opts.timeout);
      this._pending.set(id, { resolve, reject, timer, connId });
    });
  }

  // -- frames -----------------------------------------------------------------------------

  _onMessage(data) {
    this._lastSeen = Date.now();
    if (typeof data !== "string") {
      const p = decodeBinary(data);
      if (p) this._route(p);
      return;
    }
    let obj;
    try {
      obj = JSON.parse(data);
    } catch (err) {
      this._emit("error", { type: "frame", error: err });
      return;
    }
    if (obj === null || typeof obj !== "object") return;
    if (typeof obj.id === "number" && !("ch" in obj)) {
      const p = this._pending.get(obj.id);
      if (!p) return;
      this._pending.delete(obj.id);
      clearTimeout(p.timer);
      if (obj.error) p.reject(new FanoutError(obj.error.code, obj.error.message));
      else p.resolve(obj.res || {});
    } else if (typeof obj.ch === "string") {
      if (obj.ev) {
        const sub = this._subs.get(obj.ch);
        if (sub) sub._event(obj);
        else this._emit(obj.ev, { channel: obj.ch, ...obj });
      } else {
        this._route(publicationFrom(obj.ch, obj));
      }
    } else if (obj.ev === "error" && obj.error) {
      this._emit("error", { type: "command", error: new FanoutError(obj.error.code, obj.error.message) });
    }
  }

  _route(p) {
    const sub = this._subs.get(p.channel);
    if (sub) sub._publication(p);
    else this._emit("publication", p); // a channel subscribed by the server (token `channels`)
  }
}

function ackOf(res) {
  return typeof res.o === "number" ? { offset: res.o, epoch: res.e } : {};
}
