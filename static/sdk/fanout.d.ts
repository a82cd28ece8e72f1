// Types of the Fanout JavaScript SDK (fanout.js, served at /sdk/fanout.js). Hand-written.

/** Close code the SDK reports when it gives up on a socket itself (no pong, no connect
 * reply, getToken() failed). Fanout never sends it; the client reconnects. */
export const GAVE_UP: 4000;
/** Error code: no reply (or no connection) within `timeout`. */
export const TIMEOUT: 408;
/** Error code: not connected, and `maxQueue` commands already wait for the connection. */
export const QUEUE_FULL: 429;
/** Error code: the connection closed before the reply (the command may or may not have
 * been applied), or disconnect() was called. */
export const DISCONNECTED: 499;

/** A failed command: `code` is the server's (400, 401, 403, 404, 409, 413, 429, 503) or one
 * of TIMEOUT, QUEUE_FULL, DISCONNECTED. */
export class FanoutError extends Error {
  readonly code: number;
  constructor(code: number, message: string);
}

/** A position in a channel's history. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** The minimal WebSocket the SDK needs: the browser's, Node 22's global, or the `ws` package. */
export interface WebSocketLike {
  binaryType: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: string | ArrayBuffer }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
}
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

export interface FanoutOptions {
  /** Connection token (JWT), sent in `connect`. */
  token?: string;
  /** Called for a token when there is none (first connect, after a 4001 close) and before
   * the current one expires (the `ttl` of the connect reply); refreshed with `refresh`. */
  getToken?: () => string | Promise<string>;
  /** A WebSocket class where there is no global one (Node 20: `import WebSocket from "ws"`). */
  websocket?: WebSocketConstructor;
  /** Backoff between reconnect attempts: a random wait in [0, min(max, min * 2^attempt)] ms.
   * Defaults 500 and 20000. */
  minReconnectDelay?: number;
  maxReconnectDelay?: number;
  /** How long a command waits for its reply, or for a connection. Default 10000 ms. */
  timeout?: number;
  /** Send an application-level `ping` after this long without any frame. Default 25000 ms. */
  pingInterval?: number;
  /** Give the socket up (close GAVE_UP, reconnect) when nothing arrives this long after a
   * ping. Default 10000 ms. */
  pongTimeout?: number;
  /** Commands that may wait for a connection; one more fails with QUEUE_FULL. Default 1000. */
  maxQueue?: number;
  /** Refresh the token this long before it expires (at least half-way through). Default 10000 ms. */
  refreshBefore?: number;
}

export interface SubscriptionOptions {
  /** Subscription token, for channels whose rule is `subscribe = "token"`. */
  token?: string;
  /** Recover from this position (e.g. one saved before a page reload). */
  since?: StreamPosition;
}

export interface Publication {
  channel: string;
  /** The offset on history channels, else undefined. */
  offset?: number;
  /** Exactly one of these is set: JSON `data`, `text`, or `binary` bytes. */
  data?: unknown;
  text?: string;
  binary?: Uint8Array;
}

export interface ClientInfo {
  client: string;
  user: string;
  info?: unknown;
}

export type ClientState = "disconnected" | "connecting" | "connected";
export type SubscriptionState = "unsubscribed" | "subscribing" | "subscribed";

export interface ConnectingContext {
  /** The close code that led here (undefined on connect()). */
  code?: number;
  reason: string;
}
export interface ConnectedContext {
  client: string;
  user: string;
  /** Seconds until the token expires, when it does. */
  ttl?: number;
}
export interface DisconnectedContext {
  code: number;
  reason: string;
  /** False after disconnect(), a 4500-4999 close, or a 4001 close without getToken. */
  willReconnect: boolean;
  /** Milliseconds until the next attempt, when willReconnect. */
  delay?: number;
}
export interface ErrorContext {
  type: "transport" | "connect" | "token" | "refresh" | "command" | "frame";
  error: Error;
}
export interface SubscribedContext {
  channel: string;
  /** True when `since` was sent and the server filled every missed publication. */
  recovered: boolean;
  wasRecovering: boolean;
  /** The channel's latest offset and epoch, on history channels. */
  offset?: number;
  epoch?: string;
}
export interface UnsubscribedContext {
  channel: string;
  /** 0 for unsubscribe(); the server's code for an `unsub` event or a refused `sub`. */
  code: number;
  reason: string;
}

