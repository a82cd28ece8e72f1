// Fanout demo chat, built on the JavaScript SDK (/sdk/fanout.js). No build step, no token:
// the default channel rules let anyone subscribe and subscribers publish. Presence and
// history show up where the server has them for a channel (FANOUT_CONFIG); the page keeps
// its place per channel in sessionStorage, so a reload or a reconnect recovers what it missed.
import { Fanout } from "/sdk/fanout.js";

const STORE = "fanout.chat";
const DEFAULT_CHANNEL = "chat.lobby";
const CHANNEL_RE = /^[A-Za-z0-9_.\-@=]{1,128}$/;
const MAX_KEPT = 200; // messages kept per channel (shown, and saved across reloads)

const $ = (id) => document.getElementById(id);
const el = {
  section: $("chat"),
  status: $("chat-status"),
  statusText: $("chat-status-text"),
  features: $("chat-features"),
  joinForm: $("join-form"),
  name: $("chat-name"),
  joinBtn: $("join-btn"),
  body: $("chat-body"),
  tabs: $("chat-tabs"),
  addForm: $("add-channel-form"),
  newChannel: $("new-channel"),
  log: $("chat-log"),
  presence: $("presence"),
  presenceCount: $("presence-count"),
  presenceList: $("presence-list"),
  form: $("chat-form"),
  input: $("chat-input"),
};

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE)) || {};
  } catch {
    return {};
  }
}
const saved = load();
const state = {
  name: saved.name || localStorage.getItem("fanout.name") || "",
  joined: saved.joined === true,
  channels: Array.isArray(saved.channels) && saved.channels.length ? saved.channels : [DEFAULT_CHANNEL],
  active: saved.active || DEFAULT_CHANNEL,
  pos: saved.pos || {}, // channel -> {offset, epoch}: where to recover from
  log: saved.log || {}, // channel -> [entry]
};
const unread = new Map();
const members = new Map(); // channel -> Map(client -> {user, info})
const names = new Map(); // client id -> name, learned from chat messages
const presenceOn = new Map(); // channel -> true | false (unknown: absent)
let client = null;

function save() {
  const { name, joined, channels, active, pos, log } = state;
  try {
    sessionStorage.setItem(STORE, JSON.stringify({ name, joined, channels, active, pos, log }));
  } catch {
    // Storage full or disabled: the chat still works, it just forgets on reload.
  }
}

function time(ts) {
  const d = new Date(ts);
  return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
}

// ---------- rendering ----------
function entryElement(e) {
  const li = document.createElement("li");
  li.className = "chat-entry chat-" + e.kind;
  li.dataset.kind = e.kind;
  if (e.offset !== undefined) li.dataset.offset = String(e.offset);
  const t = document.createElement("time");
  t.textContent = time(e.ts);
  if (e.kind === "system") {
    const span = document.createElement("span");
    span.className = "chat-text";
    span.textContent = e.text; // textContent: never HTML
    li.append(t, span);
    return li;
  }
  const who = document.createElement("span");
  who.className = "chat-who";
  who.textContent = e.name;
  const text = document.createElement("span");
  text.className = "chat-text";
  text.textContent = e.text;
  li.append(who, t, text);
  return li;
}

function add(channel, e) {
  const list = (state.log[channel] = state.log[channel] || []);
  list.push(e);
  if (list.length > MAX_KEPT) list.splice(0, list.length - MAX_KEPT);
  if (channel === state.active) {
    const near = el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 60;
    el.log.append(entryElement(e));
    while (el.log.childElementCount > MAX_KEPT) el.log.firstElementChild.remove();
    if (near || e.kind === "mine") el.log.scrollTop = el.log.scrollHeight;
  } else if (e.kind !== "system") {
    unread.set(channel, (unread.get(channel) || 0) + 1);
    renderTabs();
  }
  save();
}

function system(channel, text) {
  add(channel, { kind: "system", text, ts: Date.now() });
}

function renderLog() {
  el.log.replaceChildren(...(state.log[state.active] || []).map(entryElement));
  el.log.scrollTop = el.log.scrollHeight;
}

