'use strict';
// The load generator of the ws4redis benchmark: many WebSocket clients in one Node process.
//
// run.py starts it and drives it with one JSON command per line on stdin; it answers each with
// one JSON line on stdout.  Commands:
//
//   {"cmd": "connect", "url": ..., "count": N, "concurrency": C, "timeout": s}
//        open N more clients (at most C handshakes in flight); answers the connect rate
//   {"cmd": "phase", "first": a, "last": b}
//        start recording the messages with sequence numbers a..b (every open client must get
//        each of them once)
//   {"cmd": "wait", "timeout": s}
//        wait until every client has every message of the phase, or the timeout; answers the
//        time until all clients had each message, the latency percentiles, the losses, and
//        this process's CPU share during the phase
//   {"cmd": "closeall", "timeout": s}   close every client
//   {"cmd": "exit"}
//
// A message is ASCII: "SEQ T_US PADDING", where T_US is the wall-clock time of the publish in
// microseconds since the epoch (the publisher and this process share the machine's clock).
// Anything else (a heartbeat) is ignored.  Every wait is bounded by its timeout.

const WebSocket = require('ws');
const readline = require('readline');
const { performance } = require('perf_hooks');

const ORIGIN_US = performance.timeOrigin * 1000;
const nowUs = () => ORIGIN_US + performance.now() * 1000;

const clients = new Set();
const closeCodes = {};
let phase = null;

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function parseMessage(buf) {
  // "SEQ T_US ..." -> [seq, t_us], or null when the message is not ours
  let i = 0;
  let seq = 0;
  let c;
  const n = buf.length;
  while (i < n && (c = buf[i++]) !== 32) {
    if (c < 48 || c > 57) return null;
    seq = seq * 10 + (c - 48);
  }
  if (i === 1 || i >= n) return null;
  let t = 0;
  while (i < n && (c = buf[i++]) !== 32) {
    if (c < 48 || c > 57) return null;
    t = t * 10 + (c - 48);
  }
  return [seq, t];
}

let lastMessageUs = 0;

function onMessage(data) {
  lastMessageUs = nowUs();
  const p = phase;
  if (p === null || p.done) return;
  const parsed = parseMessage(data);
  if (parsed === null) return;
  const idx = parsed[0] - p.first;
  if (idx < 0 || idx >= p.count) {
    p.foreign++;
    return;
  }
  const now = nowUs();
  const latency = now - parsed[1];
  if (p.received[idx] === 0) p.sent[idx] = parsed[1];
  p.received[idx]++;
  if (now > p.last[idx]) p.last[idx] = now;
  if (p.nlat < p.lat.length) p.lat[p.nlat++] = latency;
  p.total++;
  if (p.received[idx] === p.expected) {
    p.complete++;
    if (p.complete === p.count && p.resolve) p.resolve();
  }
}

// The fast receive path (FAST_PARSER=1): after the handshake, the client's socket is read by
// this small parser of server frames (unmasked, final frames: what every server under test
// sends) instead of ws's Receiver stream, which costs several times more per message and made
// the load generator the bottleneck in fan-out bursts.  Close frames end the client as ws
// would; pings are answered; anything else (fragments, masked frames) falls back to ws.
const FAST_PARSER = process.env.FAST_PARSER !== '0';

function fastReceive(ws) {
  const socket = ws._socket;
  if (!socket || socket.listenerCount('data') !== 1) return;
  const wsOnData = socket.listeners('data')[0];
  let pending = null;
  socket.removeListener('data', wsOnData);
  socket.on('data', (chunk) => {
    let buf = pending === null ? chunk : Buffer.concat([pending, chunk]);
    pending = null;
    let i = 0;
    const n = buf.length;
    while (i + 2 <= n) {
      const b0 = buf[i];
      const b1 = buf[i + 1];
      let len = b1 & 0x7f;
      let head = 2;
      if (b1 & 0x80 || (b0 & 0x80) === 0) {
        // masked or fragmented: not a server's usual frame; hand the rest to ws
        socket.removeAllListeners('data');
        socket.on('data', wsOnData);
        wsOnData.call(socket, buf.subarray(i));
        return;
      }
      if (len === 126) {
        if (i + 4 > n) break;
        len = buf.readUInt16BE(i + 2);
        head = 4;
      } else if (len === 127) {
        if (i + 10 > n) break;
        len = Number(buf.readBigUInt64BE(i + 2));
        head = 10;
      }
      if (i + head + len > n) break;
      const payload = buf.subarray(i + head, i + head + len);
      const opcode = b0 & 0x0f;
      i += head + len;
      if (opcode === 1 || opcode === 2) {
        onMessage(payload);
      } else if (opcode === 8) {
        // a close frame: give it (and what follows) to ws, which answers and closes
        socket.removeAllListeners('data');
        socket.on('data', wsOnData);
        wsOnData.call(socket, buf.subarray(i - head - len));
        return;
      } else if (opcode === 9) {
        ws.pong(payload, true, () => {});
      }
    }
    if (i < n) pending = buf.subarray(i);
  });
}

