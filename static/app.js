// Fanout demo page. Plain JS, no build step, no external resources.
"use strict";

(function () {
  const CLOSE_CODES = {
    1000: "normal closure",
    1001: "going away (the server application is stopping, or the page is leaving)",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "closed without a status code",
    1006: "abnormal closure: the connection failed or dropped without a close frame " +
      "(server unreachable, or it refused the handshake, e.g. at its connection limit)",
    1007: "invalid payload: a text message was not valid UTF-8",
    1008: "policy violation",
    1009: "message too big: it exceeded the server's size limit",
    1011: "server error: something went wrong on the server",
    1012: "server restarting or shutting down; reconnect shortly",
    1013: "try again later: the server is at its connection limit",
    1015: "TLS handshake failure",
    4008: "slow consumer: this client read too slowly and its outbox overflowed; reconnect",
  };
  const CHANNEL_RE = /^[A-Za-z0-9_.-]{1,64}$/;
  const STATS_INTERVAL_MS = 1000;
  const STATS_TIMEOUT_MS = 3000;
  const MAX_LOG_ENTRIES = 500;
  const MAX_SHOWN_CHARS = 400;
  const BACKOFF_BASE_MS = 1000;
  const BACKOFF_MAX_MS = 30000;

  const $ = (id) => document.getElementById(id);
  const el = {
    status: $("status"),
    statusText: $("status-text"),
    endpoint: $("endpoint"),
    channel: $("channel"),
    channelField: $("channel-field"),
    connectForm: $("connect-form"),
    connectBtn: $("connect-btn"),
    autoReconnect: $("auto-reconnect"),
    wsUrl: $("ws-url"),
    sendForm: $("send-form"),
    input: $("message-input"),
    sendBtn: $("send-btn"),
    log: $("log"),
    clearBtn: $("clear-btn"),
    statConnections: $("stat-connections"),
    statBroadcast: $("stat-broadcast"),
    statEcho: $("stat-echo"),
    statWs: $("stat-ws"),
    statDelivered: $("stat-delivered"),
    statDropped: $("stat-dropped"),
    statsState: $("stats-state"),
    statsExtra: $("stats-extra"),
    statsCard: $("stats-card"),
  };

  let ws = null;
  let userClosed = false;
  let reconnectTimer = null;
  let countdownTimer = null;
  let attempt = 0;

  // ---------- helpers ----------
  function pad(n, w) {
    return String(n).padStart(w, "0");
  }

  function timestamp(d) {
    return (
      pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" +
      pad(d.getSeconds(), 2) + "." + pad(d.getMilliseconds(), 3)
    );
  }

  function explainClose(code) {
    if (code in CLOSE_CODES) return CLOSE_CODES[code];
    if (code >= 4000 && code <= 4999) return "application-defined close";
    return "unknown close code";
  }

  function wsUrlFor(endpoint, channel) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let path = endpoint === "echo" ? "/ws/echo" : "/ws/broadcast";
    if (endpoint !== "echo" && channel) path += "/" + encodeURIComponent(channel);
    return scheme + "//" + location.host + path;
  }

  function currentTarget() {
    const endpoint = el.endpoint.value === "echo" ? "echo" : "broadcast";
    const channel = endpoint === "broadcast" ? el.channel.value.trim() : "";
    return { endpoint, channel };
  }

  function formatNumber(n) {
    return typeof n === "number" && isFinite(n) ? n.toLocaleString("en-US") : "\u2013";
  }

  function num(v) {
    return typeof v === "number" && isFinite(v) ? v : null;
  }

  // ---------- log ----------
  function addLog(kind, text, meta) {
    const nearBottom =
      el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 40;
    const li = document.createElement("li");
    li.className = "entry entry-" + kind;
    li.dataset.kind = kind;

    const time = document.createElement("time");
    const now = new Date();
    time.className = "ts";
    time.dateTime = now.toISOString();
    time.textContent = timestamp(now);

    const tag = document.createElement("span");
    tag.className = "tag tag-" + kind;
    tag.textContent = kind === "sent" ? "sent" : kind === "received" ? "recv" : kind;

    const body = document.createElement("span");
    body.className = "msg";
    if (text.length > MAX_SHOWN_CHARS) {
      const more = text.length - MAX_SHOWN_CHARS;
      meta = (meta ? meta + " \u00b7 " : "") + "+" + more.toLocaleString("en-US") + " chars not shown";
      text = text.slice(0, MAX_SHOWN_CHARS) + "\u2026";
    }
    body.textContent = text; // textContent: never interpret message text as HTML

    li.append(time, tag, body);
    if (meta) {
      const m = document.createElement("span");
      m.className = "meta";
      m.textContent = meta;
      li.append(m);
    }
    el.log.append(li);
    while (el.log.childElementCount > MAX_LOG_ENTRIES) el.log.firstElementChild.remove();
    if (nearBottom || kind === "sent") el.log.scrollTop = el.log.scrollHeight;
  }

  function describeBinary(buf) {
    const bytes = new Uint8Array(buf);
    const preview = Array.from(bytes.slice(0, 16), (b) => pad(b.toString(16), 2)).join(" ");
    return "[binary, " + bytes.length + " bytes] " + preview + (bytes.length > 16 ? " \u2026" : "");
  }

  // ---------- connection state ----------
  function setState(state, text) {
    el.status.dataset.state = state;
    el.statusText.textContent = text;
    el.statusText.title = text; // the whole text where a narrow screen cuts it short
    const open = state === "open";
    const busy = state === "connecting" || state === "closing";
    const waiting = state === "reconnecting";
    el.input.disabled = !open;
    el.sendBtn.disabled = !open;
    el.endpoint.disabled = open || busy || waiting;
    el.channel.disabled = open || busy || waiting || el.endpoint.value === "echo";
    el.connectBtn.disabled = busy;
    el.connectBtn.textContent = open || busy ? "Disconnect" : waiting ? "Cancel" : "Connect";
    el.connectBtn.classList.toggle("btn-danger", open || waiting);
    el.connectBtn.classList.toggle("btn-primary", !(open || waiting));
    el.connectBtn.dataset.action = open || busy || waiting ? "disconnect" : "connect";
  }

  function updateUrlPreview() {
    const t = currentTarget();
    el.wsUrl.textContent = wsUrlFor(t.endpoint, t.channel && CHANNEL_RE.test(t.channel) ? t.channel : "");
    const echo = t.endpoint === "echo";
    el.channelField.classList.toggle("is-disabled", echo);
    if (!ws) el.channel.disabled = echo;
  }

  function clearReconnect() {
    if (reconnectTimer) clearTimeout(reconnectTimer);
    if (countdownTimer) clearInterval(countdownTimer);
    reconnectTimer = null;
    countdownTimer = null;
  }

  function connect() {
    clearReconnect();
    const t = currentTarget();
    if (t.channel && !CHANNEL_RE.test(t.channel)) {
      el.channel.setAttribute("aria-invalid", "true");
      addLog("error", "Invalid channel name \u201c" + t.channel + "\u201d: use 1\u201364 of A\u2013Z a\u2013z 0\u20139 _ . -");
      el.channel.focus();
      return;
    }
    el.channel.removeAttribute("aria-invalid");
    const url = wsUrlFor(t.endpoint, t.channel);
    const label = t.endpoint === "echo" ? "echo" : "broadcast" + (t.channel ? " #" + t.channel : "");
    userClosed = false;
    setState("connecting", "Connecting\u2026");
    addLog("system", "Connecting to " + url);

    let sock;
    try {
      sock = new WebSocket(url);
    } catch (err) {
      addLog("error", "Could not create WebSocket: " + err.message);
      setState("disconnected", "Disconnected");
      return;
    }
    sock.binaryType = "arraybuffer";
    ws = sock;

    sock.addEventListener("open", () => {
      if (ws !== sock) return;
      attempt = 0;
      setState("open", "Connected \u00b7 " + label);
      addLog("system", "Connected to " + label);
      el.input.focus();
      pollStats();
    });

    sock.addEventListener("message", (ev) => {
      if (ws !== sock) return;
      if (typeof ev.data === "string") addLog("received", ev.data);
      else addLog("received", describeBinary(ev.data));
    });

    sock.addEventListener("error", () => {
      if (ws !== sock) return;
      // Browsers expose no detail here; the close event that follows carries the code.
      addLog("error", "WebSocket error");
    });

    sock.addEventListener("close", (ev) => {
      if (ws !== sock) return;
      ws = null;
      const reason = ev.reason ? " \u2014 \u201c" + ev.reason + "\u201d" : "";
      const kind = ev.code === 1000 || ev.code === 1005 ? "system" : "error";
      addLog(kind, "Closed: " + ev.code + " " + explainClose(ev.code) + reason, ev.wasClean ? "" : "unclean");
      setState("disconnected", "Disconnected (" + ev.code + ")");
      pollStats();
      if (!userClosed && el.autoReconnect.checked) scheduleReconnect(ev.code);
    });
  }

  function scheduleReconnect(code) {
    attempt += 1;
    // Exponential backoff with full jitter; wait longer when the server asks us to back off.
    const floor = code === 1013 || code === 4008 ? 2 * BACKOFF_BASE_MS : 0;
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt - 1, 10));
    const delay = Math.max(floor, Math.round(cap / 2 + Math.random() * cap / 2));
    const due = Date.now() + delay;
    addLog("system", "Reconnecting in " + (delay / 1000).toFixed(1) + " s (attempt " + attempt + ")");
    const tick = () => {
      const left = Math.max(0, due - Date.now());
      setState("reconnecting", "Reconnecting in " + Math.ceil(left / 1000) + " s\u2026");
    };
    tick();
    countdownTimer = setInterval(tick, 250);
    reconnectTimer = setTimeout(connect, delay);
  }

  function disconnect() {
    userClosed = true;
    if (reconnectTimer || countdownTimer) {
      clearReconnect();
      attempt = 0;
      addLog("system", "Reconnect cancelled");
      setState("disconnected", "Disconnected");
      return;
    }
    if (!ws) return;
    if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
      setState("closing", "Closing\u2026");
      ws.close(1000, "user disconnected");
    }
  }

  function send() {
    const text = el.input.value;
    if (!ws || ws.readyState !== WebSocket.OPEN || text === "") return;
    ws.send(text);
    addLog("sent", text);
    el.input.value = "";
    el.input.focus();
  }

  // ---------- stats ----------
  let statsInFlight = false;
  // Set once /stats answers 401: the server has FANOUT_ADMIN_KEY set and the page has no
  // key to offer, so it shows "n/a" and stops asking (every refusal is a server log line).
  let statsLocked = false;

  function showStatsLocked() {
    statsLocked = true;
    for (const dd of [el.statConnections, el.statBroadcast, el.statEcho, el.statWs, el.statDelivered, el.statDropped]) {
      dd.textContent = "n/a";
    }
    el.statsExtra.textContent = "";
    el.statsState.dataset.state = "locked";
    el.statsCard.dataset.state = "locked";
    el.statsState.textContent = "Stats need the admin key on this server (FANOUT_ADMIN_KEY)";
  }

  function renderStats(s) {
    const conns = (s && s.connections) || {};
    const byEp = conns.by_endpoint;
    // An endpoint with no connections may be left out of by_endpoint: that means 0.
    const hasByEp = byEp !== null && typeof byEp === "object";
    const echo = hasByEp ? num(byEp.echo) ?? 0 : null;
    const broadcast = hasByEp ? num(byEp.broadcast) ?? 0 : null;
    const v1 = hasByEp ? num(byEp.ws) ?? 0 : null; // the chat's fanout.v1 sockets
    let total = num(conns.total);
    if (total === null && (echo !== null || broadcast !== null)) total = (echo || 0) + (broadcast || 0) + (v1 || 0);
    const msgs = (s && s.messages) || {};

    el.statConnections.textContent = formatNumber(total);
    el.statBroadcast.textContent = formatNumber(broadcast);
    el.statEcho.textContent = formatNumber(echo);
    el.statWs.textContent = formatNumber(v1);
    el.statDelivered.textContent = formatNumber(num(msgs.delivered));
    el.statDropped.textContent = formatNumber(num(msgs.dropped));

    const bits = [];
    const backend = s && s.backend;
    if (backend && typeof backend === "object" && backend.name) {
      bits.push("backend " + backend.name + (backend.status ? " (" + backend.status + ")" : ""));
    }
    const t = currentTarget();
    const channels = s && s.channels;
    if (ws && t.endpoint === "broadcast" && channels && typeof channels === "object") {
      const name = t.channel || "default";
      const n = num(channels[name]);
      if (n !== null) bits.push("#" + name + ": " + n);
    }
    const slow = num(s && s.slow_consumer_disconnects);
    if (slow) bits.push("slow-consumer disconnects " + formatNumber(slow));
    const worker = s && s.worker;
    if (worker && typeof worker === "object" && worker.id) bits.push("worker " + worker.id);
    const up = num(s && s.uptime_seconds);
    if (up !== null) bits.push("up " + formatUptime(up));
    el.statsExtra.textContent = bits.join(" \u00b7 ");
  }

  function formatUptime(sec) {
    sec = Math.floor(sec);
    const h = Math.floor(sec / 3600);
    const m = Math.floor((sec % 3600) / 60);
    const s = sec % 60;
    return h ? h + "h " + m + "m" : m ? m + "m " + s + "s" : s + "s";
  }

  async function pollStats() {
    if (statsInFlight || statsLocked) return;
    statsInFlight = true;
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), STATS_TIMEOUT_MS);
    try {
      const res = await fetch("/stats", {
        cache: "no-store",
        headers: { Accept: "application/json" },
        signal: ctrl.signal,
      });
      if (res.status === 401) {
        showStatsLocked();
        return;
      }
      if (!res.ok) throw new Error("HTTP " + res.status);
      const data = await res.json();
      renderStats(data);
      el.statsState.dataset.state = "live";
      el.statsCard.dataset.state = "live";
      el.statsState.textContent = "Live \u00b7 updated " + timestamp(new Date());
    } catch (err) {
      const why =
        err.name === "AbortError" ? "timed out" :
        err instanceof TypeError ? "server unreachable" : err.message;
      el.statsState.dataset.state = "stale";
      el.statsCard.dataset.state = "stale";
      el.statsState.textContent =
        "Stats unavailable (" + why + ")" +
        (el.statConnections.textContent !== "\u2013" ? " \u00b7 showing last known values" : "");
    } finally {
      clearTimeout(timer);
      statsInFlight = false;
    }
  }

  // ---------- wiring ----------
  el.connectForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (el.connectBtn.dataset.action === "disconnect") disconnect();
    else connect();
  });
  el.sendForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    send();
  });
  el.endpoint.addEventListener("change", updateUrlPreview);
  el.channel.addEventListener("input", () => {
    el.channel.removeAttribute("aria-invalid");
    updateUrlPreview();
  });
  el.clearBtn.addEventListener("click", () => el.log.replaceChildren());
  el.autoReconnect.addEventListener("change", () => {
    if (!el.autoReconnect.checked && (reconnectTimer || countdownTimer)) {
      clearReconnect();
      attempt = 0;
      addLog("system", "Auto-reconnect off");
      setState("disconnected", "Disconnected");
    }
  });
  window.addEventListener("pagehide", () => {
    if (ws) {
      userClosed = true;
      ws.close(1000, "page closed");
    }
  });

  // Optional deep links: /?endpoint=echo or /?channel=room1
  const params = new URLSearchParams(location.search);
  if (params.get("endpoint") === "echo") el.endpoint.value = "echo";
  if (params.get("channel")) el.channel.value = params.get("channel");

  setState("disconnected", "Disconnected");
  updateUrlPreview();
  addLog("system", "Ready. Pick an endpoint and press Connect.");
  pollStats();
  setInterval(() => {
    if (!document.hidden) pollStats();
  }, STATS_INTERVAL_MS);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) pollStats();
  });
})();
