#!/usr/bin/env node
// flvedge in a real browser: headless Chromium opens examples/player (mpegts.js) and plays a live
// HTTP-FLV stream from the real flvedge binary.
//   1. same origin: the edge serves the page (static resource "/") and the stream (live "/flv/").
//   2. cross origin: a second server here serves the page, the stream comes from the edge, so
//      Chromium needs the edge's Access-Control-Allow-Origin.
//   2b. HTTP/2: the page and the stream over HTTPS from the edge's TLS listener, where Chromium and
//      the edge agree on h2 by ALPN: the check needs the page's nextHopProtocol to be "h2" and the
//      edge's access log to have the stream's request as HTTP/2.0 (the certificate, made here by
//      openssl, is trusted by its key's hash: --ignore-certificate-errors-spki-list).
//   2c. live failover to a backup at another resolution: a resource whose origin is a group of two
//      live origins served here (640x360, then 320x240), the primary's process "killed" (its
//      connections cut, its port closed) while the page plays: playback must go on with no player
//      error, currentTime advancing 1.5 s past the switch and video.videoWidth/Height becoming the
//      backup's (mpegts.js reconfigures on the new sequence header the edge re-sends).
//   3. VOD (when the binary has the vod resource; else a SKIP line): the player page with ?vod=1
//      plays a 60 s FLV (keyframe index) through the edge's vod resource from a small Range-capable
//      origin here, then seeks to 30 s: playback must resume and currentTime land within 3 s of it.
// Each passes when video.currentTime goes past 2 s and getVideoPlaybackQuality().totalVideoFrames
// grows, polled within a bounded wait; check 1 also needs the page to show a bitrate and an
// end-to-end latency (from the onFI edge clock of stamp_time) in a plausible range. Prints PASS/FAIL lines and "N passed, N failed"; exits 0 or 1.
//
// Environment:
//   FLVEDGE_BIN            the binary (default: build/flvedge of this checkout)
//   FE_MEDIA_DIR           cache for the generated test FLV (default: /tmp/flvedge-media)
//   FE_CHROMIUM            the browser (default: /usr/bin/chromium)
//   FE_BROWSER_TIMEOUT_MS  the wait of each check (default: 30000)
//   FE_SCREENSHOT          where the screenshot of a passing page goes (default: the binary's build
//                          directory, player-screenshot.png)
// Prerequisites: tests/browser/setup.sh (chromium, ffmpeg, npm install here and in examples/player).
'use strict';

const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = path.resolve(process.env.FLVEDGE_BIN || path.join(ROOT, 'build', 'flvedge'));
const MEDIA_DIR = path.resolve(process.env.FE_MEDIA_DIR || '/tmp/flvedge-media');
const CHROMIUM = process.env.FE_CHROMIUM || '/usr/bin/chromium';
const CHECK_TIMEOUT_MS = Number(process.env.FE_BROWSER_TIMEOUT_MS || 30000);
const SCREENSHOT = process.env.FE_SCREENSHOT ||
  (fs.existsSync(path.dirname(BIN)) ? path.join(path.dirname(BIN), 'player-screenshot.png') : '/tmp/flvedge-player.png');
const PLAYER_DIR = path.join(ROOT, 'examples', 'player');
const TOTAL_TIMEOUT_MS = 5 * CHECK_TIMEOUT_MS + 90000;

const results = [];
let edge = null;
let edgeLog = '';
let pageServer = null;
let context = null;
let tmpDir = null;
let finished = false;
let interrupted = false; // after SIGINT/SIGTERM: no more results, just clean up

function log(msg) { process.stdout.write(msg + '\n'); }

function pass(name, detail) {
  if (interrupted) return;
  results.push(true);
  log(`PASS ${name}: ${detail}`);
}

