"""
Bounded resources: no client and no origin takes more than a bounded share of the edge's memory
or holds a connection past its timeouts. Memory is the edge's RSS from /proc (Edge.rss_kb()),
sampled while the attack runs.
"""

import os
import socket
import sys
import threading
import time
import unittest
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (SANITIZED, T, EdgeTestCase, HttpConn, Synth, http_request, live_config,
                        wait_until)

MB = 1 << 20
RSS_BOUND_KB = 64 * 1024
# ASan's quarantine keeps freed memory (256 MB by default): RSS would measure it.
EDGE_ENV = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=16")
            .lstrip(":")} if SANITIZED else None


class RssWatch:
    """The edge's RSS growth over a baseline, sampled in a thread until stopped."""

    def __init__(self, edge, interval=0.05):
        self.edge = edge
        self.base = edge.rss_kb()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.edge.rss_kb())
            except (OSError, AssertionError):
                return
            self._stop.wait(interval)

    def growth_kb(self):
        return self.peak - self.base

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        return self.growth_kb()


class ResponseReader:
    """Reads pipelined HTTP/1.1 responses with a Content-Length from one socket, in order."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _more(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no more response bytes before the deadline")
        self.sock.settimeout(left)
        d = self.sock.recv(1 << 20)
        if not d:
            raise AssertionError("the edge closed the connection (%d bytes unread)" % len(self.buf))
        self.buf += d

    def read(self, timeout):
        """-> (status, body length, crc32 of the body)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._more(deadline)
        i = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:i]).decode("latin-1").split("\r\n")
        del self.buf[:i + 4]
        status = int(head[0].split(" ")[1])
        length = 0
        for line in head[1:]:
            k, v = line.split(":", 1)
            if k.strip().lower() == "content-length":
                length = int(v)
        crc, left = 0, length
        while left:
            if not self.buf:
                self._more(deadline)
            n = min(left, len(self.buf))
            crc = zlib.crc32(self.buf[:n], crc)
            del self.buf[:n]
            left -= n
        return status, length, crc


# ---------------------------------------------------------------------------------------------
# 1. Pipelined requests: one at a time, the next read only once the answer has left
# ---------------------------------------------------------------------------------------------

