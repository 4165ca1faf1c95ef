// flvedge example player: mpegts.js on a <video> element, with live statistics.
// window.fePlayer exposes the state for people (devtools) and for tests/browser/player_test.js.
(function () {
  'use strict';

  var $ = function (id) { return document.getElementById(id); };
  var video = $('video');
  var urlInput = $('url');
  var playBtn = $('play');
  var stopBtn = $('stop');
  var onlyAudio = $('only-audio');
  var onlyVideo = $('only-video');
  var mutedBox = $('muted');
  var statusEl = $('status');
  var logEl = $('log');

  var params = new URLSearchParams(location.search);
  var flag = function (name) { var v = params.get(name); return v !== null && v !== '0' && v !== 'false'; };
  var vod = flag('vod');

  var player = null;
  var timer = null;
  var state = 'idle';
  var info = { url: '', speedKBps: null, mediaInfo: null, startedAt: null, stamp: null };
  var errors = [];
  var events = [];

  function defaultUrl() {
    if (location.protocol === 'http:' || location.protocol === 'https:') {
      return location.origin + '/flv/demo.flv';
    }
    return 'http://127.0.0.1:8080/flv/demo.flv';
  }

  function log(level, text) {
    var entry = { t: Date.now(), level: level, text: String(text) };
    events.push(entry);
    if (events.length > 500) events.shift();
    var li = document.createElement('li');
    li.className = level;
    li.textContent = new Date(entry.t).toLocaleTimeString() + '  ' + entry.text;
    logEl.appendChild(li);
    while (logEl.childNodes.length > 200) logEl.removeChild(logEl.firstChild);
    logEl.scrollTop = logEl.scrollHeight;
    if (level === 'error') {
      errors.push(entry.text);
      $('log-box').open = true;
    }
  }

  function setState(s, text) {
    state = s;
    statusEl.className = s;
    statusEl.textContent = text;
  }

  // The stream URL with only_audio / only_video set from the checkboxes.
  function streamUrl(raw) {
    var u = new URL(raw, location.href);
    u.searchParams.delete('only_audio');
    u.searchParams.delete('only_video');
    if (onlyAudio.checked) u.searchParams.set('only_audio', '1');
    if (onlyVideo.checked) u.searchParams.set('only_video', '1');
    return u.href;
  }

  function bufferedEnd() {
    var b = video.buffered;
    return b && b.length ? b.end(b.length - 1) : null;
  }

  // End-to-end latency from the edge's clock: a resource with stamp_time = true inserts an
  // onFI script tag {edge_ms} once a second. When one arrives, the media just before it ends
  // about where the buffer ends; media plays in real time, so what plays now left the edge
  // (currentTime - that position) after edge_ms. Assumes the viewer's clock and the edge's
  // agree (NTP); the origin's own delay before the edge is not in it.
  function onScriptData(data) {
    var fi = data && data.onFI;
    if (!fi || typeof fi.edge_ms !== 'number') return;
    var end = bufferedEnd();
    info.stamp = { edgeMs: fi.edge_ms, at: Date.now(), mediaPos: end === null ? video.currentTime : end };
  }

  function edgeLatency() {
    var st = info.stamp;
    if (!st || video.readyState < 2) return null;
    return (Date.now() - st.edgeMs) / 1000 - (video.currentTime - st.mediaPos);
  }

  function snapshot() {
    var q = typeof video.getVideoPlaybackQuality === 'function' ? video.getVideoPlaybackQuality() : null;
    var end = bufferedEnd();
    var mi = info.mediaInfo;
    return {
      state: state,
      url: info.url,
      currentTime: video.currentTime,
      bufferedEnd: end,
      latency: end === null ? null : end - video.currentTime,
      edgeLatency: edgeLatency(),
      stamps: info.stamp ? 1 : 0,
      bitrateKbps: info.speedKBps === null ? null : info.speedKBps * 8,
      paused: video.paused,
      muted: video.muted,
      readyState: video.readyState,
      totalVideoFrames: q ? q.totalVideoFrames : null,
      droppedVideoFrames: q ? q.droppedVideoFrames : null,
      speedKBps: info.speedKBps,
      width: mi ? mi.width : null,
      height: mi ? mi.height : null,
      videoCodec: mi ? mi.videoCodec : null,
      audioCodec: mi ? mi.audioCodec : null,
      errors: errors.slice()
    };
  }

  function fmt(n, digits, unit) {
    return n === null || n === undefined || isNaN(n) ? '–' : n.toFixed(digits) + (unit || '');
  }

  function render() {
    var s = snapshot();
    $('s-time').textContent = fmt(s.currentTime, 2, ' s');
    $('s-latency').textContent = fmt(s.latency, 2, ' s');
    $('s-e2e').textContent = s.edgeLatency === null ? (info.url ? 'no edge clock in this stream (stamp_time)' : '–')
      : fmt(s.edgeLatency, 2, ' s');
    $('s-bitrate').textContent = s.bitrateKbps === null ? '–' : fmt(s.bitrateKbps, 0, ' kbit/s');
    $('s-decoded').textContent = s.totalVideoFrames === null ? '–' : String(s.totalVideoFrames);
    $('s-dropped').textContent = s.droppedVideoFrames === null ? '–' : String(s.droppedVideoFrames);
    $('s-speed').textContent = s.speedKBps === null ? '–'
      : fmt(s.speedKBps, 0, ' KB/s') + ' (' + fmt(s.speedKBps * 8 / 1000, 2, ' Mbit/s') + ')';
    var media = [];
    if (s.videoCodec && s.width && s.height) media.push(s.width + '×' + s.height);
    if (s.videoCodec) media.push(s.videoCodec);
    if (s.audioCodec) media.push(s.audioCodec);
    $('s-media').textContent = media.length ? media.join('  ') : '–';
    $('s-url').textContent = s.url || '–';
  }

  function stop(reason) {
    if (timer) { clearInterval(timer); timer = null; }
    if (player) {
      var p = player;
      player = null;
      try { p.pause(); } catch (e) { /* already stopped */ }
      try { p.unload(); } catch (e) { /* already unloaded */ }
      try { p.detachMediaElement(); } catch (e) { /* not attached */ }
      try { p.destroy(); } catch (e) { /* already destroyed */ }
    }
    stopBtn.disabled = true;
    if (reason !== 'restart') {
      info.speedKBps = null;
      info.mediaInfo = null;
      setState('idle', 'Stopped.');
      log('info', 'stopped');
    }
    render();
  }

  function play(raw) {
    if (typeof mpegts === 'undefined') {
      setState('error', 'mpegts.js did not load: run "npm install" in examples/player.');
      log('error', 'mpegts.js missing (node_modules/mpegts.js/dist/mpegts.js)');
      return;
    }
    if (!(vod ? mpegts.getFeatureList().msePlayback : mpegts.getFeatureList().mseLivePlayback)) {
      setState('error', 'This browser cannot play live HTTP-FLV (no Media Source Extensions).');
      log('error', 'mseLivePlayback not supported');
      return;
    }
    stop('restart');
    var url;
    try {
      url = streamUrl(raw || urlInput.value || defaultUrl());
    } catch (e) {
      setState('error', 'Not a valid URL: ' + (raw || urlInput.value));
      log('error', 'bad URL: ' + e.message);
      return;
    }
    errors.length = 0;
    info = { url: url, speedKBps: null, mediaInfo: null, startedAt: Date.now(), stamp: null };
    video.muted = mutedBox.checked;

    var source = { type: 'flv', isLive: !vod, url: url };
    if (onlyAudio.checked) source.hasVideo = false;
    if (onlyVideo.checked) source.hasAudio = false;
    // ?vod=1: a file, not a stream: seekable, mpegts.js seeks with Range requests at keyframes.
    player = mpegts.createPlayer(source, vod ? {
      isLive: false,
      enableWorker: false,
      lazyLoad: true,             // keep about 10 s ahead, not the whole file: a seek past it asks
      lazyLoadMaxDuration: 10,    // the server for a range at a keyframe
      lazyLoadRecoverDuration: 5,
      seekType: 'range',
      accurateSeek: true
    } : {
      isLive: true,
      enableWorker: false,
      enableStashBuffer: false,
      lazyLoad: false,
      liveBufferLatencyChasing: true,
      liveBufferLatencyMaxLatency: 1.5,
      liveBufferLatencyMinRemain: 0.5,
      autoCleanupSourceBuffer: true,
      autoCleanupMaxBackwardDuration: 30,
      autoCleanupMinBackwardDuration: 10
    });
    var current = player;
    player.on(mpegts.Events.ERROR, function (type, detail, data) {
      if (current !== player) return;
      var msg = type + ' / ' + detail + (data && data.msg ? ': ' + data.msg : '') +
        (data && data.code ? ' (code ' + data.code + ')' : '');
      log('error', msg);
      setState('error', 'Error: ' + msg);
    });
    player.on(mpegts.Events.MEDIA_INFO, function (mi) {
      info.mediaInfo = mi;
      log('info', 'media: ' + [mi.width && mi.height ? mi.width + 'x' + mi.height : null,
        mi.videoCodec, mi.audioCodec].filter(Boolean).join(' '));
    });
    player.on(mpegts.Events.STATISTICS_INFO, function (st) { info.speedKBps = st.speed; });
    player.on(mpegts.Events.SCRIPTDATA_ARRIVED, function (data) { if (current === player) onScriptData(data); });
    player.on(mpegts.Events.LOADING_COMPLETE, function () {
      if (vod) log('info', 'the whole file is loaded'); else log('warn', 'the server ended the stream');
    });
    player.on(mpegts.Events.RECOVERED_EARLY_EOF, function () { log('warn', 'recovered from an early end of stream'); });

    player.attachMediaElement(video);
    player.load();
    setState('loading', 'Connecting to ' + url + ' …');
    log('info', 'play ' + url);
    stopBtn.disabled = false;
    timer = setInterval(render, 250);

    var started = player.play();
    if (started && typeof started.catch === 'function') {
      started.catch(function (e) {
        if (current !== player) return;
        if (e && e.name === 'NotAllowedError') {
          setState('waiting', 'The browser blocked autoplay with sound: tick "muted" or press Play.');
          log('warn', 'autoplay blocked: ' + e.message);
        } else if (e && e.name !== 'AbortError') {
          log('error', 'play(): ' + (e.message || e));
        }
      });
    }
  }

  video.addEventListener('playing', function () { if (player) setState('playing', 'Playing ' + info.url); });
  video.addEventListener('waiting', function () { if (player && state !== 'error') setState('waiting', 'Buffering …'); });
  video.addEventListener('error', function () {
    if (!player) return;
    var err = video.error;
    var msg = 'video element error' + (err ? ' ' + err.code + ': ' + (err.message || '') : '');
    log('error', msg);
    setState('error', msg);
  });

  // only_audio and only_video exclude each other.
  onlyAudio.addEventListener('change', function () { if (onlyAudio.checked) onlyVideo.checked = false; });
  onlyVideo.addEventListener('change', function () { if (onlyVideo.checked) onlyAudio.checked = false; });
  mutedBox.addEventListener('change', function () { video.muted = mutedBox.checked; });
  video.addEventListener('volumechange', function () { mutedBox.checked = video.muted; });

  $('controls').addEventListener('submit', function (ev) { ev.preventDefault(); play(); });
  stopBtn.addEventListener('click', function () { stop(); });

  if (typeof mpegts !== 'undefined') {
    // mpegts.js reports its warnings and errors into the event log; no debug chatter on the console.
    mpegts.LoggingControl.enableDebug = false;
    mpegts.LoggingControl.enableVerbose = false;
    mpegts.LoggingControl.addLogListener(function (type, text) {
      if (type === 'error' || type === 'warn') log('warn', 'mpegts.js: ' + text);
    });
  }

  urlInput.value = params.get('src') || defaultUrl();
  onlyAudio.checked = flag('only_audio');
  onlyVideo.checked = !onlyAudio.checked && flag('only_video');
  mutedBox.checked = flag('muted') || flag('autoplay');

  window.fePlayer = {
    play: function (url) { if (url) urlInput.value = url; play(); },
    seek: function (seconds) { video.currentTime = seconds; },
    stop: function () { stop(); },
    stats: snapshot,
    get state() { return state; },
    get player() { return player; },
    video: video,
    errors: errors,
    events: events
  };

  render();
  if (typeof mpegts === 'undefined') {
    setState('error', 'mpegts.js did not load: run "npm install" in examples/player.');
  } else if (flag('autoplay')) {
    play();
  }
})();
