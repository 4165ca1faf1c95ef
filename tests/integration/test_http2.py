"""
HTTP/2 (docs/http2.md): h2c with prior knowledge on a listener with h2c = true, h2 by ALPN on TLS
listeners (the test CA of test_tls.py), live and VOD through the same router, policies and kinds.

Clients, and why each:
- curl (libcurl's nghttp2): --http2-prior-knowledge and --http2 for live, VOD, ranges, 304, 431;
  ffprobe reads what curl got over HTTP/2 (ffmpeg's own HTTP client speaks HTTP/1.1 only).
- H2: a raw-frame client written here (frames are 9 bytes of header; requests use HPACK literals
  without Huffman, so no HPACK tables are needed). Only a raw client can withhold WINDOW_UPDATE for
  one stream while granting it to five others, or send the attack patterns exactly (HEADERS +
  RST_STREAM pairs, PING/SETTINGS/empty-DATA/CONTINUATION floods): curl and nghttp read every
  stream, and h2load has no reset or flood mode.
- h2load (Debian's nghttp2-client): many concurrent streams of real clients, while an attack runs
  on another connection: the other clients must be served.
"""

import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (SANITIZED, T, EdgeTestCase, FlvReader, Synth, ensure_vod_media, have_ffmpeg, run,
                        vod_config, wait_until)
from test_slow_viewer import frame_no
from test_tls import make_ca, make_cert

CERTS = None
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = \
    0, 1, 2, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 1, 4, 1
REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 7, 8, 11


def setUpModule():
    global CERTS
    if not shutil.which("openssl"):
        raise unittest.SkipTest("openssl not installed")
    CERTS = tempfile.mkdtemp(prefix="flvedge-h2-")
    make_ca(CERTS, "ca")
    make_cert(CERTS, "ca", "local", ["localhost"])


def tearDownModule():
    if CERTS:
        shutil.rmtree(CERTS, True)


def read_text(path):
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def cert(name):
    return os.path.join(CERTS, name + ".crt")


def key(name):
    return os.path.join(CERTS, name + ".key")


def curl(url, *extra, timeout=20):
    """curl verifying against the test CA -> (rc, status, http_version, body, stderr)."""
    cmd = ["curl", "-sS", "--cacert", cert("ca"), "-o", "-", "-w", "\n%{http_code} %{http_version}",
           "--max-time", str(timeout)]
    r = subprocess.run(cmd + list(extra) + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout + 10)
    body, _, tail = r.stdout.rpartition(b"\n")
    code, _, ver = tail.decode().partition(" ")
    return r.returncode, int(code or "0"), ver, body, r.stderr.decode(errors="replace")


# ---- a raw HTTP/2 client ---------------------------------------------------------------------

def hpack_int(value, prefix_bits, first=0):
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out = [first | top]
    value -= top
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack_literal(name, value):
    """A literal field without indexing, new name, no Huffman: no table on either side changes."""
    name, value = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def request_block(path, authority="localhost", method="GET", headers=()):
    fields = [(":method", method), (":scheme", "http"), (":path", path), (":authority", authority)]
    return b"".join(hpack_literal(n, v) for n, v in fields + list(headers))