class PipelineTest(EdgeTestCase):
    def test_pipelined_static_files_are_answered_one_at_a_time(self):
        a = b"0123456789abcdef" * (20 * MB // 16)
        b = b"fedcba9876543210" * (20 * MB // 16)
        edge = self.start_edge({"limits": {"request_timeout": 30},
                                "resources": [{"name": "www", "prefix": "/s/", "type": "static",
                                               "root": "www"}]},
                               files={"www/a.bin": a, "www/b.bin": b}, env=EDGE_ENV)
        crcs = {"a": zlib.crc32(a), "b": zlib.crc32(b)}
        del a, b
        names = ["a" if i % 2 == 0 else "b" for i in range(40)]
        s = socket.create_connection(("127.0.0.1", edge.port))
        self.addCleanup(s.close)
        watch = RssWatch(edge)
        s.sendall(b"".join(b"GET /s/%s.bin HTTP/1.1\r\nHost: x\r\n\r\n" % n.encode() for n in names))
        time.sleep(2)  # 40 x 20 MB asked for, nothing read yet
        held = watch.growth_kb()
        self.assertLess(held, RSS_BOUND_KB, "40 pipelined 20 MB GETs not read: RSS +%d KB" % held)
        reader = ResponseReader(s)
        for i, name in enumerate(names):
            status, length, crc = reader.read(T(30))
            self.assertEqual((status, length), (200, 20 * MB), "response %d" % i)
            self.assertEqual(crc, crcs[name], "response %d is not %s.bin: out of order" % (i, name))
        growth = watch.stop()
        print("pipelined static: RSS +%d KB unread, +%d KB peak" % (held, growth), file=sys.stderr)
        self.assertLess(growth, RSS_BOUND_KB, "RSS +%d KB while answering" % growth)

    def test_a_client_that_ends_its_side_after_its_requests_gets_every_answer(self):
        """shutdown(SHUT_WR) after two pipelined GETs, the first answer (20 MB) longer than the
        socket takes at once: both answers come whole, then the connection closes."""
        a = b"0123456789abcdef" * (20 * MB // 16)
        edge = self.start_edge({"resources": [{"name": "www", "prefix": "/s/", "type": "static",
                                               "root": "www"}]},
                               files={"www/a.bin": a, "www/small.txt": b"small\n"}, env=EDGE_ENV)
        s = socket.create_connection(("127.0.0.1", edge.port))
        self.addCleanup(s.close)
        s.sendall(b"GET /s/a.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /s/small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        reader = ResponseReader(s)
        self.assertEqual(reader.read(T(30)), (200, 20 * MB, zlib.crc32(a)))
        self.assertEqual(reader.read(T(10)), (200, 6, zlib.crc32(b"small\n")))
        s.settimeout(T(10))
        self.assertEqual(s.recv(1), b"", "the connection closes after the last answer")

    def test_pipelined_metrics_requests_for_five_seconds(self):
        edge = self.start_edge(live_config("http://127.0.0.1:9/live/", limits={"request_timeout": 1},
                                           top={"status_prefix": "/_flvedge/"}), env=EDGE_ENV)
        req = b"GET /_flvedge/metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        batch = req * 2000
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.connect(("127.0.0.1", edge.port))
        s.setblocking(False)
        watch = RssWatch(edge)
        sent = 0
        end = time.monotonic() + 5
        while time.monotonic() < end and watch.growth_kb() < 4 * RSS_BOUND_KB:
            try:
                sent += s.send(batch[sent % len(req):])
            except BlockingIOError:
                time.sleep(0.005)
        # Past the request timeout the edge holds no more than during the attack.
        time.sleep(1.5)
        held = watch.growth_kb()
        self.assertLess(held, RSS_BOUND_KB, "5 s of pipelined metrics requests: RSS +%d KB" % held)
        # Finish the last request, then every one is answered, in order.
        s.setblocking(True)
        rest = (-sent) % len(req)
        t = threading.Thread(target=s.sendall, args=(req[len(req) - rest:],), daemon=True)
        t.start()
        reader = ResponseReader(s)
        n = (sent + rest) // len(req)
        for i in range(n):
            status, length, _ = reader.read(T(30))
            self.assertEqual(status, 200, "response %d of %d" % (i, n))
            self.assertGreater(length, 100)
        t.join(T(10))
        growth = watch.stop()
        print("pipelined metrics: %d requests, RSS +%d KB peak" % (n, growth), file=sys.stderr)
        self.assertLess(growth, RSS_BOUND_KB)
        self.assertGreater(n, 1000, "the edge hardly read anything")

    def test_a_stream_pipelined_after_an_answer_plays(self):
        origin = self.start_origin()
        origin.route("/live/p.flv", Synth())
        edge = self.start_edge(live_config(origin.url("/live/"), top={"status_prefix": "/_flvedge/"}))
        c = HttpConn(edge.port, raw=b"GET /_flvedge/metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                                    b"GET /flv/p.flv HTTP/1.1\r\nHost: x\r\n\r\n")
        self.addCleanup(c.close)
        r = c.read_head(T(10))
        self.assertEqual(r.status, 200, r)
        self.assertIn(b"flvedge_viewers", c.read_body_all(T(10)))
        c.response, c.framing, c.body_done = None, None, False
        r = c.read_head(T(10))
        self.assertEqual((r.status, r.header("Content-Type")), (200, "video/x-flv"), r)
        self.assertTrue(c.read_body_some(T(10)).startswith(b"FLV"))


# ---------------------------------------------------------------------------------------------
# 3. Timeouts: request_timeout for a request head, send_timeout for an answer that stopped moving
# ---------------------------------------------------------------------------------------------

class SendTimeoutTest(EdgeTestCase):
    SIZE = 20 * MB

    def _edge(self, limits):
        return self.start_edge({"limits": limits,
                                "resources": [{"name": "www", "prefix": "/s/", "type": "static",
                                               "root": "www"}]},
                               files={"www/big.bin": b"x" * self.SIZE})

    def test_a_slow_steady_reader_gets_the_whole_file(self):
        edge = self._edge({"request_timeout": 1, "send_timeout": 2})
        c = HttpConn(edge.port, "/s/big.bin", rcvbuf=65536)
        self.addCleanup(c.close)
        self.assertEqual(c.read_head(T(10)).status, 200)
        rate = 4 * MB  # bytes per second: 5 s for the file, far past request_timeout
        got, t0 = 0, time.monotonic()
        while True:
            data = c.read_body_some(T(10), max_recv=65536)
            if not data:
                break
            got += len(data)
            ahead = got / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        elapsed = time.monotonic() - t0
        self.assertEqual(got, self.SIZE, "cut after %.1f s at %d bytes" % (elapsed, got))
        self.assertTrue(c.clean_end)
        self.assertGreater(elapsed, 3, "not a slow reader: %.1f s" % elapsed)

    def test_a_reader_that_stops_is_cut_after_send_timeout(self):
        edge = self._edge({"request_timeout": 30, "send_timeout": 1})
        c = HttpConn(edge.port, "/s/big.bin", rcvbuf=65536)
        self.addCleanup(c.close)
        self.assertEqual(c.read_head(T(10)).status, 200)
        got = 0
        while got < MB:
            got += len(c.read_body_some(T(10)))
        # Stopped reading: the edge's writes stop moving once the socket buffers are full.
        t0 = time.monotonic()
        wait_until(lambda: edge.metric("flvedge_connections") <= 1, 1 + T(5),
                   "the stuck reader to be cut after send_timeout (1 s)")
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 0.7, "cut %.2f s after it stopped reading" % elapsed)
        self.assertTrue(c.wait_closed(T(5)), "the connection is still open")


# ---------------------------------------------------------------------------------------------
# 2. Streams of file: origins: a file loaded once, streams and window memory limited
# ---------------------------------------------------------------------------------------------

class FileStreamsTest(EdgeTestCase):
    @classmethod
    def setUpClass(cls):
        # 10 minutes of a small stream: 4 MB.
        cls.flv = Synth(duration_ms=600_000, vsize=100, ksize=1000, asize=60).to_bytes()

    def _edge(self, limits=None, **resource):
        res = {"name": "f", "prefix": "/flv/", "type": "live", "origin": "file:one.flv"}
        res.update(resource)
        return self.start_edge({"limits": limits or {}, "resources": [res]},
                               files={"one.flv": self.flv}, env=EDGE_ENV)

    def _head(self, edge, name):
        return http_request(edge.port, "HEAD", "/flv/%s.flv" % name, timeout=T(10))

    def test_a_thousand_stream_names_share_one_file(self):
        # A copy per name would be 4 GB. Under ASan the thousand streams' small allocations carry
        # redzones and shadow: a looser bound, still a thirtieth of a copy per name.
        bound = RSS_BOUND_KB * (2 if SANITIZED else 1)
        edge = self._edge()
        watch = RssWatch(edge)
        for i in range(1000):
            r = self._head(edge, "n%d" % i)
            self.assertEqual(r.status, 200, "stream %d: %d %r" % (i, r.status, r.body))
            if watch.growth_kb() > 4 * bound:
                break
        time.sleep(3)  # the streams linger, their windows filling
        growth = watch.stop()
        m = edge.metrics()
        print("1000 names of one %d KB file: RSS +%d KB, windows %d KB, %d streams"
              % (len(self.flv) // 1024, growth, m["flvedge_window_bytes"] // 1024,
                 m["flvedge_streams"]), file=sys.stderr)
        self.assertLess(growth, bound, "1000 names of one %d KB file: RSS +%d KB"
                        % (len(self.flv) // 1024, growth))
        self.assertEqual(m["flvedge_streams"], 1000)

    def test_max_streams_refuses_the_next_stream_with_503(self):
        edge = self._edge({"max_streams": 5}, linger=2)
        for i in range(5):
            self.assertEqual(self._head(edge, "m%d" % i).status, 200, "stream %d" % i)
        r = self._head(edge, "m5")
        self.assertStatus(r, 503)
        self.assertTrue(r.header("Retry-After"), r.headers)
        self.assertEqual(edge.metric("flvedge_streams_refused_total"), 1)
        # A running stream is not a new one: its viewers get in, on either loop.
        for _ in range(4):
            v = self.viewer(edge, "/flv/m0.flv")
            self.assertEqual(v.status, 200, v.response)
            v.read_tags(3)
            v.close()
        self.assertEqual(edge.metric("flvedge_streams_refused_total"), 1)
        # Once the lingering streams are gone there is room again.
        wait_until(lambda: self._head(edge, "m5").status == 200, 2 + T(10),
                   "room for a new stream after the others' linger")

    def test_max_window_memory_refuses_new_streams_with_503(self):
        edge = self._edge({"max_window_memory": MB})
        statuses = [self._head(edge, "w%d" % i).status for i in range(40)]
        admitted = statuses.count(200)
        # A stream's window holds a 64 KiB block at least: some 16 streams fill 1 MiB.
        self.assertEqual(statuses, [200] * admitted + [503] * (40 - admitted), statuses)
        self.assertGreaterEqual(admitted, 4)
        self.assertLessEqual(admitted, 17)
        m = edge.metrics()
        self.assertEqual(m["flvedge_streams_refused_total"], 40 - admitted)
        self.assertEqual(m["flvedge_streams"], admitted)
        self.assertGreaterEqual(m["flvedge_window_bytes"], MB)


# ---------------------------------------------------------------------------------------------
# 4. An origin's error answer: its body capped at 64 KiB and awaited for origin_read_timeout
# ---------------------------------------------------------------------------------------------

def endless_page(chunk, every_ms=None):
    """An error page that never ends: chunk after chunk, at once or every every_ms."""
    def gen():
        i = 0
        while True:
            yield (i * every_ms if every_ms else None), chunk
            i += 1
    return gen


class OriginErrorBodyTest(EdgeTestCase):
    def setUp(self):
        self.origin = self.start_origin()
        self.edge = self.start_edge(live_config(self.origin.url("/live/"), origin_read_timeout=2))

    def test_an_endless_error_body_is_cut_at_64_kib(self):
        page = b"origin busy, come back later\n"
        self.origin.route("/live/busy.flv", endless_page(page), status=503, pace="fast",
                          content_type="text/plain")
        t0 = time.monotonic()
        r = self.get(self.edge, "/flv/busy.flv", timeout=T(10))
        elapsed = time.monotonic() - t0
        self.assertStatus(r, 503)
        self.assertEqual(r.body, (page * (65536 // len(page) + 1))[:65536])
        self.assertLess(elapsed, T(1.5), "answered %.1f s later: not when 64 KiB were in" % elapsed)
        wait_until(lambda: self.origin.active("/live/busy.flv") == 0, T(5),
                   "the edge to close the origin's endless answer")

    def test_a_trickling_error_body_is_answered_at_the_read_timeout(self):
        self.origin.route("/live/slow.flv", endless_page(b"x" * 100, every_ms=200), status=503,
                          content_type="text/plain")
        t0 = time.monotonic()
        r = self.get(self.edge, "/flv/slow.flv", timeout=T(10))
        elapsed = time.monotonic() - t0
        self.assertStatus(r, 503)
        self.assertGreater(elapsed, 1.7, "answered before origin_read_timeout (2 s)")
        self.assertLess(elapsed, 2 + T(1.5), "answered %.1f s later; origin_read_timeout is 2 s"
                        % elapsed)
        self.assertTrue(0 < len(r.body) < 65536 and r.body == b"x" * len(r.body), r.body[:100])
        self.assertEqual(r.header("Content-Type"), "text/plain")


if __name__ == "__main__":
    unittest.main()
