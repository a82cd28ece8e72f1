// Helpers for the SDK's Node tests: real Fanout servers, real JWTs, waiting, a TCP proxy.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdirSync, openSync, writeFileSync, mkdtempSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

export { WebSocket };
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const SECRET = "test-secret-that-is-long-enough-for-hs256";
const PYTHON = process.env.FANOUT_PYTHON || "python3";

/** Channel rules for the tests: history and presence on `hist.*` (read once they exist). */
export const RULES = `
[[channels]]
match = "hist.*"
subscribe = "any"
publish = "subscribers"
presence = true
join_leave = true
presence_leave_grace = 0.5
history_size = 100
history_ttl = 600
`;

export function freePort() {
  return new Promise((ok, fail) => {
    const srv = net.createServer();
    srv.on("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

export const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** Poll `predicate` until it holds; throws with `what` after `within` ms. */
export async function until(predicate, what, within = 10000) {
  const deadline = Date.now() + within;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await sleep(20);
  }
}

/** The next `event` of `emitter` (a Fanout client or subscription), within `within` ms. */
/** The first `event` whose context passes `test` (events are per user: a client's own join comes too). */
export function nextWhere(emitter, event, test, within = 10000) {
  // One listener for the whole wait: two events of one socket read arrive in one turn.
  return new Promise((ok, fail) => {
    const listener = (ctx) => {
      if (!test(ctx)) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      ok(ctx);
    };
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      fail(new Error("no matching " + event + " event within " + within + " ms"));
    }, within);
    emitter.on(event, listener);
  });
}

export function next(emitter, event, within = 10000) {
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("no " + event + " event within " + within + " ms")), within);
    emitter.once(event, (ctx) => {
      clearTimeout(timer);
      ok(ctx);
    });
  });
}

/** `uvicorn app.main:app` as a user runs it, on one port that survives restarts. */
export class Server {
  constructor(env = {}) {
    this.env = { ...process.env, FANOUT_STATS_LOG_INTERVAL: "0", ...env };
    this.proc = null;
    this.port = 0;
  }
  get http() {
    return "http://127.0.0.1:" + this.port;
  }
  get url() {
    return "ws://127.0.0.1:" + this.port + "/ws";
  }
  async start() {
    if (!this.port) this.port = await freePort();
    mkdirSync(join(ROOT, "test-output"), { recursive: true });
    const log = openSync(join(ROOT, "test-output", `sdk-server-${this.port}.log`), "a");
    const args = ["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", String(this.port)];
    const proc = spawn(PYTHON, args, { cwd: ROOT, env: this.env, stdio: ["ignore", log, log] });
    this.proc = proc;
    let exited = false;
    proc.on("exit", () => (exited = true));
    await until(async () => {
      if (exited) throw new Error("server exited early; see test-output/sdk-server-" + this.port + ".log");
      try {
        return (await fetch(this.http + "/healthz")).status === 200;
      } catch {
        return false;
      }
    }, "the server's /healthz", 20000);
    return this;
  }
  /** SIGKILL by PID and wait for the exit: a crash, nothing closed or flushed by the server. */
  async kill() {
    const proc = this.proc;
    this.proc = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const done = new Promise((ok) => proc.once("exit", ok));
    process.kill(proc.pid, "SIGKILL");
    await done;
  }
  /** SIGTERM by PID and wait for the exit (Fanout closes its sockets with 1012). */
  async stop() {
    const proc = this.proc;
    this.proc = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const done = new Promise((ok) => proc.once("exit", ok));
    process.kill(proc.pid, "SIGTERM");
    const timer = setTimeout(() => process.kill(proc.pid, "SIGKILL"), 15000);
    await done;
    clearTimeout(timer);
  }
}

/** A fresh temporary folder of the test's own (a history file, say); remove it with rmSync. */
export function tempDir() {
  return mkdtempSync(join(tmpdir(), "fanout-sdk-"));
}

/** A rules file in a fresh temporary folder. */
export function rulesFile(text = RULES) {
  const path = join(mkdtempSync(join(tmpdir(), "fanout-sdk-")), "fanout.toml");
  writeFileSync(path, text);
  return path;
}

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** An HS256 JWT signed with node:crypto; `ttl` seconds from now becomes `exp`. */
export function sign(claims, { ttl, secret = SECRET } = {}) {
  const body = { ...claims };
  if (ttl !== undefined) body.exp = Math.floor(Date.now() / 1000) + ttl;
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" })) + "." + b64url(JSON.stringify(body));
  return head + "." + b64url(createHmac("sha256", secret).update(head).digest());
}

/** A TCP proxy in front of `port`; cut() drops every connection through it, like a network fault. */
export async function proxy(port) {
  const sockets = new Set();
  const srv = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((ok) => srv.listen(0, "127.0.0.1", ok));
  return {
    url: "ws://127.0.0.1:" + srv.address().port + "/ws",
    cut() {
      for (const s of sockets) s.destroy();
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((ok) => srv.close(ok));
    },
  };
}

/** Whether the server answers `op` with 404 "not available" (the feature has not landed). */
export async function unavailable(client, call) {
  try {
    await call();
    return false;
  } catch (err) {
    if (err.code === 404 && /not available/.test(err.message)) return err.message;
    throw err;
  }
}