function fail(name, reason, diagnostics) {
  if (interrupted) return;
  results.push(false);
  log(`FAIL ${name}: ${reason}`);
  for (const line of diagnostics || []) log('    ' + line);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function luaString(s) { return '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"'; }

// ---- prerequisites -------------------------------------------------------------------------

function missingPrerequisites() {
  const missing = [];
  try { fs.accessSync(BIN, fs.constants.X_OK); } catch (e) { missing.push(`the flvedge binary ${BIN} (set FLVEDGE_BIN)`); }
  try { fs.accessSync(CHROMIUM, fs.constants.X_OK); } catch (e) { missing.push(`chromium at ${CHROMIUM}`); }
  try { require.resolve('playwright-core'); } catch (e) { missing.push('playwright-core in tests/browser/node_modules'); }
  if (!fs.existsSync(path.join(PLAYER_DIR, 'node_modules', 'mpegts.js', 'dist', 'mpegts.js'))) {
    missing.push('mpegts.js in examples/player/node_modules');
  }
  return missing;
}

// ---- test media: 10 s of 640x360 30 fps H.264 (keyframe every 2 s, CBR) + AAC, cached -----

function testMedia(size = '640x360') {
  const file = path.join(MEDIA_DIR, `browser-${size}-30fps-10s.flv`);
  if (fs.existsSync(file) && fs.statSync(file).size > 100000) return file;
  fs.mkdirSync(MEDIA_DIR, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  const r = spawnSync('ffmpeg', ['-nostdin', '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', `testsrc2=size=${size}:rate=30`,
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100',
    '-t', '10', '-pix_fmt', 'yuv420p',
    '-c:v', 'libx264', '-preset', 'veryfast', '-g', '60', '-keyint_min', '60', '-sc_threshold', '0',
    '-b:v', '800k', '-maxrate', '800k', '-bufsize', '800k', '-x264-params', 'nal-hrd=cbr',
    '-c:a', 'aac', '-b:a', '128k', '-f', 'flv', tmp], { encoding: 'utf8', timeout: 120000 });
  if (r.status !== 0) {
    try { fs.unlinkSync(tmp); } catch (e) { /* nothing written */ }
    throw new Error(`ffmpeg could not make the test media: ${r.error ? r.error.message : r.stderr}`);
  }
  fs.renameSync(tmp, file); // atomic: a parallel run sees the whole file or none
  return file;
}


// ---- VOD: 60 s with a keyframe index (tests/media/make_vod_media.sh), an origin with ranges ---

function vodMedia() {
  // The same name as fe_harness.ensure_vod_media(60): one file for both.
  const file = path.join(MEDIA_DIR, 'vod_640x360_60s_25fps_g50_500k.flv');
  if (fs.existsSync(file)) return file;
  const r = spawnSync('bash', [path.join(ROOT, 'tests', 'media', 'make_vod_media.sh'), file, '60'],
    { encoding: 'utf8', timeout: 300000 });
  if (r.status !== 0) throw new Error(`make_vod_media.sh failed: ${r.stderr}`);
  return file;
}

// flvedge -t on a config with a vod resource: only an unknown resource type means "no VOD yet".
function vodSupported(dir) {
  const conf = path.join(dir, 'vodcheck.lua');
  fs.writeFileSync(conf, `return { listen = { "127.0.0.1:0" }, resources = { { prefix = "/videos/", ` +
    `type = "vod", origin = "http://127.0.0.1:9/media/", cache_dir = ${luaString(path.join(dir, 'vodcheck'))} } } }\n`);
  const r = spawnSync(BIN, ['-t', '-c', conf], { encoding: 'utf8', timeout: 10000 });
  const text = `${r.stdout || ''}${r.stderr || ''}`.trim();
  return { ok: !(r.status !== 0 && /"vod" is not a resource type/.test(text)), text };
}

let vodOrigin = null;
const liveOrigins = [];

// Serves one file at /media/test.flv with single Range requests (206), HEAD and an ETag.
function startVodOrigin(file) {
  const size = fs.statSync(file).size;
  const etag = `"${size.toString(16)}-${Math.floor(fs.statSync(file).mtimeMs).toString(16)}"`;
  return new Promise((resolve, reject) => {
    vodOrigin = http.createServer((req, res) => {
      if (new URL(req.url, 'http://x').pathname !== '/media/test.flv') {
        res.writeHead(404, { 'Content-Type': 'text/plain' });
        res.end('not found\n');
        return;
      }
      const headers = { 'Content-Type': 'video/x-flv', 'Accept-Ranges': 'bytes', ETag: etag,
        'Last-Modified': fs.statSync(file).mtime.toUTCString() };
      let start = 0;
      let end = size - 1;
      let status = 200;
      const m = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range || '');
      if (m && (m[1] !== '' || m[2] !== '')) {
        if (m[1] === '') { start = Math.max(0, size - Number(m[2])); } else {
          start = Number(m[1]);
          if (m[2] !== '') end = Math.min(end, Number(m[2]));
        }
        if (start >= size || start > end) {
          res.writeHead(416, { 'Content-Range': `bytes */${size}` });
          res.end();
          return;
        }
        status = 206;
        headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
      }
      headers['Content-Length'] = end - start + 1;
      res.writeHead(status, headers);
      if (req.method === 'HEAD') { res.end(); return; }
      fs.createReadStream(file, { start, end }).pipe(res);
    });
    vodOrigin.on('error', reject);
    vodOrigin.listen(0, '127.0.0.1', () => resolve(vodOrigin.address().port));
  });
}

// Plays the VOD page to 2 s, seeks to `target` and waits for playback to go on near it.
async function vodSeekCheck(name, pageUrl, target) {
  const page = await context.newPage();
  const consoleLines = [];
  const responses = [];
  page.on('console', (m) => consoleLines.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.on('response', (r) => responses.push(`${r.status()} ${r.url()} range=${r.request().headers().range || '-'} ` +
    `x-cache-status=${r.headers()['x-cache-status'] || '-'}`));
  const deadline = Date.now() + CHECK_TIMEOUT_MS;
  let last = null;
  let reason = null;
  let seekedAt = null;
  let framesAtSeek = null;
  const stats = () => page.evaluate(() => (window.fePlayer ? window.fePlayer.stats() : null));
  try {
    await page.goto(pageUrl, { waitUntil: 'load', timeout: CHECK_TIMEOUT_MS });
    for (;;) {
      last = await stats();
      if (last && last.state === 'error') { reason = `the player reports an error: ${last.errors.join(' | ')}`; break; }
      if (seekedAt === null && last && last.currentTime > 2) {
        await page.evaluate((t) => window.fePlayer.seek(t), target);
        seekedAt = Date.now();
        framesAtSeek = last.totalVideoFrames;
      } else if (seekedAt !== null && last && !last.paused && last.currentTime >= target - 3 &&
                 last.currentTime <= target + 3 && last.totalVideoFrames > framesAtSeek + 10) {
        break;
      }
      if (Date.now() > deadline) {
        reason = seekedAt === null ? 'currentTime did not pass 2 s before the seek'
          : `after the seek to ${target} s, playback did not go on within 3 s of it`;
        break;
      }
      await sleep(200);
    }
  } catch (e) {
    reason = `${e.message.split('\n')[0]}`;
  }
  const ranged = responses.filter((r) => / range=bytes=[1-9]/.test(r));
  if (!reason && ranged.length === 0) reason = 'the seek made no Range request past the start of the file';
  if (reason) {
    fail(name, reason, [`page: ${pageUrl}`, `last stats: ${JSON.stringify(last)}`,
      ...responses.map((r) => 'response ' + r), ...consoleLines.slice(-20), ...edgeLogTail(15)]);
  } else {
    pass(name, `seek to ${target} s: currentTime ${last.currentTime.toFixed(2)} s after ` +
      `${((Date.now() - seekedAt) / 1000).toFixed(1)} s, ${last.totalVideoFrames} frames decoded; ` +
      `${ranged.length} range requests past byte 0 (${ranged[ranged.length - 1]})`);
  }
  await page.close();
}

// ---- live origins for the failover check: an FLV file served as a live stream ---------------

// The tags of an FLV file: { header (13 bytes), tags: [{ type, ts, data (tag + PreviousTagSize) }] }.
function readFlv(file) {
  const buf = fs.readFileSync(file);
  const tags = [];
  let pos = 13;
  while (pos + 15 <= buf.length) {
    const size = buf.readUIntBE(pos + 1, 3);
    const ts = buf.readUIntBE(pos + 4, 3) | (buf[pos + 7] << 24);
    if (pos + 15 + size > buf.length) break;
    tags.push({ type: buf[pos], ts, data: buf.subarray(pos, pos + 15 + size) });
    pos += 15 + size;
  }
  return { header: buf.subarray(0, 13), tags };
}

// GET /live/s.flv: the file in real time from its start, over and over (timestamps going on),
// chunked. kill(): every connection cut and the port closed, as when the process dies.
function startLiveOrigin(file) {
  const flv = readFlv(file);
  // The leading metadata and sequence headers: sent once, not again on each round.
  const isHead = (t) => t.type === 18 || (t.data[12] === 0 &&
    ((t.type === 9 && (t.data[11] & 0x0f) === 7) || (t.type === 8 && (t.data[11] >> 4) === 10)));
  let heads = 0;
  while (heads < flv.tags.length && isHead(flv.tags[heads])) heads++;
  const span = flv.tags[flv.tags.length - 1].ts + 33;
  const sockets = new Set();
  const timers = new Set();
  const server = http.createServer((req, res) => {
    if (new URL(req.url, 'http://x').pathname !== '/live/s.flv') {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    res.writeHead(200, { 'Content-Type': 'video/x-flv', 'Cache-Control': 'no-cache' });
    res.write(flv.header);
    const t0 = Date.now();
    let i = 0;
    let round = 0;
    const timer = setInterval(() => {
      const now = Date.now() - t0;
      for (;;) {
        if (i === flv.tags.length) { i = heads; round++; }
        const t = flv.tags[i];
        const ts = t.ts + round * span;
        if (ts > now) break;
        if (round === 0) res.write(t.data);
        else {
          const d = Buffer.from(t.data);
          d.writeUIntBE(ts & 0xffffff, 4, 3);
          d[7] = (ts >>> 24) & 0xff;
          res.write(d);
        }
        i++;
      }
    }, 10);
    timers.add(timer);
    res.on('close', () => { clearInterval(timer); timers.delete(timer); });
  });
  server.on('connection', (sock) => { sockets.add(sock); sock.on('close', () => sockets.delete(sock)); });
  const origin = {
    server,
    connections: 0,
    kill() {
      server.close();
      for (const t of timers) clearInterval(t);
      for (const sock of sockets) sock.destroy();
    },
  };
  server.on('request', () => { origin.connections++; });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => { origin.port = server.address().port; resolve(origin); });
  });
}