interface ClientEvents {
  connecting: ConnectingContext;
  connected: ConnectedContext;
  disconnected: DisconnectedContext;
  error: ErrorContext;
  /** A publication on a channel without a Subscription (subscribed by the token's `channels`). */
  publication: Publication;
}

interface SubscriptionEvents {
  subscribing: { channel: string };
  subscribed: SubscribedContext;
  publication: Publication;
  join: ClientInfo & { channel: string };
  leave: ClientInfo & { channel: string };
  /** Publications were lost and recovery could not fill them. */
  gap: { channel: string; reason: string };
  unsubscribed: UnsubscribedContext;
  error: { channel: string; error: FanoutError };
}

declare class Emitter<E> {
  on<K extends keyof E>(event: K, fn: (ctx: E[K]) => void): this;
  once<K extends keyof E>(event: K, fn: (ctx: E[K]) => void): this;
  off<K extends keyof E>(event: K, fn: (ctx: E[K]) => void): this;
}

export interface PublishResult {
  /** On history channels: where the publication was stored. */
  offset?: number;
  epoch?: string;
}

export interface HistoryResult {
  offset: number;
  epoch: string;
  publications: Publication[];
}

export class Subscription extends Emitter<SubscriptionEvents> {
  readonly client: Fanout;
  readonly channel: string;
  readonly state: SubscriptionState;
  /** The last offset seen (or recovered), on history channels. */
  readonly offset?: number;
  readonly epoch?: string;
  /** Subscribe now if connected, else on every (re)connect until unsubscribe(). */
  subscribe(): void;
  unsubscribe(): void;
  publish(data: unknown): Promise<PublishResult>;
  publishText(text: string): Promise<PublishResult>;
  history(opts?: { since?: StreamPosition; limit?: number }): Promise<HistoryResult>;
  presence(): Promise<Record<string, { user: string; info?: unknown }>>;
  presenceStats(): Promise<{ clients: number; users: number }>;
}

export class Fanout extends Emitter<ClientEvents> {
  /** `url` of the fanout.v1 socket, e.g. "wss://example.com/ws". */
  constructor(url: string, opts?: FanoutOptions);
  readonly url: string;
  readonly state: ClientState;
  /** This connection's client id and user, once connected. */
  readonly client?: string;
  readonly user?: string;
  connect(): void;
  disconnect(): void;
  newSubscription(channel: string, opts?: SubscriptionOptions): Subscription;
  getSubscription(channel: string): Subscription | null;
  removeSubscription(sub: Subscription): void;
  /** newSubscription() (or the existing one) and subscribe(). */
  subscribe(channel: string, opts?: SubscriptionOptions): Subscription;
  subscriptions(): Map<string, Subscription>;
  /** Resolves on the server's ack; rejects with a FanoutError carrying the code. Waits for
   * the connection (in a bounded queue) while reconnecting; fails at once when disconnected. */
  publish(channel: string, data: unknown): Promise<PublishResult>;
  publishText(channel: string, text: string): Promise<PublishResult>;
  publishBinary(channel: string, bytes: Uint8Array | ArrayBuffer): Promise<PublishResult>;
  history(channel: string, opts?: { since?: StreamPosition; limit?: number }): Promise<HistoryResult>;
  presence(channel: string): Promise<Record<string, { user: string; info?: unknown }>>;
  presenceStats(channel: string): Promise<{ clients: number; users: number }>;
  /** One round trip (`ping`). */
  ping(): Promise<void>;
}

export function decodeBinary(frame: ArrayBuffer | Uint8Array): (Publication & { binary: Uint8Array }) | null;
export function encodeBinary(id: number, channel: string, payload: Uint8Array | ArrayBuffer): Uint8Array;
