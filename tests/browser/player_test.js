#!/usr/bin/env node
// flvedge in a real browser: headless Chromium opens examples/player (mpegts.js) and plays a live
// HTTP-FLV stream from the real flvedge binary.
//   1. same origin: the edge serves the page (static resource "/") and the stream (live "/flv/").
//   2. cross origin: a second server here serves the page, the stream comes from the edge, so
//      Chromium needs the edge's Access-Control-Allow-Origin.
// Each passes when video.currentTime goes past 2 s and getVideoPlaybackQuality().totalVideoFrames
// grows, polled within a bounded wait. Prints PASS/FAIL lines and "N passed, N failed"; exits 0 or 1.
//
// Environment:
//   FLVEDGE_BIN            the binary (default: build/flvedge of this checkout)
//   FE_MEDIA_DIR           cache for the generated test FLV (default: /tmp/flvedge-media)
//   FE_CHROMIUM            the browser (default: /usr/bin/chromium)
//   FE_BROWSER_TIMEOUT_MS  the wait of each check (default: 30000)
//   FE_SCREENSHOT          where the screenshot of a passing page goes (default: /tmp/flvedge-player.png)
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
const SCREENSHOT = process.env.FE_SCREENSHOT || '/tmp/flvedge-player.png';
const PLAYER_DIR = path.join(ROOT, 'examples', 'player');
const TOTAL_TIMEOUT_MS = 3 * CHECK_TIMEOUT_MS + 60000;

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

function testMedia() {
  const file = path.join(MEDIA_DIR, 'browser-640x360-30fps-10s.flv');
  if (fs.existsSync(file) && fs.statSync(file).size > 100000) return file;
  fs.mkdirSync(MEDIA_DIR, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  const r = spawnSync('ffmpeg', ['-nostdin', '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30',
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

// ---- the edge ------------------------------------------------------------------------------

function startEdge(configPath) {
  return new Promise((resolve, reject) => {
    edge = spawn(BIN, ['-c', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => reject(new Error('no "flvedge: listening on" line on stderr within 10 s')), 10000);
    const onData = (chunk) => {
      edgeLog += chunk.toString();
      if (edgeLog.length > 200000) edgeLog = edgeLog.slice(-100000);
      const m = /flvedge: listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(edgeLog);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
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
      if (last && last.currentTime > 2 && firstFrames !== null && last.totalVideoFrames > firstFrames) break;
      if (Date.now() > deadline) {
        reason = `within ${CHECK_TIMEOUT_MS / 1000} s, currentTime did not pass 2 s with decoded frames growing`;
        break;
      }
      await sleep(200);
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

  if (reason) {
    fail(name, reason, diagnostics());
  } else {
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    pass(name, `currentTime ${last.currentTime.toFixed(2)} s, ${last.totalVideoFrames} frames decoded ` +
      `(${firstFrames} at 0.5 s), ${last.droppedVideoFrames} dropped, buffered latency ` +
      `${last.latency === null ? '?' : last.latency.toFixed(2)} s, ${last.width}x${last.height}, after ${secs} s`);
    if (opts.screenshot) {
      await sleep(300); // one more stats refresh on the page
      await page.screenshot({ path: opts.screenshot, fullPage: true });
      log(`screenshot: ${opts.screenshot}`);
    }
  }
  await page.close();
}

// ---- main ------------------------------------------------------------------------------------

async function cleanup() {
  if (context) { try { await context.close(); } catch (e) { /* browser gone */ } context = null; }
  if (pageServer) { pageServer.close(); pageServer = null; }
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
  const config = path.join(tmpDir, 'flvedge.lua');
  fs.writeFileSync(config, [
    'return {',
    '  listen = { "127.0.0.1:0" },',
    '  log_level = "info",',
    '  -- cors_origin left at its default ("*"): check 2 relies on it',
    '  resources = {',
    `    { name = "live", prefix = "/flv/", type = "live", origin = ${luaString('file:' + media)} },`,
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
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
  });

  const edgeBase = `http://127.0.0.1:${port}`;
  const stream = `${edgeBase}/flv/test.flv`;
  await playbackCheck('same-origin playback (page and stream from flvedge)',
    `${edgeBase}/index.html?autoplay=1&src=${encodeURIComponent(stream)}`,
    { screenshot: SCREENSHOT, streamUrl: stream });

  const pagePort = await startPageServer(PLAYER_DIR);
  const pageOrigin = `http://127.0.0.1:${pagePort}`;
  await playbackCheck(`cross-origin playback (page from ${pageOrigin}, stream from ${edgeBase})`,
    `${pageOrigin}/index.html?autoplay=1&src=${encodeURIComponent(stream)}`,
    { requireCors: true, streamUrl: stream, pageOrigin });
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