function openClient(url, timeoutMs) {
  return new Promise((resolve) => {
    let settled = false;
    const ws = new WebSocket(url, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
      handshakeTimeout: timeoutMs,
    });
    const finish = (error) => {
      if (settled) return;
      settled = true;
      resolve(error);
    };
    ws.on('open', () => {
      clients.add(ws);
      if (FAST_PARSER) fastReceive(ws);
      finish(null);
    });
    ws.on('message', onMessage);
    ws.on('unexpected-response', (req, res) => {
      finish(`HTTP ${res.statusCode}`);
      req.destroy();
    });
    ws.on('error', (err) => finish(err.code || err.message));
    ws.on('close', (code) => {
      if (clients.delete(ws)) closeCodes[code] = (closeCodes[code] || 0) + 1;
      finish(`closed ${code}`);
    });
  });
}

async function connect({ url, count, concurrency = 100, timeout = 60 }) {
  const started = nowUs();
  const deadline = started + timeout * 1e6;
  const errors = {};
  let next = 0;
  let opened = 0;
  let failed = 0;
  const cpu0 = process.cpuUsage();
  async function worker() {
    while (next < count && nowUs() < deadline) {
      next++;
      const error = await openClient(url, Math.max(1000, (deadline - nowUs()) / 1000));
      if (error === null) opened++;
      else {
        failed++;
        errors[error] = (errors[error] || 0) + 1;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  const seconds = (nowUs() - started) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  return {
    opened,
    failed,
    errors,
    seconds,
    rate: opened / seconds,
    open: clients.size,
    cpu_share: (cpu.user + cpu.system) / 1e6 / seconds,
  };
}

function startPhase({ first, last, capacity = 4000000 }) {
  const count = last - first + 1;
  const expected = clients.size;
  phase = {
    first,
    count,
    expected,
    received: new Int32Array(count),
    sent: new Float64Array(count),
    last: new Float64Array(count),
    lat: new Float64Array(Math.min(capacity, Math.max(1, expected * count))),
    nlat: 0,
    total: 0,
    complete: expected === 0 ? count : 0,
    foreign: 0,
    done: false,
    resolve: null,
    cpu0: process.cpuUsage(),
    wall0: nowUs(),
    closes0: Object.assign({}, closeCodes),
  };
  return { expected, count };
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

async function waitPhase({ timeout = 30 }) {
  const p = phase;
  if (p === null) return { error: 'no phase' };
  if (p.complete < p.count) {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, timeout * 1000);
      p.resolve = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
  p.done = true;
  const wall = (nowUs() - p.wall0) / 1e6;
  const cpu = process.cpuUsage(p.cpu0);
  const lat = p.lat.subarray(0, p.nlat).sort();
  const toAll = [];
  for (let i = 0; i < p.count; i++) {
    // time until every client had message i (null when some never got it)
    toAll.push(p.received[i] === p.expected ? (p.last[i] - p.sent[i]) / 1000 : null);
  }
  const closes = {};
  for (const [code, n] of Object.entries(closeCodes)) {
    const d = n - (p.closes0[code] || 0);
    if (d) closes[code] = d;
  }
  const ms = (q) => {
    const v = percentile(lat, q);
    return v === null ? null : v / 1000;
  };
  return {
    expected: p.expected,
    messages: p.count,
    received: p.total,
    lost: p.expected * p.count - p.total,
    complete: p.complete,
    time_to_all_ms: toAll,
    first_ms: lat.length ? lat[0] / 1000 : null,
    p50_ms: ms(0.5),
    p90_ms: ms(0.9),
    p99_ms: ms(0.99),
    p999_ms: ms(0.999),
    max_ms: lat.length ? lat[lat.length - 1] / 1000 : null,
    foreign: p.foreign,
    closes,
    open: clients.size,
    wall_s: wall,
    cpu_share: (cpu.user + cpu.system) / 1e6 / wall,
  };
}

async function closeAll({ timeout = 30 }) {
  const all = [...clients];
  const closed = Promise.all(
    all.map((ws) => new Promise((resolve) => {
      if (ws.readyState === WebSocket.CLOSED) return resolve();
      ws.once('close', resolve);
      ws.close(1000);
    })),
  );
  await Promise.race([closed, new Promise((r) => setTimeout(r, timeout * 1000))]);
  for (const ws of clients) ws.terminate();
  clients.clear();
  phase = null;
  return { closed: all.length };
}

// Wait until no message at all arrived for `quiet` seconds (a server still working off a
// backlog would spoil the next measurement), at most `timeout` seconds.
async function quiet({ quiet = 1, timeout = 60 }) {
  const started = nowUs();
  while (nowUs() - lastMessageUs < quiet * 1e6 && nowUs() - started < timeout * 1e6) {
    await new Promise((r) => setTimeout(r, 50));
  }
  return { waited_s: (nowUs() - started) / 1e6, quiet: nowUs() - lastMessageUs >= quiet * 1e6 };
}

const handlers = {
  connect,
  quiet,
  status: () => ({ open: clients.size, closes: closeCodes }),
  phase: startPhase,
  wait: waitPhase,
  closeall: closeAll,
  exit: () => {
    for (const ws of clients) ws.terminate();
    setImmediate(() => process.exit(0));
    return { bye: true };
  },
};

const rl = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
rl.on('line', (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  queue = queue.then(async () => {
    const handler = handlers[command.cmd];
    try {
      send(handler ? await handler(command) : { error: `unknown command ${command.cmd}` });
    } catch (err) {
      send({ error: String(err && err.stack ? err.stack : err) });
    }
  });
});
rl.on('close', () => process.exit(0));