function renderTabs() {
  el.tabs.replaceChildren(
    ...state.channels.map((ch) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "tab";
      b.setAttribute("role", "tab");
      b.setAttribute("aria-selected", String(ch === state.active));
      b.dataset.channel = ch;
      b.textContent = ch;
      const n = unread.get(ch);
      if (n) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = String(n);
        b.append(badge);
      }
      return b;
    }),
  );
}

function displayName(id, m) {
  if (id === (client && client.client)) return state.name + " (you)";
  const info = m && m.info;
  if (info && typeof info.name === "string") return info.name;
  return names.get(id) || (m && m.user) || "guest " + id.slice(-4);
}

function renderPresence() {
  const on = presenceOn.get(state.active);
  el.presence.hidden = on !== true;
  const now = members.get(state.active) || new Map();
  el.presenceCount.textContent = "(" + now.size + ")";
  el.presenceList.replaceChildren(
    ...[...now].map(([id, m]) => {
      const li = document.createElement("li");
      li.dataset.client = id;
      li.textContent = displayName(id, m);
      return li;
    }),
  );
  const bits = [];
  if (on === false) bits.push("no presence on " + state.active);
  const sub = client && client.getSubscription(state.active);
  if (sub && sub.state === "subscribed") bits.push(sub.epoch ? "history on" : "no history on " + state.active);
  el.features.textContent = bits.join(" \u00b7 ");
}

function setStatus(s, text) {
  el.status.dataset.state = s;
  el.statusText.textContent = text;
  el.statusText.title = text;
}

function select(channel) {
  state.active = channel;
  unread.delete(channel);
  renderTabs();
  renderLog();
  renderPresence();
  save();
}

// ---------- the SDK ----------
function wsUrl() {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
}

async function loadPresence(sub) {
  try {
    const clients = await sub.presence();
    presenceOn.set(sub.channel, true);
    members.set(sub.channel, new Map(Object.entries(clients)));
  } catch (err) {
    // 404: the server has no presence (yet), or not on this channel.
    presenceOn.set(sub.channel, false);
    members.delete(sub.channel);
  }
  if (sub.channel === state.active) renderPresence();
}

function watch(channel) {
  const p = state.pos[channel];
  const sub = client.newSubscription(channel, p ? { since: p } : undefined);
  let recovering = 0;
  sub.on("subscribed", (ctx) => {
    if (ctx.wasRecovering) {
      recovering = 0;
      // The SDK hands over the recovered publications right after this event.
      queueMicrotask(() => {
        if (ctx.recovered) system(channel, "Back online: " + recovering + " missed message" + (recovering === 1 ? "" : "s") + " recovered");
        else system(channel, "Back online; messages sent meanwhile could not be recovered");
        recovering = -1;
      });
    } else if (!state.log[channel] || !state.log[channel].length) {
      system(channel, "Joined " + channel);
    }
    if (sub.epoch !== undefined && sub.offset !== undefined) {
      state.pos[channel] = { offset: sub.offset, epoch: sub.epoch };
      save();
    }
    loadPresence(sub);
  });
  sub.on("publication", (pub) => {
    if (recovering >= 0) recovering++;
    const d = pub.data;
    let entry;
    if (d && typeof d === "object" && typeof d.text === "string") {
      const name = typeof d.name === "string" && d.name ? d.name.slice(0, 32) : "someone";
      if (typeof d.client === "string" && names.get(d.client) !== name) {
        names.set(d.client, name);
        if (channel === state.active) renderPresence(); // a name for a "guest" in the list
      }
      const mine = typeof d.client === "string" && d.client === client.client;
      entry = { kind: mine ? "mine" : "theirs", name, text: d.text };
    } else {
      // From a raw socket, the HTTP API, or another program: shown as it came.
      const raw = pub.text !== undefined ? pub.text : pub.binary ? "[" + pub.binary.length + " bytes]" : JSON.stringify(d);
      entry = { kind: "theirs", name: "(raw)", text: raw };
    }
    entry.ts = Date.now();
    entry.offset = pub.offset;
    if (pub.offset !== undefined && sub.epoch !== undefined) state.pos[channel] = { offset: pub.offset, epoch: sub.epoch };
    add(channel, entry);
  });
  sub.on("join", (who) => {
    const m = members.get(channel) || new Map();
    m.set(who.client, { user: who.user, info: who.info });
    members.set(channel, m);
    if (who.client !== client.client) system(channel, displayName(who.client, who) + " joined");
    if (channel === state.active) renderPresence();
  });
  sub.on("leave", (who) => {
    const m = members.get(channel);
    const known = m && m.get(who.client);
    if (m) m.delete(who.client);
    system(channel, displayName(who.client, known || who) + " left");
    if (channel === state.active) renderPresence();
  });
  sub.on("gap", (ctx) => system(channel, "Some messages were lost (" + ctx.reason + ")"));
  sub.on("unsubscribed", (ctx) => {
    if (ctx.code) system(channel, "Unsubscribed by the server: " + ctx.code + " " + ctx.reason);
  });
  sub.on("error", (ctx) => system(channel, "Subscription error " + ctx.error.code + ": " + ctx.error.message));
  sub.subscribe();
  return sub;
}

