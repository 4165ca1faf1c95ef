"""
The access log (docs/configuration.md): one line per answer in the combined-like format, every
string field escaped as nginx's escape=default does, and requests that failed to parse logged too.
"""

import errno
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (T, EdgeTestCase, HttpConn, Synth, live_config, media_span_ms, raw_exchange,
                        status_of, wait_until)
from fe_mmdb import write_country_db

# client - - [time] "request" status bytes "referer" "user-agent" duration cache resource extra
LINE = re.compile(r'^(\S+) - - \[([^\]]+)\] "((?:[^"\\]|\\x[0-9A-F]{2})*)" (\d{3}) (\d+) '
                  r'"((?:[^"\\]|\\x[0-9A-F]{2})*)" "((?:[^"\\]|\\x[0-9A-F]{2})*)" '
                  r'(\d+\.\d{3}) (\S+) (\S+)((?: [a-z]+="(?:[^"\\]|\\x[0-9A-F]{2})*")*)$')

ECHO_LOG = r'''
return {
  log = function(req, res) return { ua = req.headers.user_agent } end,
}
'''


class AccessLogTest(EdgeTestCase):
    def setUp(self):
        self.edge = self.start_edge({
            "access_log": "access.log",
            "access_log_format": "combined",
            "limits": {"max_header_size": 1024},
            "resources": [{"name": "pub", "prefix": "/", "type": "static", "root": "pub",
                           "policy": "log.lua"}],
        }, files={"pub/index.html": "public\n", "log.lua": ECHO_LOG})
        self.path = os.path.join(self.edge.dir, "access.log")

    def lines(self):
        try:
            with open(self.path, "rb") as f:
                return f.read().split(b"\n")[:-1]
        except OSError:
            return []

    def logged(self, n):
        """The first n lines, once there are n; each must be printable ASCII in the format."""
        wait_until(lambda: len(self.lines()) >= n, T(10), "%d access-log lines" % n)
        out = []
        for raw in self.lines()[:n]:
            self.assertTrue(all(0x20 <= b < 0x7F for b in raw), "raw bytes in the log: %r" % raw)
            ln = raw.decode("ascii")
            m = LINE.match(ln)
            self.assertIsNotNone(m, "a line out of format: %r" % ln)
            out.append(m)
        return out

    def test_quotes_backslashes_and_raw_bytes_are_escaped(self):
        ua = 'evil" 200 1 "-" "forged\\ \tcaf\xe9'.encode("latin-1") + b"\xc3\xa9"
        raw = (b"GET /?q=%22x%22 HTTP/1.1\r\nHost: a.example\r\nUser-Agent: " + ua +
               b"\r\nReferer: http://r.example/\x80\r\nConnection: close\r\n\r\n")
        data, _ = raw_exchange(self.edge.port, raw, T(5))
        self.assertEqual(status_of(data), 200, data[:300])
        m = self.logged(1)[0]
        self.assertEqual(m.group(3), "GET /?q=%22x%22 HTTP/1.1")
        self.assertEqual(m.group(4), "200")
        self.assertEqual(m.group(6), r"http://r.example/\x80")
        want = r"evil\x22 200 1 \x22-\x22 \x22forged\x5C \x09caf\xE9\xC3\xA9"
        self.assertEqual(m.group(7), want)
        self.assertEqual(m.group(10), "pub")
        # The policy's own field is escaped the same way.
        self.assertEqual(m.group(11), ' ua="%s"' % want)

    def test_requests_that_fail_to_parse_are_logged(self):
        cases = [(b"THIS IS NOT HTTP\r\n\r\n", 400, "-"),
                 (b"GET /a HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, "GET /a HTTP/1.1"),
                 (b"GET /b HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n", 431, "GET /b HTTP/1.1"),
                 (b"GET /c HTTP/2.0\r\nHost: x\r\n\r\n", 505, "GET /c HTTP/2.0"),
                 (b"GET /d HTTP/1.2\r\nHost: x\r\n\r\n", 505, "GET /d HTTP/1.2"),
                 (b"GET /e\x01 HTTP/1.1\r\n\r\n", 400, "GET - -")]
        for raw, status, _ in cases:
            data, closed = raw_exchange(self.edge.port, raw, T(5))
            self.assertEqual(status_of(data), status, data[:300])
            self.assertTrue(closed)
        # Each loop hands its own lines to the writer: across loops, lines keep no order.
        got = sorted((int(m.group(4)), m.group(3)) for m in self.logged(len(cases)))
        self.assertEqual(got, sorted((status, request) for _, status, request in cases))
        # And the edge goes on logging answers.
        c = HttpConn(self.edge.port, "/", headers={"Connection": "close"})
        self.addCleanup(c.close)
        self.assertEqual(c.read_head(T(5)).status, 200)
        self.assertIn(200, [int(m.group(4)) for m in self.logged(len(cases) + 1)])


JSON_KEYS = {"time", "request_id", "client", "client_port", "method", "uri", "protocol", "host", "status",
             "bytes", "duration", "first_byte", "referer", "user_agent", "cache_status", "resource",
             "stream", "origin", "origin_status", "country", "tls_version", "tls_cipher", "fields"}

FORGE_LOG = r'''
return {
  log = function(req, res)
    return { ua = req.headers.user_agent, nl = 'a\n{"status":1}\r"\\\1' }
  end,
}
'''


def read_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().split(b"\n")[:-1]
    except OSError:
        return []


class JsonAccessLogTest(EdgeTestCase):
    """The default format: one JSON object per line."""

    def start(self, **top):
        self.origin = self.start_origin()
        self.origin.route("/live/a.flv", Synth())
        cfg = live_config(self.origin.url("/live/"), top=dict({"access_log": "access.log"}, **top),
                          extra_resources=[{"name": "pub", "prefix": "/pub/", "type": "static",
                                            "root": "pub", "policy": "log.lua"}])
        self.edge = self.start_edge(cfg, files={"pub/index.html": "public\n", "log.lua": FORGE_LOG})
        self.path = os.path.join(self.edge.dir, "access.log")

    def records(self, n, path=None):
        """Every line once there are n, each parsed as JSON with exactly the documented keys."""
        path = path or self.path
        wait_until(lambda: len(read_lines(path)) >= n, T(10), "%d access-log lines in %s" % (n, path))
        out = []
        for raw in read_lines(path):
            rec = json.loads(raw.decode("utf-8"))
            self.assertEqual(set(rec), JSON_KEYS, raw)
            out.append(rec)
        return out

    def test_a_live_viewer_is_logged_when_it_leaves(self):
        self.start()
        v = self.viewer(self.edge, "/flv/a.flv", headers={"Referer": "http://page.example/"})
        port = v.conn.sock.getsockname()[1]
        v.read_media_ms(600)
        self.assertEqual(read_lines(self.path), [], "nothing is logged while the viewer watches")
        v.close()
        rec = [r for r in self.records(1) if r["uri"] == "/flv/a.flv"][0]
        self.assertEqual((rec["status"], rec["method"], rec["protocol"]), (200, "GET", "HTTP/1.1"))
        self.assertEqual((rec["resource"], rec["stream"], rec["cache_status"]), ("live", "a", "MISS"))
        self.assertEqual((rec["origin"], rec["origin_status"]), (self.origin.url("/live/a.flv"), 200))
        self.assertEqual((rec["client"], rec["client_port"]), ("127.0.0.1", port))
        self.assertEqual(rec["referer"], "http://page.example/")
        self.assertGreater(rec["bytes"], 10000)
        self.assertGreaterEqual(rec["duration"], 0.5)
        self.assertTrue(0 <= rec["first_byte"] < rec["duration"], rec)
        self.assertEqual((rec["tls_version"], rec["tls_cipher"]), ("", ""))
        self.assertRegex(rec["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_quotes_and_control_bytes_cannot_break_a_line_or_forge_a_field(self):
        self.start()
        ua = b'evil", "status": 999, "x": "\\ \tcaf\xe9' + b"\xc3\xa9" + b'"}'
        raw = (b"GET /pub/index.html?q=%22x%22 HTTP/1.1\r\nHost: a.example\r\nUser-Agent: " + ua +
               b'\r\nReferer: "},{"forged":1\r\nConnection: close\r\n\r\n')
        data, _ = raw_exchange(self.edge.port, raw, T(5))
        self.assertEqual(status_of(data), 200, data[:300])
        (rec,) = self.records(1)
        self.assertEqual(len(read_lines(self.path)), 1, "one request, one line")
        self.assertEqual(rec["status"], 200)
        want_ua = 'evil", "status": 999, "x": "\\ \tcaf\ufffd\u00e9"}'
        self.assertEqual(rec["user_agent"], want_ua)
        self.assertEqual(rec["referer"], '"},{"forged":1')
        self.assertEqual(rec["uri"], "/pub/index.html?q=%22x%22")
        # The log hook's fields: its own escaping undone, then escaped as JSON; a newline in one
        # stays inside its string.
        self.assertEqual(rec["fields"], {"ua": want_ua, "nl": 'a\n{"status":1}\r"\\\x01'})
        self.assertEqual(rec["resource"], "pub")

    def test_sigusr1_reopens_the_file_after_a_rename(self):
        self.start()
        self.assertStatus(self.get(self.edge, "/pub/index.html?one"), 200)
        self.records(1)
        rotated = self.path + ".1"
        os.rename(self.path, rotated)
        self.assertStatus(self.get(self.edge, "/pub/index.html?two"), 200)
        # Until SIGUSR1 the writer still writes the file it has open: the renamed one.
        self.assertEqual([r["uri"] for r in self.records(2, rotated)],
                         ["/pub/index.html?one", "/pub/index.html?two"])
        self.assertFalse(os.path.exists(self.path))
        self.edge.send_signal(signal.SIGUSR1)
        self.edge.wait_log("SIGUSR1: reopening the access log")
        self.assertStatus(self.get(self.edge, "/pub/index.html?three"), 200)
        self.assertEqual([r["uri"] for r in self.records(1)], ["/pub/index.html?three"])
        self.assertEqual(len(read_lines(rotated)), 2)

    def test_a_blocked_log_device_never_stalls_viewers(self):
        # A FIFO nobody reads: opening it for writing blocks forever, like a dead NFS mount.
        d = tempfile.mkdtemp(prefix="flvedge-fifo-")
        fifo = os.path.join(d, "access.fifo")
        os.mkfifo(fifo)
        self.start(access_log=fifo, access_log_buffer=65536)
        viewers = [self.viewer(self.edge, "/flv/a.flv") for _ in range(2)]
        for v in viewers:
            v.read_media_ms(300)
        # About 300 bytes a line: 2000 requests overflow a 64 KiB queue many times.
        s = socket.create_connection(("127.0.0.1", self.edge.port), timeout=T(10))
        self.addCleanup(s.close)
        batch = b"GET /nothing HTTP/1.1\r\nHost: x\r\nUser-Agent: load\r\n\r\n" * 100
        t0 = time.monotonic()
        for _ in range(20):
            s.sendall(batch)
            got = b""
            while got.count(b"HTTP/1.1 404") < 100:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "the edge closed the connection")
                got += chunk
        answered = time.monotonic() - t0
        self.assertLess(answered, T(10), "2000 requests answered while the log is blocked")
        wait_until(lambda: self.edge.metric("flvedge_access_log_dropped_total") > 1000, T(10),
                   "lines counted as dropped")
        # The viewers kept playing in real time all along: 2 s more of media arrives in about 2 s.
        for v in viewers:
            start = media_span_ms(v.tags)
            t1 = time.monotonic()
            v.read_until(lambda v: media_span_ms(v.tags) >= start + 2000, T(6), "2 s more media")
            self.assertLess(time.monotonic() - t1, T(4))
        m = self.edge.metrics()
        self.assertGreaterEqual(m["flvedge_access_log_lines_total"], 2000)
        self.assertEqual(m["flvedge_viewers"], 2)

    def test_country_comes_from_the_geoip_db(self):
        geo = os.path.join(tempfile.mkdtemp(prefix="flvedge-geo-"), "geo.mmdb")
        self.addCleanup(shutil.rmtree, os.path.dirname(geo), True)
        write_country_db(geo, {"127.0.0.2/32": "DE", "127.0.0.3/32": "FR"})
        self.start(geoip_db=geo)
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.1"):
            self.assertStatus(self.get(self.edge, "/pub/index.html?" + source, source=source), 200)
        v = self.viewer(self.edge, "/flv/a.flv", source="127.0.0.2")
        v.read_media_ms(200)
        v.close()
        got = {r["uri"]: (r["client"], r["country"]) for r in self.records(4)}
        self.assertEqual(got, {"/pub/index.html?127.0.0.2": ("127.0.0.2", "DE"),
                               "/pub/index.html?127.0.0.3": ("127.0.0.3", "FR"),
                               "/pub/index.html?127.0.0.1": ("127.0.0.1", ""),   # not in the db
                               "/flv/a.flv": ("127.0.0.2", "DE")})

    @unittest.skipUnless(shutil.which("openssl"), "openssl not installed")
    def test_tls_version_and_cipher_over_https(self):
        d = tempfile.mkdtemp(prefix="flvedge-alog-tls-")
        self.addCleanup(shutil.rmtree, d, True)
        crt, key = os.path.join(d, "site.crt"), os.path.join(d, "site.key")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
                            "-days", "2", "-subj", "/CN=localhost", "-addext",
                            "subjectAltName=DNS:localhost"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.start(listen=["127.0.0.1:0", {1: "127.0.0.1:0", "tls": {"cert": crt, "key": key}}])
        plain, tls = self.edge.ports
        self.assertStatus(self.get(self.edge, "/pub/index.html?plain"), 200)
        ctx = ssl.create_default_context(cafile=crt)
        ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")   # the suite the log must name
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", tls), timeout=T(10)) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                self.assertEqual(t.cipher()[0], "ECDHE-ECDSA-AES128-GCM-SHA256")
                t.sendall(b"GET /pub/index.html?tls HTTP/1.1\r\nHost: localhost\r\n"
                          b"Connection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = t.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        self.assertEqual(status_of(data), 200, data[:200])
        got = {r["uri"]: (r["tls_version"], r["tls_cipher"]) for r in self.records(2)}
        self.assertEqual(got, {"/pub/index.html?plain": ("", ""),
                               "/pub/index.html?tls": ("TLSv1.2",
                                                       "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256")})

    def test_a_full_disk_counts_dropped_lines_and_never_stalls_viewers(self):
        # /dev/full: every write fails with ENOSPC, as on a full disk.
        try:
            with open("/dev/full", "w") as f:
                f.write("x")
                f.flush()
            raise unittest.SkipTest("/dev/full accepted a write: no ENOSPC device here")
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise unittest.SkipTest("/dev/full is not usable here: %s" % e)
        self.start(access_log="/dev/full")
        viewers = [self.viewer(self.edge, "/flv/a.flv") for _ in range(2)]
        for v in viewers:
            v.read_media_ms(300)
        s = socket.create_connection(("127.0.0.1", self.edge.port), timeout=T(10))
        self.addCleanup(s.close)
        s.sendall(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n" * 300)
        got = b""
        while got.count(b"HTTP/1.1 404") < 300:
            chunk = s.recv(65536)
            self.assertTrue(chunk, "the edge closed the connection")
            got += chunk
        # every one of those lines is lost, and counted: none was written
        wait_until(lambda: self.edge.metric("flvedge_access_log_dropped_total") >= 300, T(10),
                   "the lines the full disk took counted as dropped")
        self.edge.wait_log(r'access_log "/dev/full": cannot write: No space left on device')
        self.assertEqual(len(self.edge.log_lines("cannot write")), 1, "logged once, not per chunk")
        for v in viewers:
            start = media_span_ms(v.tags)
            t1 = time.monotonic()
            v.read_until(lambda v: media_span_ms(v.tags) >= start + 1000, T(6), "1 s more media")
            self.assertLess(time.monotonic() - t1, T(3))
        m = self.edge.metrics()
        self.assertEqual(m["flvedge_viewers"], 2)
        # the scrapes' own lines are lost too: dropped never exceeds what was logged
        self.assertLessEqual(m["flvedge_access_log_dropped_total"], m["flvedge_access_log_lines_total"])


if __name__ == "__main__":
    unittest.main()
