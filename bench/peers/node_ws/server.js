// Reference broadcast server on the npm `ws` library (Fanout benchmark peer).
// Usage: node server.js <port> [host]
// Clients of /ws/broadcast (or /ws/broadcast/<channel>) receive every message sent
// by any client of the same path, the sender included, in order. /ws/echo echoes.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 8000);
const host = process.argv[3] || '127.0.0.1';
const channels = new Map();

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  res.writeHead(404);
  res.end();
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

server.on('upgrade', (req, socket, head) => {
  const path = req.url.split('?')[0];
  if (!path.startsWith('/ws/')) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (path === '/ws/echo') {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      return;
    }
    let clients = channels.get(path);
    if (!clients) {
      clients = new Set();
      channels.set(path, clients);
    }
    clients.add(ws);
    ws.on('message', (data, isBinary) => {
      for (const c of clients) {
        if (c.readyState === 1) c.send(data, { binary: isBinary });
      }
    });
    ws.on('close', () => clients.delete(ws));
    ws.on('error', () => clients.delete(ws));
  });
});

server.listen({ port, host, backlog: 4096 }, () => {
  console.log(`node ws peer listening on ${host}:${port}`);
});
process.on('SIGTERM', () => process.exit(0));