function join() {
  const name = el.name.value.trim();
  if (!name) {
    el.name.setAttribute("aria-invalid", "true");
    el.name.focus();
    return;
  }
  el.name.removeAttribute("aria-invalid");
  state.name = name;
  state.joined = true;
  localStorage.setItem("fanout.name", name);
  if (!state.channels.includes(state.active)) state.active = state.channels[0];
  client = new Fanout(wsUrl());
  client.on("connecting", () => setStatus("connecting", "Chat: connecting\u2026"));
  client.on("connected", () => setStatus("open", "Chat: connected as " + state.name));
  client.on("disconnected", (ctx) => {
    if (ctx.willReconnect) {
      setStatus("reconnecting", "Chat: reconnecting in " + (ctx.delay / 1000).toFixed(1) + " s (" + ctx.code + ")");
    } else {
      setStatus("disconnected", "Chat: disconnected (" + ctx.code + ")");
    }
  });
  for (const ch of state.channels) watch(ch);
  client.connect();
  el.section.dataset.joined = "true";
  el.body.hidden = false;
  el.name.disabled = true;
  el.joinBtn.textContent = "Leave";
  el.joinBtn.classList.replace("btn-primary", "btn-danger");
  select(state.active);
  el.input.focus();
}

function leave() {
  if (client) client.disconnect();
  client = null;
  state.joined = false;
  state.pos = {};
  state.log = {};
  members.clear();
  presenceOn.clear();
  unread.clear();
  save();
  el.section.dataset.joined = "false";
  el.body.hidden = true;
  el.name.disabled = false;
  el.joinBtn.textContent = "Join";
  el.joinBtn.classList.replace("btn-danger", "btn-primary");
  setStatus("disconnected", "Chat: not joined");
}

function addChannel(name) {
  if (!CHANNEL_RE.test(name)) {
    el.newChannel.setAttribute("aria-invalid", "true");
    return;
  }
  el.newChannel.removeAttribute("aria-invalid");
  if (!state.channels.includes(name)) {
    state.channels.push(name);
    if (client) watch(name);
  }
  el.newChannel.value = "";
  select(name);
}

async function send() {
  const text = el.input.value;
  if (!text.trim() || !client) return;
  el.input.value = "";
  const channel = state.active;
  try {
    await client.publish(channel, { name: state.name, text, client: client.client });
  } catch (err) {
    system(channel, "Not sent (" + err.code + ": " + err.message + "): " + text);
  }
}

// ---------- wiring ----------
el.name.value = state.name;
el.joinForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (client) leave();
  else join();
});
el.addForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  addChannel(el.newChannel.value.trim());
});
el.tabs.addEventListener("click", (ev) => {
  const tab = ev.target.closest(".tab");
  if (tab) select(tab.dataset.channel);
});
el.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  send();
});
window.addEventListener("pagehide", save);
// Deep link: /?chat=chat.random opens (and adds) that channel.
const wanted = new URLSearchParams(location.search).get("chat");
if (wanted && CHANNEL_RE.test(wanted)) {
  if (!state.channels.includes(wanted)) state.channels.push(wanted);
  state.active = wanted;
}
if (state.joined && state.name) join();