class H2:
    """One HTTP/2 connection (h2c prior knowledge). Reads frames in a thread; DATA is counted per
    stream and, for the streams in `read`, given back with WINDOW_UPDATE (the connection's window
    always: a stream left unread then blocks only itself)."""

    def __init__(self, port, window=65535, grant=True, conn_window=1 << 30, keep=()):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.lock = threading.Lock()
        self.wlock = threading.Lock()
        self.data = {}         # stream -> bytes of DATA received
        self.first = {}        # stream -> first DATA payload bytes (up to 64 KiB)
        self.headers = set()   # streams whose HEADERS came
        self.ended = set()     # streams ended by END_STREAM
        self.resets = {}       # stream -> RST_STREAM error code
        self.goaway = None     # error code of a GOAWAY
        self.closed = False
        self.read = set()
        self.grant = grant
        self.sent_bytes = 0
        self.keep = set(keep)  # streams whose whole DATA is kept in self.body
        self.body = {}
        grant0 = self.frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", conn_window)) if conn_window else b""
        self.sock.sendall(PREFACE + self.frame(SETTINGS, 0, 0, struct.pack(">HI", 4, window) +
                                               struct.pack(">HI", 2, 0)) + grant0)
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    @staticmethod
    def frame(ftype, flags, sid, payload=b""):
        return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload

    def send(self, data):
        try:
            with self.wlock:  # the reader thread and the test both send: whole frames each
                self.sock.sendall(data)
            self.sent_bytes += len(data)
            return True
        except OSError:
            return False

    def get(self, sid, path, read=True, headers=()):
        if read:
            self.read.add(sid)
        return self.send(self.frame(HEADERS, END_STREAM | END_HEADERS, sid,
                                    request_block(path, headers=headers)))

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            d = self.sock.recv(n - len(buf))
            if not d:
                raise EOFError
            buf += d
        return buf

    def _reader(self):
        self.sock.settimeout(None)
        try:
            while True:
                hd = self._recv_exact(9)
                length = int.from_bytes(hd[:3], "big")
                ftype, flags, sid = hd[3], hd[4], int.from_bytes(hd[5:9], "big") & 0x7fffffff
                payload = self._recv_exact(length) if length else b""
                with self.lock:
                    if ftype == DATA:
                        self.data[sid] = self.data.get(sid, 0) + length
                        if len(self.first.get(sid, b"")) < 65536:
                            self.first[sid] = self.first.get(sid, b"") + payload
                        if sid in self.keep:
                            self.body.setdefault(sid, bytearray()).extend(payload)
                        if flags & END_STREAM:
                            self.ended.add(sid)
                        if length and self.grant:
                            up = self.frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", length))
                            if sid in self.read:
                                up += self.frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", length))
                            self.send(up)
                    elif ftype == HEADERS:
                        self.headers.add(sid)
                        if flags & END_STREAM:
                            self.ended.add(sid)
                    elif ftype == RST_STREAM:
                        self.resets[sid] = int.from_bytes(payload[:4], "big")
                    elif ftype == SETTINGS and not flags & ACK:
                        self.send(self.frame(SETTINGS, ACK, 0))
                    elif ftype == GOAWAY:
                        self.goaway = int.from_bytes(payload[4:8], "big")
        except (EOFError, OSError):
            pass
        self.closed = True

    def bytes_of(self, sid):
        with self.lock:
            return self.data.get(sid, 0)

    def window_update(self, sid, n):
        return self.send(self.frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", n)))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---- HTTP/1.1's Upgrade: h2c ------------------------------------------------------------------

def settings_b64(*entries):
    """An HTTP2-Settings value: SETTINGS entries (id, value), base64url without padding."""
    import base64
    return base64.urlsafe_b64encode(b"".join(struct.pack(">HI", i, v) for i, v in entries)).decode().rstrip("=")


CURL_SETTINGS = settings_b64((3, 100), (4, 32 << 20), (2, 0))  # what curl 7.88 sends


def upgrade_request(port, path, method="GET", settings=CURL_SETTINGS, body=b"", extra="",
                    connection="Upgrade, HTTP2-Settings"):
    """One HTTP/1.1 request asking Upgrade: h2c -> (socket, response head text, bytes after it)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: %s\r\nUpgrade: h2c\r\n" % (method, path, connection)
    if settings is not None:
        head += "HTTP2-Settings: %s\r\n" % settings
    if body:
        head += "Content-Length: %d\r\n" % len(body)
    s.sendall((head + extra + "\r\n").encode() + body)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    h, _, rest = buf.partition(b"\r\n\r\n")
    return s, h.decode(errors="replace"), rest


def recv_frames(sock, rest, until, timeout=10):
    """Reads HTTP/2 frames (after `rest`, bytes already read) until until(frames) is true, the
    socket ends or timeout; each frame is (type, flags, stream, payload)."""
    buf, frames = rest, []
    deadline = time.time() + timeout
    sock.settimeout(1)
    while True:
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            frames.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff, buf[9:9 + n]))
            buf = buf[9 + n:]
        if until(frames) or time.time() >= deadline:
            return frames
        try:
            d = sock.recv(65536)
        except socket.timeout:
            continue
        if not d:
            return frames
        buf += d


# ---- the edge --------------------------------------------------------------------------------

class H2Base(EdgeTestCase):
    """A live origin of six synthetic streams and a VOD origin of a real FLV, behind one edge with
    an h2c listener and a TLS listener."""

    limits = {}
    live = {}
    files = None  # the edge's files (a policy), by name

    def setUp(self):
        self.media = ensure_vod_media()
        self.name = os.path.basename(self.media)
        self.origin = self.start_origin()
        for i in range(6):
            self.origin.route("/live/s%d.flv" % i, Synth(vsize=3000))
        self.vorigin = self.start_vod_origin(os.path.dirname(self.media))
        cache = tempfile.mkdtemp(prefix="flvedge-vodcache-")
        self.addCleanup(shutil.rmtree, cache, True)
        live = {"name": "live", "prefix": "/flv/", "type": "live", "origin": self.origin.url("/live/")}
        live.update(self.live)
        cfg = vod_config(self.vorigin.url(), cache, extra_resources=[live], top={
            "listen": [{1: "127.0.0.1:0", "h2c": True},
                       {1: "127.0.0.1:0", "tls": {"cert": cert("local"), "key": key("local")}}],
            "access_log": "access.log", "workers": 1, "limits": dict(self.limits)})
        self.edge = self.start_edge(cfg, files=self.files)
        self.h2c = "http://127.0.0.1:%d" % self.edge.ports[0]
        self.tls = "https://localhost:%d" % self.edge.ports[1]
        with open(self.media, "rb") as f:
            self.file = f.read()

    def assert_flv(self, body, min_tags=10):
        """Whole tags checked (PreviousTagSize == 11 + DataSize); a cut live body may end mid-tag."""
        r = FlvReader()
        r.feed(body)
        self.assertGreaterEqual(len(r.tags), min_tags, "FLV tags in %d bytes" % len(body))
        return r.tags


class H2cTest(H2Base):
    def test_curl_prior_knowledge_plays_live_as_flv(self):
        rc, status, ver, body, err = curl(self.h2c + "/flv/s0.flv", "--http2-prior-knowledge", timeout=3)
        self.assertIn(rc, (0, 28), err)  # 28: --max-time; a live stream does not end
        self.assertEqual((status, ver), (200, "2"), err)
        self.assert_flv(body)

    def test_curl_prior_knowledge_vod_whole_ranges_and_304(self):
        url = self.h2c + "/videos/" + self.name
        rc, status, ver, body, err = curl(url, "--http2-prior-knowledge")
        self.assertEqual((rc, status, ver), (0, 200, "2"), err)
        self.assertEqual(body, self.file)
        rc, status, ver, body, err = curl(url, "--http2-prior-knowledge", "-r", "100000-299999")
        self.assertEqual((rc, status, ver), (0, 206, "2"), err)
        self.assertEqual(body, self.file[100000:300000])
        rc, status, ver, body, err = curl(url, "--http2-prior-knowledge", "-r", "0-9,20-29")
        self.assertEqual((rc, status), (0, 206), err)
        self.assertIn(self.file[0:10], body)
        self.assertIn(self.file[20:30], body)
        self.assertIn(b"multipart/byteranges", subprocess.run(
            ["curl", "-sS", "-D", "-", "-o", "/dev/null", "--http2-prior-knowledge", "-r", "0-9,20-29", url],
            stdout=subprocess.PIPE).stdout)
        head = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", "--http2-prior-knowledge", url],
                              stdout=subprocess.PIPE).stdout.decode()
        etag = [l.split(":", 1)[1].strip() for l in head.splitlines() if l.lower().startswith("etag:")][0]
        rc, status, ver, body, err = curl(url, "--http2-prior-knowledge", "-H", "If-None-Match: " + etag)
        self.assertEqual((rc, status, body), (0, 304, b""), err)
        # a seek by time: the FLV header, the prefix and the file from a keyframe
        rc, status, ver, body, err = curl(url + "?t=30", "--http2-prior-knowledge")
        self.assertEqual((rc, status), (0, 200), err)
        self.assertTrue(body.startswith(b"FLV") and len(body) < len(self.file), len(body))

    def test_vod_cache_miss_then_hit_over_h2_and_the_origin_asked_once(self):
        url = "/videos/" + self.name
        origin_path = "/media/" + self.name
        rc, status, ver, heads, body, err = curl_headers(self.h2c + url, "--http2-prior-knowledge")
        self.assertEqual((rc, status, ver), (0, 200, "2"), err)
        self.assertEqual(heads.get("x-cache-status"), "MISS", heads)
        self.assertTrue(body == self.file, "the MISS body differs from the file")
        # the store may end just after the body: a HEAD over h2 says when it is in
        wait_until(lambda: curl_headers(self.h2c + url, "--http2-prior-knowledge", "-I")[3]
                   .get("x-cache-status") == "HIT", T(10), "cached (HEAD over h2 -> HIT)")
        # each 64 KiB slice asked of the origin once
        ranges = self.vorigin.ranges(origin_path)
        self.assertEqual(len(ranges), (len(self.file) + 65535) // 65536, ranges[:5])
        self.assertEqual(len(set(ranges)), len(ranges), "a slice asked twice")
        for base, extra in ((self.tls, "--http2"), (self.h2c, "--http2-prior-knowledge")):
            rc, status, ver, heads, body, err = curl_headers(base + url, extra)
            self.assertEqual((rc, status, ver), (0, 200, "2"), err)
            self.assertEqual(heads.get("x-cache-status"), "HIT", heads)
            self.assertTrue(body == self.file, "the HIT body differs from the file")
            rc, status, ver, heads, body, err = curl_headers(base + url, extra, "-r", "2000000-2099999")
            self.assertEqual((rc, status, ver, heads.get("x-cache-status")), (0, 206, "2", "HIT"), err)
            self.assertTrue(body == self.file[2000000:2100000])
        self.assertEqual(self.vorigin.ranges(origin_path), ranges, "a HIT over h2 asked the origin")

    def test_http11_is_still_served_on_the_h2c_listener(self):
        rc, status, ver, body, err = curl(self.h2c + "/videos/" + self.name, "--http1.1", "-r", "0-99")
        self.assertEqual((rc, status, ver, body), (0, 206, "1.1", self.file[:100]), err)

    def test_access_log_and_metrics_count_the_protocol(self):
        curl(self.h2c + "/videos/" + self.name, "--http2-prior-knowledge", "-r", "0-99")
        curl(self.h2c + "/videos/" + self.name, "--http1.1", "-r", "0-99")
        log = os.path.join(self.edge.dir, "access.log")
        wait_until(lambda: read_text(log).count("\n") >= 2, T(5), "log lines")
        text = read_text(log)
        self.assertIn('"protocol":"HTTP/2.0"', text)
        self.assertIn('"protocol":"HTTP/1.1"', text)
        by = self.edge.series("flvedge_protocol_requests_total")
        self.assertEqual((by['{protocol="HTTP/2.0"}'], by['{protocol="HTTP/1.1"}']), (1, 1), by)

    def test_a_header_list_over_max_header_size_is_431_and_the_connection_goes_on(self):
        # curl's first request goes before our SETTINGS (MAX_HEADER_LIST_SIZE) reach it
        rc, status, ver, body, err = curl(self.h2c + "/videos/" + self.name, "--http2-prior-knowledge",
                                          "-H", "X-Big: " + "a" * 9000)
        self.assertEqual((status, ver), (431, "2"), err)
        # on one connection: the big head is answered 431, the next stream is served
        c = H2(self.edge.ports[0])
        self.addCleanup(c.close)
        c.get(1, "/videos/" + self.name, headers=[("x-big", "a" * 9000)])
        c.get(3, "/videos/" + self.name, headers=[("range", "bytes=0-9")])
        wait_until(lambda: {1, 3} <= c.ended, T(10), "both streams answered")
        self.assertTrue(c.first[1].startswith(b"431 "), c.first.get(1))
        self.assertEqual(c.first[3], self.file[:10])
        self.assertFalse(c.closed)


POLICY = r'''
return {
  access = function(req)
    local a = req.args
    if a.deny then
      return 451, "denied over h2\n", { ["X-Policy"] = "h2", ["Retry-After"] = 7 }
    end
    if a.echo then
      local h = req.headers
      return 418, table.concat({ req.method, req.host, req.path, req.query, h["user-agent"] or "-",
        h["X-Custom"] or "-", h.x_custom or "-", h["x-custom"] or "-", h.host or "-" }, "|") .. "\n"
    end
  end,
}
'''


def curl_headers(url, *extra, timeout=20):
    """curl as above, with the response's head too -> (rc, status, http_version, {name: value}, body, stderr);
    names lower-cased (HTTP/2 sends them so; HTTP/1.1 as the server wrote them)."""
    with tempfile.NamedTemporaryFile(prefix="flvedge-h2-head-") as f:
        rc, status, ver, body, err = curl(url, "-D", f.name, *extra, timeout=timeout)
        text = f.read().decode(errors="replace")
    heads = {}
    for line in text.splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            heads[name.strip().lower()] = value.strip()
    return rc, status, ver, heads, body, err


class H2PolicyTest(H2Base):
    """A live resource with an access policy: over h2 (ALPN and h2c prior knowledge) it sees the
    request it sees over HTTP/1.1, req.host from :authority, and its denials come back whole."""

    files = {"policy.lua": POLICY}
    live = {"policy": "policy.lua"}
    WANT = b"GET|edge.example.com|/flv/s0.flv|echo=1|UA/1.0|yes|yes|yes|Edge.Example.com:8080\n"

    def test_policy_sees_host_from_authority_and_the_same_headers_as_over_http11(self):
        hdrs = ["-H", "Host: Edge.Example.com:8080", "-H", "User-Agent: UA/1.0", "-H", "X-Custom: yes"]
        url = "/flv/s0.flv?echo=1"
        got = {}
        for name, base, extra in (("HTTP/1.1", self.h2c, ["--http1.1"]),
                                  ("h2c prior knowledge", self.h2c, ["--http2-prior-knowledge"]),
                                  ("h2 by ALPN", self.tls, ["--http2"])):
            rc, status, ver, body, err = curl(base + url, *(extra + hdrs))
            self.assertEqual((rc, status), (0, 418), name + ": " + err)
            self.assertEqual(ver, "1.1" if name == "HTTP/1.1" else "2", name)
            got[name] = body
        self.assertEqual(got["HTTP/1.1"], self.WANT)
        self.assertEqual(got["h2c prior knowledge"], self.WANT)
        self.assertEqual(got["h2 by ALPN"], self.WANT)
        # exactly what comes on the wire: :authority and no host field, lower-case names (HPACK)
        c = H2(self.edge.ports[0])
        self.addCleanup(c.close)
        c.send(H2.frame(HEADERS, END_STREAM | END_HEADERS, 1, request_block(
            url, authority="Edge.Example.com:8080", headers=[("user-agent", "UA/1.0"), ("x-custom", "yes")])))
        wait_until(lambda: 1 in c.ended, T(10), "the echo answered")
        self.assertEqual(c.first[1], self.WANT)
        # a host field besides :authority: the same site (any case) is served; another site makes
        # the request malformed (RFC 9113 8.3.1): 400, never seen by the policy; two host fields:
        # nghttp2 resets the stream (PROTOCOL_ERROR)
        for sid, hosts, want in ((3, ["edge.example.COM:8080"], b"|yes|yes|yes|edge.example.COM:8080\n"),
                                 (5, ["other.example.com"], b"bad request: Host differs from :authority"),
                                 (7, ["Edge.Example.com:8080"] * 2, None)):
            c.send(H2.frame(HEADERS, END_STREAM | END_HEADERS, sid, request_block(
                url, authority="Edge.Example.com:8080",
                headers=[("user-agent", "UA/1.0"), ("x-custom", "yes")] + [("host", h) for h in hosts])))
            wait_until(lambda: sid in c.ended or sid in c.resets, T(10), "stream %d answered" % sid)
            if want is None:
                self.assertEqual(c.resets.get(sid), 1, "two host fields: RST_STREAM PROTOCOL_ERROR")
            else:
                self.assertIn(want, c.first.get(sid, b""), hosts)
        self.assertFalse(c.closed)
        self.assertEqual(self.origin.connections("/live/s0.flv"), 0)

    def test_denial_with_status_headers_and_body_over_h2(self):
        for name, base, extra in (("h2c prior knowledge", self.h2c, ["--http2-prior-knowledge"]),
                                  ("h2 by ALPN", self.tls, ["--http2"]),
                                  ("HTTP/1.1", self.h2c, ["--http1.1"])):
            rc, status, ver, heads, body, err = curl_headers(base + "/flv/s0.flv?deny=1", *extra)
            self.assertEqual((rc, status, body), (0, 451, b"denied over h2\n"), name + ": " + err)
            self.assertEqual(ver, "1.1" if name == "HTTP/1.1" else "2", name)
            self.assertEqual((heads.get("x-policy"), heads.get("retry-after")), ("h2", "7"), (name, heads))
            self.assertEqual(heads.get("content-length"), str(len(body)), (name, heads))
        self.assertEqual(self.origin.connections("/live/s0.flv"), 0, "a denied request reached the origin")
        # an admitted one plays over h2
        rc, status, ver, body, err = curl(self.h2c + "/flv/s0.flv", "--http2-prior-knowledge", timeout=3)
        self.assertEqual((status, ver), (200, "2"), err)
        self.assert_flv(body)


class H2FanoutMemoryTest(H2Base):
    """Live over h2 keeps the shared buffers: DATA frames point into the hub's blocks, so a viewer's
    h2 stream costs its stream state and buffers, not a copy of the stream it watches."""

    def test_many_h2_streams_of_one_live_stream_cost_no_copy_of_it(self):
        warm = H2(self.edge.ports[0])
        self.addCleanup(warm.close)
        self.assertTrue(warm.get(1, "/flv/s0.flv"))
        wait_until(lambda: warm.bytes_of(1) > 50000, T(10), "the stream pulled and its window warm")
        rss0 = self.edge.rss_kb()
        conns, n = [], 0
        for _ in range(4):
            c = H2(self.edge.ports[0])
            self.addCleanup(c.close)
            for i in range(10):
                self.assertTrue(c.get(1 + 2 * i, "/flv/s0.flv"))
                n += 1
            conns.append(c)
        wait_until(lambda: all(c.bytes_of(1 + 2 * i) > 50000 for c in conns for i in range(10)),
                   T(15), "every h2 stream past its join")
        per = (self.edge.rss_kb() - rss0) / n
        sys.stderr.write("\n%d h2 viewers on 4 connections: %.1f KB each\n" % (n, per))
        if not SANITIZED:  # ASan's shadow memory and quarantine multiply RSS
            self.assertLess(per, 64, "memory per h2 viewer (KB)")
        for c in conns:
            self.assertFalse(c.closed)
            self.assertIsNone(c.goaway)


class H2cStreamsTest(H2Base):
    live = {"slow_viewer_timeout": 3}
    limits = {"h2_max_streams": 8}

    def test_six_live_streams_on_one_connection_one_never_read(self):
        c = H2(self.edge.ports[0])
        self.addCleanup(c.close)
        for i in range(6):
            self.assertTrue(c.get(1 + 2 * i, "/flv/s%d.flv" % i, read=(i != 5)))
        wait_until(lambda: all(c.bytes_of(1 + 2 * i) > 100000 for i in range(5)), T(10), "five streams flowing")
        # the unread stream got no more than its window, then stayed behind in the hub
        time.sleep(1)
        self.assertLessEqual(c.bytes_of(11), 65535)
        before = [c.bytes_of(1 + 2 * i) for i in range(5)]
        # it is cut off after slow_viewer_timeout (3 s) by RST_STREAM, not the connection
        wait_until(lambda: 11 in c.resets, T(8), "the unread stream reset")
        self.assertEqual(c.resets[11], CANCEL)
        time.sleep(1)
        after = [c.bytes_of(1 + 2 * i) for i in range(5)]
        gained = [a - b for a, b in zip(after, before)]
        self.assertTrue(all(g > 100000 for g in gained), gained)
        # fair: every flowing stream got about the same (the same bitrate each)
        self.assertGreater(min(after) / max(after), 0.7, after)
        self.assertFalse(c.closed)
        self.assertIsNone(c.goaway)
        self.assertGreaterEqual(self.edge.metric("flvedge_viewers_kicked_total"), 1)
        for i in range(5):
            self.assert_flv(c.first[1 + 2 * i], min_tags=3)

    def test_streams_beyond_max_concurrent_end_the_connection_and_within_it_flow(self):
        c = H2(self.edge.ports[0])
        self.addCleanup(c.close)
        for i in range(8):
            c.get(1 + 2 * i, "/flv/s%d.flv" % (i % 6))
        wait_until(lambda: all(c.bytes_of(1 + 2 * i) > 10000 for i in range(8)), T(10), "8 streams flowing")
        # a ninth, beyond the SETTINGS the client acknowledged: nghttp2 answers it as a connection
        # error (RFC 9113 5.1.2 allows PROTOCOL_ERROR or REFUSED_STREAM; the latter comes only
        # before the ACK)
        c.get(17, "/flv/s0.flv")
        wait_until(lambda: c.closed, T(5), "the connection closed")
        self.assertEqual(c.goaway, 1)  # PROTOCOL_ERROR
        self.assertTrue(self.edge.alive())
        wait_until(lambda: self.edge.metric("flvedge_viewers") == 0, T(5), "its viewers gone")


def flv_frames(body):
    """The Synth video frames of an FLV body, [(frame number, tag)]; FlvReader checks every tag
    (PreviousTagSize == 11 + DataSize), so a body cut or spliced mid-tag fails here."""
    r = FlvReader(digest=False)
    r.feed(bytes(body))
    return [(frame_no(t), t) for t in r.tags if frame_no(t) is not None]


class H2cFlowControlTest(H2Base):
    """Flow control stands in for the socket's back-pressure (docs/http2.md): a stream (or a whole
    connection) whose client grants little window is moved forward to a keyframe as a slow
    HTTP/1.1 viewer is, and nothing else waits for it. big.flv is about 1.6 MB/s; the hub's window
    of 2 MiB holds about 1.3 s of it."""

    live = {"slow_viewer_timeout": 30, "window_bytes": 2 << 20}

    def setUp(self):
        super().setUp()
        self.origin.route("/live/big.flv", Synth(fps=25, gop=25, vsize=60_000, ksize=150_000, asize=400))

    def jumps_of_big(self):
        return sum(v for k, v in self.edge.series("flvedge_stream_viewer_jumps_total").items()
                   if 'stream="big"' in k)

    def assert_moved_forward_to_keyframes(self, body, what):
        frames = flv_frames(body)
        gaps = [(a, b, tb) for (a, _), (b, tb) in zip(frames, frames[1:]) if b != a + 1]
        self.assertTrue(gaps, "%s: no gap in %d frames: never moved forward" % (what, len(frames)))
        for a, b, tb in gaps:
            self.assertGreater(b, a, "%s jumped backwards: frame %d -> %d" % (what, a, b))
            self.assertTrue(tb.is_keyframe, "%s resumed at a non-keyframe after %d -> %d" % (what, a, b))

    def test_a_slowly_read_stream_is_moved_to_a_keyframe_and_the_others_flow(self):
        c = H2(self.edge.ports[0], keep={1})
        self.addCleanup(c.close)
        c.get(1, "/flv/big.flv", read=False)  # its window only from the trickle below
        c.get(3, "/flv/s0.flv")
        c.get(5, "/flv/s1.flv")
        wait_until(lambda: c.bytes_of(1) >= 65535 and c.bytes_of(3) > 10000, T(10), "the streams started")
        stop = threading.Event()

        def trickle():  # about 160 KB/s of window for a stream of 1.6 MB/s: read, but slowly
            while not stop.wait(0.05):
                c.window_update(1, 8192)

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        self.addCleanup(stop.set)
        others0 = [c.bytes_of(3), c.bytes_of(5)]
        jumps0 = self.jumps_of_big()
        wait_until(lambda: self.jumps_of_big() > jumps0, T(15), "the slow stream moved forward (per-stream jumps)")
        self.assertGreaterEqual(self.edge.metric("flvedge_viewer_jumps_total"), 1)
        # what it reads after the jump starts at a keyframe and stays valid FLV
        wait_until(lambda: self._gap(c), T(10), "frames after the jump at the client")
        stop.set()
        t.join(5)
        self.assert_moved_forward_to_keyframes(self._body(c, 1), "the slow stream")
        # the other streams of the connection kept flowing all along, and nothing was reset
        wait_until(lambda: all(c.bytes_of(sid) - b0 > 100000 for sid, b0 in zip((3, 5), others0)),
                   T(10), "the other streams flowing")
        self.assertEqual((c.resets, c.goaway, c.closed), ({}, None, False))

    def _body(self, c, sid):
        with c.lock:
            return bytes(c.body.get(sid, b""))

    def _gap(self, c, sid=1):
        frames = flv_frames(self._body(c, sid))
        return any(b != a + 1 for (a, _), (b, _) in zip(frames, frames[1:]))

    def test_a_closed_connection_window_stops_every_stream_until_it_reopens(self):
        # The client's connection window is the default 65535 and it gives nothing back; each
        # stream's own window is large, so only the connection's holds them.
        c = H2(self.edge.ports[0], window=1 << 20, conn_window=None, grant=False, keep={1, 3, 5})
        self.addCleanup(c.close)
        for sid, path in ((1, "big"), (3, "s0"), (5, "s1")):
            c.get(sid, "/flv/%s.flv" % path)
        total = lambda: sum(c.bytes_of(sid) for sid in (1, 3, 5))
        wait_until(lambda: total() == 65535, T(10), "the connection window used up")
        rss0 = self.edge.rss_kb()
        jumps0 = self.jumps_of_big()
        # other connections are served meanwhile: curl, and a raw client reading big.flv
        other = H2(self.edge.ports[0])
        self.addCleanup(other.close)
        other.get(1, "/flv/big.flv")
        rc, status, ver, body, err = curl(self.h2c + "/flv/s2.flv", "--http2-prior-knowledge", timeout=2)
        self.assertEqual((status, ver), (200, "2"), err)
        self.assert_flv(body)
        wait_until(lambda: other.bytes_of(1) > 3 << 20, T(10), "3 MiB of big.flv on another connection")
        # long enough for big.flv to fall off the hub's window (about 1.3 s): nothing more came
        self.assertEqual(total(), 65535, [c.bytes_of(sid) for sid in (1, 3, 5)])
        self.assertEqual((c.resets, c.goaway, c.closed), ({}, None, False))
        if not SANITIZED:
            self.assertLess(self.edge.rss_kb() - rss0, 64 * 1024, "RSS growth (KiB)")
        # the window reopens: every stream goes on, big.flv moved forward to a keyframe
        before = [c.bytes_of(sid) for sid in (1, 3, 5)]
        c.grant = True
        c.window_update(0, 1 << 30)
        wait_until(lambda: all(c.bytes_of(sid) - b > 100000 for sid, b in zip((1, 3, 5), before)),
                   T(10), "every stream of the connection going on")
        wait_until(lambda: self._gap(c), T(10), "big.flv's frames after the reopening")
        self.assertGreater(self.jumps_of_big(), jumps0)
        self.assert_moved_forward_to_keyframes(self._body(c, 1), "big.flv")
        for sid in (3, 5):
            flv_frames(self._body(c, sid))  # valid FLV all along
        self.assertEqual((c.resets, c.goaway, c.closed), ({}, None, False))


class H2cAttackTest(H2Base):
    limits = {"h2_control_rate": 100}

    def check_served_and_bounded(self, rss0):
        rc, status, ver, body, err = curl(self.h2c + "/videos/" + self.name, "--http2-prior-knowledge",
                                          "-r", "0-999")
        self.assertEqual((rc, status, body), (0, 206, self.file[:1000]), err)
        self.assertTrue(self.edge.alive())
        if not SANITIZED:  # ASan's quarantine keeps freed memory: RSS says nothing there
            self.assertLess(self.edge.rss_kb() - rss0, 64 * 1024, "RSS growth (KiB)")

    def flood(self, unit, n=20000):
        rss0 = self.edge.rss_kb()
        c = H2(self.edge.ports[0])
        self.addCleanup(c.close)
        batch = b"".join(unit(i) for i in range(200))
        for _ in range(n // 200):
            if not c.send(batch):
                break
        wait_until(lambda: c.closed, T(10), "the connection closed")
        return c, rss0

    def test_rapid_reset_gets_goaway_enhance_your_calm(self):
        def unit(i):
            sid = 1 + 2 * i
            return (H2.frame(HEADERS, END_STREAM | END_HEADERS, sid, request_block("/videos/" + self.name)) +
                    H2.frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
        c, rss0 = self.flood(lambda i: unit(i % 20000))
        self.assertEqual(c.goaway, ENHANCE_YOUR_CALM)
        self.assertGreaterEqual(self.edge.metric("flvedge_h2_flood_closes_total"), 1)
        self.check_served_and_bounded(rss0)

    def test_ping_flood(self):
        c, rss0 = self.flood(lambda i: H2.frame(PING, 0, 0, struct.pack(">Q", i)))
        self.assertEqual(c.goaway, ENHANCE_YOUR_CALM)
        self.check_served_and_bounded(rss0)

    def test_settings_flood(self):
        c, rss0 = self.flood(lambda i: H2.frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535)))
        self.assertEqual(c.goaway, ENHANCE_YOUR_CALM)
        self.check_served_and_bounded(rss0)

    def test_empty_data_frames_flood(self):
        rss0 = self.edge.rss_kb()
        c = H2(self.edge.ports[0])
        self.addCleanup(c.close)
        c.send(H2.frame(HEADERS, END_HEADERS, 1, request_block("/videos/" + self.name)))
        for _ in range(100):
            if not c.send(H2.frame(DATA, 0, 1) * 200):
                break
        wait_until(lambda: c.closed, T(10), "the connection closed")
        self.assertEqual(c.goaway, ENHANCE_YOUR_CALM)
        self.check_served_and_bounded(rss0)

    def test_continuation_flood(self):
        # The limit is on CONTINUATION frames per header block (8), not on bytes or a rate: a head
        # in 8 of them is served, one in 9 ends the connection with GOAWAY ENHANCE_YOUR_CALM.
        path = "/videos/" + self.name
        ok = H2(self.edge.ports[0])
        self.addCleanup(ok.close)
        ok.read.add(1)
        ok.send(H2.frame(HEADERS, END_STREAM, 1, request_block(path, headers=[("range", "bytes=0-9")])) +
                b"".join(H2.frame(CONTINUATION, END_HEADERS if i == 7 else 0, 1, hpack_literal("x-a", "b"))
                         for i in range(8)))
        wait_until(lambda: 1 in ok.ended, T(10), "the head in 8 CONTINUATION frames answered")
        self.assertEqual(ok.first[1], self.file[:10])
        self.assertIsNone(ok.goaway)
        calm0 = self.edge.metric("flvedge_h2_flood_closes_total") or 0
        nine = H2(self.edge.ports[0])
        self.addCleanup(nine.close)
        nine.send(H2.frame(HEADERS, END_STREAM, 1, request_block(path)) +
                  H2.frame(CONTINUATION, 0, 1, hpack_literal("x-a", "b")) * 9)
        wait_until(lambda: nine.closed, T(10), "the connection closed after a 9th CONTINUATION")
        self.assertEqual(nine.goaway, ENHANCE_YOUR_CALM, self.edge.stderr_tail(3000))
        self.assertNotIn(1, nine.headers, "the stream was answered")
        self.assertEqual(self.edge.metric("flvedge_h2_flood_closes_total"), calm0 + 1)
        self.edge.wait_log("http2 .*CONTINUATION")
        # and a flood of them, as an attacker sends it
        rss0 = self.edge.rss_kb()
        c = H2(self.edge.ports[0])
        self.addCleanup(c.close)
        # one send: an ACK of our reader between two CONTINUATION frames would be a protocol error
        c.send(H2.frame(HEADERS, END_STREAM, 1, request_block(path)) +
               H2.frame(CONTINUATION, 0, 1, hpack_literal("x-a", "b")) * 10000)
        wait_until(lambda: c.closed, T(10), "the connection closed")
        self.assertEqual(c.goaway, ENHANCE_YOUR_CALM)
        self.check_served_and_bounded(rss0)

    def h2load_during(self, blob):
        """h2load's 2000 requests on 4 connections while attackers send `blob` on connection after
        connection (each until the edge closes it): every request succeeds, the attackers were
        closed as floods, memory stays bounded."""
        rss0 = self.edge.rss_kb()
        calm0 = self.edge.metric("flvedge_h2_flood_closes_total") or 0
        stop = threading.Event()
        goaways = []

        def attack():
            while not stop.is_set():
                c = H2(self.edge.ports[0])
                c.send(blob)
                wait_until(lambda: c.closed or stop.is_set(), T(10), "closed")
                if c.closed:
                    goaways.append(c.goaway)
                c.close()

        t = threading.Thread(target=attack, daemon=True)
        t.start()
        try:
            # the attacker's first connection is under way before the clients start
            wait_until(lambda: goaways or (self.edge.metric("flvedge_h2_flood_closes_total") or 0) > calm0,
                       T(10), "a flood connection closed")
            n0 = len(goaways)
            r = run(["h2load", "-n", "2000", "-c", "4", "-m", "10", "-H", "Range: bytes=0-4095",
                     self.h2c + "/videos/" + self.name], timeout=T(60))
        finally:
            stop.set()
            t.join(T(20))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("2000 succeeded, 0 failed", r.stdout, r.stdout)
        self.assertTrue(goaways and all(g == ENHANCE_YOUR_CALM for g in goaways), goaways)
        self.assertGreater(len(goaways), n0, "no flood connection closed while h2load ran")
        self.assertGreaterEqual(self.edge.metric("flvedge_h2_flood_closes_total"), calm0 + len(goaways))
        self.check_served_and_bounded(rss0)

    @unittest.skipUnless(shutil.which("h2load"), "h2load (nghttp2-client) not installed")
    def test_h2load_clients_are_served_during_a_rapid_reset_flood(self):
        self.h2load_during(b"".join(H2.frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i,
                                             request_block("/videos/" + self.name)) +
                                    H2.frame(RST_STREAM, 0, 1 + 2 * i, struct.pack(">I", CANCEL))
                                    for i in range(2000)))

    @unittest.skipUnless(shutil.which("h2load"), "h2load (nghttp2-client) not installed")
    def test_h2load_clients_are_served_during_a_ping_flood(self):
        self.h2load_during(b"".join(H2.frame(PING, 0, 0, struct.pack(">Q", i)) for i in range(4000)))

    @unittest.skipUnless(shutil.which("h2load"), "h2load (nghttp2-client) not installed")
    def test_h2load_clients_are_served_during_a_settings_flood(self):
        self.h2load_during(H2.frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535)) * 4000)

    @unittest.skipUnless(shutil.which("h2load"), "h2load (nghttp2-client) not installed")
    def test_h2load_clients_are_served_during_an_empty_data_flood(self):
        self.h2load_during(H2.frame(HEADERS, END_HEADERS, 1, request_block("/videos/" + self.name)) +
                           H2.frame(DATA, 0, 1) * 4000)


class H2cUpgradeTest(H2Base):
    """HTTP/1.1's Upgrade: h2c (RFC 7540 3.2) on the h2c listener: curl --http2 on http:// URLs asks
    for it; raw sockets send exactly the upgrades that must be refused."""

    limits = {"request_timeout": 2}

    def test_curl_upgrade_plays_live_as_flv(self):
        rc, status, ver, body, err = curl(self.h2c + "/flv/s0.flv", "--http2", "-v", timeout=3)
        self.assertIn(rc, (0, 28), err)  # 28: --max-time; a live stream does not end
        self.assertIn("HTTP/1.1 101", err)
        self.assertEqual((status, ver), (200, "2"), err)
        self.assert_flv(body)

    def test_curl_upgrade_vod_whole_range_and_head(self):
        url = self.h2c + "/videos/" + self.name
        rc, status, ver, body, err = curl(url, "--http2", "-v")
        self.assertEqual((rc, status, ver), (0, 200, "2"), err)
        self.assertIn("HTTP/1.1 101", err)
        self.assertEqual(body, self.file)
        rc, status, ver, body, err = curl(url, "--http2", "-r", "100000-299999")
        self.assertEqual((rc, status, ver), (0, 206, "2"), err)
        self.assertEqual(body, self.file[100000:300000])
        # HEAD: nghttp2 is told (upgrade2's head_request), so a Content-Length without DATA is fine
        rc, status, ver, body, err = curl(url, "--http2", "-I")
        self.assertEqual((rc, status, ver), (0, 200, "2"), err)
        self.assertIn(b"content-length: %d" % len(self.file), body.lower())

    def test_access_log_records_an_upgraded_request_as_http2(self):
        rc, status, ver, body, err = curl(self.h2c + "/videos/" + self.name, "--http2", "-r", "0-99")
        self.assertEqual((rc, status, ver, body), (0, 206, "2", self.file[:100]), err)
        log = os.path.join(self.edge.dir, "access.log")
        wait_until(lambda: read_text(log).count("\n") >= 1, T(5), "log line")
        time.sleep(0.3)  # a second line (the request logged as HTTP/1.1 too) would be a bug
        lines = read_text(log).splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn('"protocol":"HTTP/2.0"', lines[0])
        self.assertIn('"status":206', lines[0])
        by = self.edge.series("flvedge_protocol_requests_total")
        self.assertEqual((by.get('{protocol="HTTP/2.0"}', 0), by.get('{protocol="HTTP/1.1"}', 0)), (1, 0), by)

    def test_raw_upgrade_101_then_settings_then_stream_1_and_more_streams(self):
        s, head, rest = upgrade_request(self.edge.ports[0], "/videos/" + self.name, method="HEAD")
        self.addCleanup(s.close)
        self.assertTrue(head.startswith("HTTP/1.1 101 Switching Protocols"), head)
        self.assertIn("Upgrade: h2c", head)
        self.assertIn("Connection: Upgrade", head)
        frames = recv_frames(s, rest, lambda f: len(f) >= 1)
        self.assertEqual(frames[0][:3], (SETTINGS, 0, 0), "the server preface first")
        # our preface; then stream 1 (the HEAD, half-closed remote) and stream 3 on the connection
        s.sendall(PREFACE + H2.frame(SETTINGS, 0, 0) + H2.frame(SETTINGS, ACK, 0) +
                  H2.frame(HEADERS, END_STREAM | END_HEADERS, 3,
                           request_block("/videos/" + self.name, headers=[("range", "bytes=0-9")])))

        def done(f):
            ends = {sid for t, fl, sid, _ in f if t in (HEADERS, DATA) and fl & END_STREAM}
            return {1, 3} <= ends
        frames = recv_frames(s, b"", done)
        self.assertTrue(done(frames), frames)
        self.assertIn((HEADERS, END_STREAM | END_HEADERS, 1), [f[:3] for f in frames])  # HEAD: no DATA
        self.assertFalse([f for f in frames if f[0] == DATA and f[2] == 1])
        self.assertEqual(b"".join(f[3] for f in frames if f[0] == DATA and f[2] == 3), self.file[:10])
        self.assertFalse([f for f in frames if f[0] in (GOAWAY, RST_STREAM)], frames)

    def test_upgrade_pipelined_after_a_keep_alive_request(self):
        path = "/videos/" + self.name
        s = socket.create_connection(("127.0.0.1", self.edge.ports[0]), timeout=10)
        self.addCleanup(s.close)
        s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-9\r\n\r\n"
                   "GET %s HTTP/1.1\r\nHost: localhost\r\nRange: bytes=10-19\r\n"
                   "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: %s\r\n\r\n"
                   % (path, path, CURL_SETTINGS)).encode())
        buf = b""
        while buf.count(b"\r\n\r\n") < 2:
            d = s.recv(65536)
            self.assertTrue(d, buf)
            buf += d
        first, _, rest = buf.partition(b"\r\n\r\n")
        self.assertTrue(first.startswith(b"HTTP/1.1 206"), first)
        self.assertEqual(rest[:10], self.file[:10])
        second, _, rest = rest[10:].partition(b"\r\n\r\n")
        self.assertTrue(second.startswith(b"HTTP/1.1 101"), second)
        s.sendall(PREFACE + H2.frame(SETTINGS, 0, 0) + H2.frame(SETTINGS, ACK, 0))
        frames = recv_frames(s, rest, lambda f: any(t == DATA and sid == 1 and fl & END_STREAM
                                                    for t, fl, sid, _ in f))
        self.assertEqual(frames[0][:3], (SETTINGS, 0, 0))
        self.assertEqual(b"".join(f[3] for f in frames if f[0] == DATA and f[2] == 1), self.file[10:20])

    def test_upgraded_request_waits_for_the_preface_and_is_closed_without_one(self):
        # Nothing of stream 1 before the client's preface (curl 7.88 fails when over 32 KiB follow
        # the 101: the whole-file test above); no preface within request_timeout: closed.
        s, head, rest = upgrade_request(self.edge.ports[0], "/videos/" + self.name)
        self.addCleanup(s.close)
        self.assertTrue(head.startswith("HTTP/1.1 101"), head)
        t0 = time.time()
        buf = rest
        s.settimeout(T(10))
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        self.assertLess(time.time() - t0, T(8))
        frames = recv_frames(s, buf, lambda f: False, timeout=0)
        self.assertEqual([f[:3] for f in frames], [(SETTINGS, 0, 0)], frames)

    def http11_answer(self, s, head, rest):
        """An HTTP/1.1 answer with a Content-Length: (status line, body)."""
        length = [int(l.split(":", 1)[1]) for l in head.split("\r\n") if l.lower().startswith("content-length:")]
        body = rest
        while length and len(body) < length[0]:
            d = s.recv(65536)
            if not d:
                break
            body += d
        return head.split("\r\n", 1)[0], body

    def test_upgrade_with_a_body_is_answered_in_http11(self):
        s, head, rest = upgrade_request(self.edge.ports[0], "/videos/" + self.name, method="POST",
                                        body=b"x" * 100)
        self.addCleanup(s.close)
        self.assertTrue(head.startswith("HTTP/1.1 "), head)
        self.assertNotIn(" 101 ", head.split("\r\n", 1)[0])
        self.assertNotIn("upgrade: h2c", head.lower())

    def test_malformed_or_incomplete_upgrades_are_answered_in_http11(self):
        cases = {
            "not base64url": dict(settings="!!not*base64!!"),
            "not whole entries": dict(settings=settings_b64((3, 100))[:-2]),
            "ENABLE_PUSH 2": dict(settings=settings_b64((2, 2))),
            "a window over 2^31-1": dict(settings=settings_b64((4, 1 << 31))),
            "17 entries": dict(settings=settings_b64(*[(3, 100)] * 17)),
            "no HTTP2-Settings": dict(settings=None),
            "two HTTP2-Settings": dict(extra="HTTP2-Settings: %s\r\n" % CURL_SETTINGS),
            "no HTTP2-Settings in Connection": dict(connection="Upgrade"),
        }
        for why, kw in cases.items():
            s, head, rest = upgrade_request(self.edge.ports[0], "/videos/" + self.name,
                                            extra=kw.pop("extra", "") + "Range: bytes=0-9\r\n", **kw)
            with s:
                line, body = self.http11_answer(s, head, rest)
            self.assertEqual((line, body), ("HTTP/1.1 206 Partial Content", self.file[:10]), why)
        # the listener still upgrades a good one
        s, head, rest = upgrade_request(self.edge.ports[0], "/videos/" + self.name)
        s.close()
        self.assertTrue(head.startswith("HTTP/1.1 101"), head)


class H2TlsTest(H2Base):
    def test_alpn_offers_h2_first_and_http11_to_clients_without_it(self):
        for offer, want in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
            with socket.create_connection(("127.0.0.1", self.edge.ports[1]), timeout=10) as s:
                ctx = ssl.create_default_context(cafile=cert("ca"))
                ctx.set_alpn_protocols(offer)
                with ctx.wrap_socket(s, server_hostname="localhost") as t:
                    self.assertEqual(t.selected_alpn_protocol(), want)

    def test_curl_http2_over_tls_live_and_vod(self):
        rc, status, ver, body, err = curl(self.tls + "/flv/s1.flv", "--http2", timeout=3)
        self.assertIn(rc, (0, 28), err)
        self.assertEqual((status, ver), (200, "2"), err)
        self.assert_flv(body)
        url = self.tls + "/videos/" + self.name
        rc, status, ver, body, err = curl(url, "--http2")
        self.assertEqual((rc, status, ver), (0, 200, "2"), err)
        self.assertEqual(body, self.file)
        rc, status, ver, body, err = curl(url, "--http2", "-r", "1000000-1099999")
        self.assertEqual((rc, status, ver), (0, 206, "2"), err)
        self.assertEqual(body, self.file[1000000:1100000])
        log = os.path.join(self.edge.dir, "access.log")
        wait_until(lambda: '"tls_version":"TLSv1.2"' in read_text(log), T(5), "log")
        self.assertIn('"protocol":"HTTP/2.0"', read_text(log))

    def test_h2c_prior_knowledge_is_not_taken_on_the_tls_port(self):
        with socket.create_connection(("127.0.0.1", self.edge.ports[1]), timeout=10) as s:
            s.sendall(PREFACE)
            s.settimeout(5)
            data = s.recv(4096)
        self.assertTrue(data.startswith(b"HTTP/1.1 400"), data[:40])

    @unittest.skipUnless(have_ffmpeg(), "ffmpeg/ffprobe not installed")
    def test_ffprobe_reads_live_and_vod_that_came_over_h2_only(self):
        # ffmpeg's HTTP client speaks HTTP/1.1 only: ffprobe reads curl's HTTP/2 bytes from a pipe;
        # curl's -w says which protocol it really used, on its own file (stdout is the pipe)
        for path, max_time in (("/flv/s2.flv", "4"), ("/videos/" + self.name, "30")):
            with tempfile.NamedTemporaryFile(prefix="flvedge-h2-ver-") as ver:
                cmd = ("curl -sS --http2 --cacert %s --max-time %s -w '%%{http_version} %%{http_code}' "
                       "-o >(ffprobe -v error -show_entries stream=codec_type,codec_name -of compact "
                       "-i pipe:0) %s >%s; wait" % (cert("ca"), max_time, self.tls + path, ver.name))
                r = subprocess.run(["bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   timeout=T(60))
                used = ver.read().decode()
            self.assertEqual(used, "2 200", "curl did not get it over HTTP/2: %r %s" % (used, r.stderr[-500:]))
            streams = [dict(f.split("=", 1) for f in l.split("|")[1:])
                       for l in r.stdout.decode().splitlines() if l.startswith("stream|")]
            # the live stream's video and audio, as the VOD file's
            self.assertEqual(sorted((st.get("codec_type"), st.get("codec_name")) for st in streams),
                             [("audio", "aac"), ("video", "h264")], "%s: %s" % (path, r.stderr[-1000:]))


class H2QuickModeTest(EdgeTestCase):
    """Quick mode with --tls-cert/--tls-key offers h2 by ALPN with no setting at all."""

    def tls_args(self):
        return ["--tls-cert", cert("local"), "--tls-key", key("local")]

    def test_quick_mode_tls_negotiates_h2_for_live(self):
        origin = self.start_origin()
        origin.route("/live/s.flv", Synth())
        edge = self.start_quick_edge(origin.url("/live"), extra_args=self.tls_args())
        url = "https://localhost:%d/s.flv" % edge.port
        rc, status, ver, body, err = curl(url, "--http2", timeout=2)
        self.assertIn(rc, (0, 28), err)
        self.assertEqual((status, ver), (200, "2"), err)
        r = FlvReader()
        r.feed(body)
        self.assertGreaterEqual(len(r.tags), 10)
        # a client that offers only HTTP/1.1 still gets it
        rc, status, ver, body, err = curl(url, "--http1.1", timeout=1)
        self.assertEqual((status, ver), (200, "1.1"), err)

    def test_quick_mode_vod_with_tls_negotiates_h2(self):
        media = ensure_vod_media()
        name = os.path.basename(media)
        with open(media, "rb") as f:
            data = f.read()
        vorigin = self.start_vod_origin(os.path.dirname(media))
        cache = tempfile.mkdtemp(prefix="flvedge-vodcache-")
        self.addCleanup(shutil.rmtree, cache, True)
        edge = self.start_quick_edge(vorigin.url().rstrip("/"),
                                     extra_args=["--vod", "--cache-dir", cache] + self.tls_args())
        url = "https://localhost:%d/%s" % (edge.port, name)
        rc, status, ver, heads, body, err = curl_headers(url, "--http2")
        self.assertEqual((rc, status, ver, heads.get("x-cache-status")), (0, 200, "2", "MISS"), err)
        self.assertTrue(body == data, "the body differs from the file")
        rc, status, ver, heads, body, err = curl_headers(url, "--http2", "-r", "1000-1999")
        self.assertEqual((rc, status, ver), (0, 206, "2"), err)
        self.assertEqual(body, data[1000:2000])


class H2OffTest(EdgeTestCase):
    def test_tls_http2_false_offers_http11_only_and_h2c_off_by_default(self):
        origin = self.start_origin()
        origin.route("/live/s.flv", Synth())
        edge = self.start_edge({
            "listen": ["127.0.0.1:0", {1: "127.0.0.1:0", "tls": {"cert": cert("local"), "key": key("local"),
                                                                 "http2": False}}],
            "resources": [{"name": "live", "prefix": "/flv/", "type": "live", "origin": origin.url("/live/")}]})
        with socket.create_connection(("127.0.0.1", edge.ports[1]), timeout=10) as s:
            ctx = ssl.create_default_context(cafile=cert("ca"))
            ctx.set_alpn_protocols(["h2", "http/1.1"])
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                self.assertEqual(t.selected_alpn_protocol(), "http/1.1")
        rc, status, ver, body, err = curl("http://127.0.0.1:%d/flv/s.flv" % edge.ports[0],
                                          "--http2-prior-knowledge", timeout=3)
        self.assertNotEqual(ver, "2")

    def test_upgrade_h2c_is_ignored_on_a_listener_without_h2c(self):
        origin = self.start_origin()
        origin.route("/live/s.flv", Synth())
        edge = self.start_edge({
            "listen": ["127.0.0.1:0"],
            "resources": [{"name": "live", "prefix": "/flv/", "type": "live", "origin": origin.url("/live/")}]})
        rc, status, ver, body, err = curl("http://127.0.0.1:%d/flv/s.flv" % edge.ports[0], "--http2", "-v",
                                          timeout=3)
        self.assertIn("Upgrade: h2c", err)  # curl asked
        self.assertNotIn("HTTP/1.1 101", err)
        self.assertEqual((status, ver), (200, "1.1"), err)
        r = FlvReader()
        r.feed(body)
        self.assertGreaterEqual(len(r.tags), 10)


if __name__ == "__main__":
    unittest.main(verbosity=2)