// Plays the failover resource, kills the primary once playback is under way at its size, and
// waits for playback to go on at the backup's size.
async function failoverCheck(name, pageUrl, primary, backup, want) {
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  const deadline = Date.now() + CHECK_TIMEOUT_MS;
  let last = null;
  let reason = null;
  let killedAt = null;
  let ctAtKill = null;
  let ctAtSwitch = null;
  let framesAtSwitch = null;
  const stats = () => page.evaluate(() => {
    if (!window.fePlayer) return null;
    const s = window.fePlayer.stats();
    const v = document.querySelector('video');
    s.videoWidth = v.videoWidth;
    s.videoHeight = v.videoHeight;
    return s;
  });
  try {
    await page.goto(pageUrl, { waitUntil: 'load', timeout: CHECK_TIMEOUT_MS });
    for (;;) {
      last = await stats();
      if (last && (last.state === 'error' || last.errors.length)) {
        reason = `the player reports an error${killedAt ? ' after the kill' : ''}: ${last.errors.join(' | ')}`;
        break;
      }
      const size = last ? `${last.videoWidth}x${last.videoHeight}` : '';
      if (killedAt === null && last && last.currentTime > 1.5 && size === want.primary) {
        primary.kill();
        killedAt = Date.now();
        ctAtKill = last.currentTime;
      } else if (killedAt !== null && ctAtSwitch === null && size === want.backup) {
        ctAtSwitch = last.currentTime;
        framesAtSwitch = last.totalVideoFrames;
      } else if (ctAtSwitch !== null && last.currentTime > ctAtSwitch + 1.5 &&
                 last.totalVideoFrames > framesAtSwitch + 20) {
        break;
      }
      if (Date.now() > deadline) {
        reason = killedAt === null ? `currentTime did not pass 1.5 s at ${want.primary} before the kill`
          : ctAtSwitch === null ? `the video never became ${want.backup} after the kill (now ${size})`
            : `playback did not go on 1.5 s past the switch to ${want.backup}`;
        break;
      }
      await sleep(100);
    }
  } catch (e) {
    reason = `${e.message.split('\n')[0]}`;
  }
  if (!reason && !/now from http:\/\/127\.0\.0\.1:\d+\/live\/s\.flv/.test(edgeLog)) reason = 'the edge logged no switch';
  if (!reason && backup.connections !== 1) reason = `the backup saw ${backup.connections} connections, not 1`;
  if (reason) {
    fail(name, reason, [`page: ${pageUrl}`, `last stats: ${JSON.stringify(last)}`,
      ...consoleLines.slice(-20), ...edgeLogTail(15)]);
  } else {
    pass(name, `killed at currentTime ${ctAtKill.toFixed(2)} s (${want.primary}); ${want.backup} from ` +
      `${ctAtSwitch.toFixed(2)} s, ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill; currentTime ` +
      `${last.currentTime.toFixed(2)} s, ${last.totalVideoFrames} frames, ${last.droppedVideoFrames} dropped, no error`);
  }
  await page.close();
}

