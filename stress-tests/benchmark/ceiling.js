'use strict';
// The ceiling of the benchmark: a trivial Node `ws` broadcast server, not a peer.
//
// One Redis connection subscribes to the broadcast channel; every message is sent to every
// open WebSocket as it is.  It shows how fast this machine and the load generator can go.
//
//   node ceiling.js PORT REDIS_PORT CHANNEL

const WebSocket = require('ws');
const Redis = require('ioredis');

const [port, redisPort, channel] = process.argv.slice(2);
const wss = new WebSocket.Server({
  host: '127.0.0.1',
  port: Number(port),
  perMessageDeflate: false,
  backlog: 4096,
});
const subscriber = new Redis({ host: '127.0.0.1', port: Number(redisPort) });

subscriber.subscribe(channel, (err) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  console.log(`ceiling listening on ${port}`);
});
subscriber.on('messageBuffer', (_channel, message) => {
  for (const client of wss.clients) {
    if (client.readyState === WebSocket.OPEN) client.send(message, { binary: false });
  }
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