// ---- the edge ------------------------------------------------------------------------------

function startEdge(configPath) {
  return new Promise((resolve, reject) => {
    edge = spawn(BIN, ['-c', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => reject(new Error('no "flvedge: listening on" line on stderr within 10 s')), 10000);
    const onData = (chunk) => {
      edgeLog += chunk.toString();
      if (edgeLog.length > 200000) edgeLog = edgeLog.slice(-100000);
      // The "loop(s)" line comes after every listener's line (the HTTPS one included).
      const m = /flvedge: listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(edgeLog);
      if (m && /flvedge: \d+ loop\(s\), connections spread by/.test(edgeLog)) { clearTimeout(timer); resolve(Number(m[1])); }
    };
    edge.stderr.on('data', onData);
    edge.stdout.on('data', onData);
    edge.on('error', (e) => { clearTimeout(timer); reject(e); });
    edge.on('exit', (code, signal) => {
      edgeLog += `\n[flvedge exited: code ${code}, signal ${signal}]\n`;
      clearTimeout(timer);
      reject(new Error(`flvedge exited before listening (code ${code}, signal ${signal})`));
    });
  });
}

async function stopEdge() {
  if (!edge || edge.exitCode !== null || edge.signalCode !== null) return;
  const exited = new Promise((resolve) => edge.once('exit', (code, signal) => resolve({ code, signal })));
  edge.kill('SIGTERM');
  const r = await Promise.race([exited, sleep(5000).then(() => null)]);
  if (r === null) {
    log('note: flvedge did not exit within 5 s of SIGTERM; killed it');
    edge.kill('SIGKILL');
  } else if (r.code !== 0) {
    log(`note: flvedge exited with code ${r.code}, signal ${r.signal} after SIGTERM (expected 0)`);
  }
}

function edgeLogTail(lines) {
  const all = edgeLog.trim().split('\n');
  return all.slice(-lines).map((l) => 'flvedge| ' + l);
}

// ---- a second origin for the page: a plain static file server --------------------------

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css', '.map': 'application/json', '.json': 'application/json' };

function startPageServer(root) {
  return new Promise((resolve, reject) => {
    pageServer = http.createServer((req, res) => {
      const p = path.join(root, decodeURIComponent(new URL(req.url, 'http://x').pathname));
      if (!p.startsWith(root + path.sep) || !fs.existsSync(p) || !fs.statSync(p).isFile()) {
        res.writeHead(404, { 'Content-Type': 'text/plain' });
        res.end('not found\n');
        return;
      }
      res.writeHead(200, { 'Content-Type': TYPES[path.extname(p)] || 'application/octet-stream' });
      fs.createReadStream(p).pipe(res);
    });
    pageServer.on('error', reject);
    pageServer.listen(0, '127.0.0.1', () => resolve(pageServer.address().port));
  });
}

// ---- one playback check ----------------------------------------------------------------------

async function playbackCheck(name, pageUrl, opts) {
  const page = await context.newPage();
  const consoleLines = [];
  const responses = [];
  const failures = [];
  page.on('console', (m) => consoleLines.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => failures.push(`${r.method()} ${r.url()}: ${r.failure() ? r.failure().errorText : '?'}`));
  page.on('response', (r) => responses.push({ url: r.url(), status: r.status(), headers: r.headers() }));

  const started = Date.now();
  const deadline = started + CHECK_TIMEOUT_MS;
  let last = null;
  let firstFrames = null;
  let reason = null;

  const diagnostics = () => {
    const d = [`page: ${pageUrl}`, `last stats: ${JSON.stringify(last)}`];
    for (const r of responses) {
      const h = r.headers;
      d.push(`response ${r.status} ${r.url}  content-type=${h['content-type'] || '-'}` +
        `  access-control-allow-origin=${h['access-control-allow-origin'] || '-'}` +
        `  transfer-encoding=${h['transfer-encoding'] || '-'}  content-length=${h['content-length'] || '-'}`);
    }
    for (const f of failures) d.push(`request failed: ${f}`);
    for (const c of consoleLines.slice(-20)) d.push(c);
    return d.concat(edgeLogTail(15));
  };

  try {
    await page.goto(pageUrl, { waitUntil: 'load', timeout: Math.max(1000, deadline - Date.now()) });
    for (;;) {
      last = await page.evaluate(() => (window.fePlayer ? window.fePlayer.stats() : null));
      if (last && last.state === 'error') { reason = `the player reports an error: ${last.errors.join(' | ')}`; break; }
      if (last && last.currentTime > 0.5 && firstFrames === null) firstFrames = last.totalVideoFrames;
      if (last && last.currentTime > 2 && firstFrames !== null && last.totalVideoFrames > firstFrames &&
          (!opts.latency || (last.edgeLatency !== null && last.bitrateKbps !== null))) break;
      if (Date.now() > deadline) {
        reason = `within ${CHECK_TIMEOUT_MS / 1000} s, currentTime did not pass 2 s with decoded frames growing`;
        break;
      }
      await sleep(200);
    }
    // The stream is 800 kbit/s video + 128 kbit/s audio, the edge on this host: the bitrate the
    // page shows is the stream's, and the end-to-end latency is about the player's buffer.
    if (!reason && opts.latency) {
      if (!(last.bitrateKbps > 200 && last.bitrateKbps < 5000)) reason = `bitrate ${last.bitrateKbps} kbit/s out of 200..5000`;
      else if (!(last.edgeLatency > -0.3 && last.edgeLatency < 5)) reason = `end-to-end latency ${last.edgeLatency} s out of -0.3..5`;
      else {
        const shown = await page.evaluate(() => [document.getElementById('s-bitrate').textContent,
          document.getElementById('s-e2e').textContent]);
        if (!/kbit\/s$/.test(shown[0]) || !/ s$/.test(shown[1])) reason = `the page shows "${shown[0]}" and "${shown[1]}"`;
      }
    }
    if (!reason && opts.protocol) {
      const proto = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
      if (proto !== opts.protocol) reason = `the page came over "${proto}", not ${opts.protocol}`;
    }
    if (!reason && opts.requireCors) {
      const flv = responses.find((r) => r.url.startsWith(opts.streamUrl));
      const acao = flv && flv.headers['access-control-allow-origin'];
      if (!flv) reason = 'no response for the stream was seen';
      else if (acao !== '*' && acao !== opts.pageOrigin) reason = `Access-Control-Allow-Origin is ${acao === undefined ? 'missing' : `"${acao}"`}`;
    }
  } catch (e) {
    reason = `${e.message.split('\n')[0]}`;
  }

  if (!reason && opts.accessLog) {
    // a live request is logged when it ends: once the page is gone
    await page.close();
    const until = Date.now() + 5000;
    const line = () => (fs.existsSync(opts.accessLog) ? fs.readFileSync(opts.accessLog, 'utf8') : '');
    while (!/"GET \/flv\/test\.flv HTTP\/2\.0" 200/.test(line()) && Date.now() < until) await sleep(100);
    if (!/"GET \/flv\/test\.flv HTTP\/2\.0" 200/.test(line())) reason = 'the access log has no HTTP/2.0 line for the stream';
    else last.protocol = 'h2 (page), HTTP/2.0 (stream, access log)';
  }
  if (reason) {
    fail(name, reason, diagnostics());
  } else {
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    pass(name, `currentTime ${last.currentTime.toFixed(2)} s, ${last.totalVideoFrames} frames decoded ` +
      `(${firstFrames} at 0.5 s), ${last.droppedVideoFrames} dropped, buffered latency ` +
      `${last.latency === null ? '?' : last.latency.toFixed(2)} s, end-to-end latency ` +
      `${last.edgeLatency === null ? '?' : last.edgeLatency.toFixed(2)} s, bitrate ` +
      `${last.bitrateKbps === null ? '?' : last.bitrateKbps.toFixed(0)} kbit/s, ${last.width}x${last.height}, after ${secs} s` +
      (last.protocol ? `, ${last.protocol}` : ''));
    if (opts.screenshot) {
      await sleep(300); // one more stats refresh on the page
      await page.screenshot({ path: opts.screenshot, fullPage: true });
      log(`screenshot: ${opts.screenshot}`);
    }
  }
  if (!page.isClosed()) await page.close();
}

// ---- main ------------------------------------------------------------------------------------

async function cleanup() {
  if (context) { try { await context.close(); } catch (e) { /* browser gone */ } context = null; }
  if (pageServer) { pageServer.close(); pageServer = null; }
  if (vodOrigin) { vodOrigin.close(); vodOrigin = null; }
  for (const o of liveOrigins.splice(0)) o.kill();
  await stopEdge();
  if (tmpDir) { try { fs.rmSync(tmpDir, { recursive: true, force: true }); } catch (e) { /* best effort */ } }
}

function finish() {
  if (finished) return;
  finished = true;
  const passed = results.filter(Boolean).length;
  const failed = results.length - passed;
  log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

async function main() {
  log(`flvedge browser test: ${BIN}`);
  const missing = missingPrerequisites();
  if (missing.length) {
    fail('prerequisites', `missing ${missing.join('; ')}`, ['run tests/browser/setup.sh, and build flvedge']);
    return;
  }
  const version = spawnSync(BIN, ['-v'], { encoding: 'utf8', timeout: 5000 });
  log(`version: ${(version.stdout + version.stderr).trim() || '(none printed)'}`);

  const media = testMedia();
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flvedge-browser-'));
  const vod = vodSupported(tmpDir);
  let vodResource = [];
  if (vod.ok) {
    const originPort = await startVodOrigin(vodMedia());
    vodResource = [`    { name = "vod", prefix = "/videos/", type = "vod", origin = "http://127.0.0.1:${originPort}/media/", ` +
      `cache_dir = ${luaString(path.join(tmpDir, 'vodcache'))}, slice_size = 1048576 },`];
  }
  // A self-signed certificate for localhost (check 2b), trusted by Chromium by its key's hash.
  const crt = path.join(tmpDir, 'site.crt');
  const key = path.join(tmpDir, 'site.key');
  const ssl = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-keyout', key, '-out', crt, '-days', '2', '-subj', '/CN=localhost', '-addext',
    'subjectAltName=DNS:localhost'], { encoding: 'utf8' });
  const spki = ssl.status === 0 ? spawnSync('bash', ['-c', `openssl x509 -in ${crt} -pubkey -noout | ` +
    'openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64'], { encoding: 'utf8' }).stdout.trim() : '';
  // Check 2c's origin group: a primary at 640x360, a backup at 320x240.
  const foPrimary = await startLiveOrigin(media);
  const foBackup = await startLiveOrigin(testMedia('320x240'));
  liveOrigins.push(foPrimary, foBackup);
  const accessLog = path.join(tmpDir, 'access.log');
  const config = path.join(tmpDir, 'flvedge.lua');
  fs.writeFileSync(config, [
    'return {',
    spki ? `  listen = { "127.0.0.1:0", { "127.0.0.1:0", tls = { cert = ${luaString(crt)}, key = ${luaString(key)} } } },`
      : '  listen = { "127.0.0.1:0" },',
    `  access_log = ${luaString(accessLog)}, access_log_format = "combined",`,
    '  log_level = "info",',
    '  -- cors_origin left at its default ("*"): check 2 relies on it',
    '  resources = {',
    `    { name = "live", prefix = "/flv/", type = "live", stamp_time = true, origin = ${luaString('file:' + media)} },`,
    `    { name = "failover", prefix = "/fo/", type = "live", origin = { "http://127.0.0.1:${foPrimary.port}/live/", ` +
      `"http://127.0.0.1:${foBackup.port}/live/" }, origin_connect_timeout = 1, origin_read_timeout = 1, origin_recheck = 0 },`,
    ...vodResource,
    `    { name = "player", prefix = "/", type = "static", root = ${luaString(PLAYER_DIR)} },`,
    '  },',
    '}',
    ''].join('\n'));

  let port;
  try {
    port = await startEdge(config);
  } catch (e) {
    fail('start', e.message, [`config ${config}:`, ...fs.readFileSync(config, 'utf8').trim().split('\n'), ...edgeLogTail(30)]);
    return;
  }
  log(`flvedge listening on 127.0.0.1:${port}`);

  const { chromium } = require('playwright-core');
  context = await chromium.launchPersistentContext(path.join(tmpDir, 'chromium-profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1000, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', `--ignore-certificate-errors-spki-list=${spki}`, '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
  });

  const edgeBase = `http://127.0.0.1:${port}`;
  const stream = `${edgeBase}/flv/test.flv`;
  await playbackCheck('same-origin playback (page and stream from flvedge)',
    `${edgeBase}/index.html?autoplay=1&src=${encodeURIComponent(stream)}`,
    { screenshot: SCREENSHOT, streamUrl: stream, latency: true });

  const pagePort = await startPageServer(PLAYER_DIR);
  const pageOrigin = `http://127.0.0.1:${pagePort}`;
  await playbackCheck(`cross-origin playback (page from ${pageOrigin}, stream from ${edgeBase})`,
    `${pageOrigin}/index.html?autoplay=1&src=${encodeURIComponent(stream)}`,
    { requireCors: true, streamUrl: stream, pageOrigin });

  const tls = /flvedge: listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(edgeLog);
  if (!spki || !tls) {
    fail('HTTPS playback over h2', spki ? 'no "listening on https://" line' : `openssl: ${ssl.stderr}`, edgeLogTail(10));
  } else {
    const tlsBase = `https://localhost:${tls[1]}`;
    const tlsStream = `${tlsBase}/flv/test.flv`;
    await playbackCheck(`HTTPS playback with h2 negotiated by ALPN (page and stream from ${tlsBase})`,
      `${tlsBase}/index.html?autoplay=1&src=${encodeURIComponent(tlsStream)}`,
      { streamUrl: tlsStream, protocol: 'h2', accessLog });
  }

  const foStream = `${edgeBase}/fo/s.flv`;
  await failoverCheck('live failover to a backup at another resolution (origin group, primary killed mid-play)',
    `${edgeBase}/index.html?autoplay=1&src=${encodeURIComponent(foStream)}`, foPrimary, foBackup,
    { primary: '640x360', backup: '320x240' });

  if (!vod.ok) {
    log(`SKIP vod seek: this flvedge has no vod resource yet (${vod.text})`);
    return;
  }
  const file = `${edgeBase}/videos/test.flv`;
  await vodSeekCheck('VOD playback and a seek to 30 s (mpegts.js isLive false, Range requests through the vod cache)',
    `${edgeBase}/index.html?autoplay=1&vod=1&src=${encodeURIComponent(file)}`, 30);
}

const watchdog = setTimeout(() => {
  fail('overall', `the test did not finish within ${TOTAL_TIMEOUT_MS / 1000} s`, edgeLogTail(20));
  if (edge && edge.exitCode === null) edge.kill('SIGKILL');
  finish();
}, TOTAL_TIMEOUT_MS);
watchdog.unref();

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    fail('interrupted', sig);
    interrupted = true;
    cleanup().finally(finish);
  });
}
// Whatever happens, never leave the edge running.
process.on('exit', () => { if (edge && edge.exitCode === null && edge.signalCode === null) edge.kill('SIGKILL'); });

main()
  .catch((e) => fail('error', e.stack || String(e), edgeLogTail(20)))
  .then(cleanup)
  .catch((e) => log(`cleanup: ${e.message}`))
  .then(finish);
