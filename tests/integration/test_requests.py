"""Bad and excess requests get the right status, and the edge keeps serving afterwards."""

import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (T, EdgeTestCase, HttpConn, Synth, check_join_sequence, live_config,
                        raw_exchange, status_of, wait_until)

METRIC_NAMES = ("flvedge_viewers", "flvedge_streams", "flvedge_origin_connects_total",
                "flvedge_viewer_jumps_total", "flvedge_frames_dropped_total",
                "flvedge_viewers_kicked_total", "flvedge_bytes_sent_total", "flvedge_requests_total")


class RequestTest(EdgeTestCase):
    def setUp(self):
        self.origin = self.start_origin()
        for s in ("s1", "s2", "s3", "s4", "ok"):
            self.origin.route("/live/%s.flv" % s, Synth())
        self.edge = self.start_edge(live_config(
            self.origin.url("/live/"), max_viewers_per_stream=2,
            limits={"request_timeout": 1, "max_header_size": 1024}, top={"status_prefix": "/_flvedge/"}))

    def tearDown(self):
        # Whatever the test did, the edge still serves a stream and its metrics.
        if self.edge.alive():
            v = self.viewer(self.edge, "/flv/ok.flv")
            self.assertEqual(v.status, 200, v.response)
            v.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
            check_join_sequence(v.tags, v.flv.flags)
            v.close()
            self.assertEqual(self.get(self.edge, "/_flvedge/metrics").status, 200)
        else:
            self.fail("flvedge died")

    def test_malformed_request_lines_are_400(self):
        for raw in (b"THIS IS NOT HTTP\r\n\r\n",
                    b"GET /flv/s1.flv HTTP/1.1 extra\r\nHost: x\r\n\r\n",
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
                    b"GET /flv/s1.flv HTTP/1.1\r\nHost x\r\n\r\n"):
            with self.subTest(raw=raw[:30]):
                data, closed = raw_exchange(self.edge.port, raw, T(5))
                self.assertEqual(status_of(data), 400, "response %r" % data[:200])
                self.assertTrue(closed, "connection left open after a 400")

    def test_header_over_max_header_size_is_431(self):
        raw = (b"GET /flv/s1.flv HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n")
        data, closed = raw_exchange(self.edge.port, raw, T(5))
        self.assertEqual(status_of(data), 431, "response %r" % data[:200])
        # Many small headers add up too.
        raw = b"GET /flv/s1.flv HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(
            b"X-H%d: %s\r\n" % (i, b"b" * 40) for i in range(60)) + b"\r\n"
        data, closed = raw_exchange(self.edge.port, raw, T(5))
        self.assertEqual(status_of(data), 431, "response %r" % data[:200])

    def test_header_under_the_limit_is_fine(self):
        v = self.viewer(self.edge, "/flv/s1.flv", headers={"X-Pad": "p" * 600})
        self.assertEqual(v.status, 200, v.response)

    def test_unknown_path_is_404(self):
        for path in ("/nothing/here.flv", "/", "/flvx/s1.flv"):
            with self.subTest(path=path):
                self.assertStatus(self.get(self.edge, path), 404)

    def test_other_methods_are_405(self):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            with self.subTest(method=method):
                body = b"x=1" if method in ("POST", "PUT", "PATCH") else b""
                r = self.get(self.edge, "/flv/s1.flv", method=method, body=body)
                self.assertStatus(r, 405)

    def test_half_a_request_is_closed_after_request_timeout(self):
        c = HttpConn(self.edge.port, raw=b"GET /flv/s1.flv HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        self.addCleanup(c.close)
        t0 = time.monotonic()
        self.assertTrue(c.wait_closed(1 + T(5)), "half a request: connection still open")
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 0.7, "closed after %.2f s; request_timeout is 1 s" % elapsed)
        # A silent connection (not one byte) goes the same way.
        s = socket.create_connection(("127.0.0.1", self.edge.port))
        self.addCleanup(s.close)
        s.settimeout(1 + T(5))
        try:
            while s.recv(4096):
                pass
        except socket.timeout:
            self.fail("a silent connection is still open after request_timeout")
        except ConnectionResetError:
            pass

    def test_request_trickled_within_timeout_is_served(self):
        # The head comes in three pieces 0.6 s apart: 1.2 s of request_timeout's 2 s.
        edge = self.start_edge(live_config(self.origin.url("/live/"),
                                           limits={"request_timeout": 2}))
        c = HttpConn(edge.port, raw=b"GET /flv/s2.flv HTTP/1.1\r\n")
        self.addCleanup(c.close)
        t0 = time.monotonic()
        for piece in (b"Host: 127.0.0.1\r\n", b"\r\n"):
            time.sleep(0.6)  # time passing is what this test is about
            c.send(piece)
        self.assertGreaterEqual(time.monotonic() - t0, 1.2)
        r = c.read_head(T(10))
        self.assertEqual(r.status, 200, r)
        c.read_body_some(T(10))

    def test_max_viewers_per_stream(self):
        a = self.viewer(self.edge, "/flv/s1.flv")
        b = self.viewer(self.edge, "/flv/s1.flv")
        self.assertEqual((a.status, b.status), (200, 200))
        a.read_tags(3)
        b.read_tags(3)
        self.assertStatus(self.get(self.edge, "/flv/s1.flv"), 503)
        # Another stream is not affected.
        c = self.viewer(self.edge, "/flv/s2.flv")
        self.assertEqual(c.status, 200, c.response)
        # A place frees up when a viewer leaves.
        a.close()

        def third_gets_in():
            v = self.viewer(self.edge, "/flv/s1.flv")
            if v.status == 200:
                return v
            v.conn.read_body_all(T(5))
            v.close()
            return None
        v = wait_until(third_gets_in, T(10), "a free place on s1 after a viewer left")
        v.read_tags(3)

    def test_metrics_endpoint(self):
        r = self.get(self.edge, "/_flvedge/metrics")
        self.assertStatus(r, 200)
        self.assertIn("text/plain", r.header("Content-Type") or "")
        text = r.body.decode()
        for name in METRIC_NAMES:
            self.assertRegex(text, r"(?m)^%s(\{[^}]*\})? [0-9.eE+-]+$" % name, "metric %s" % name)
        before = self.edge.metric("flvedge_requests_total")
        v = self.viewer(self.edge, "/flv/s3.flv")
        v.read_tags(20)
        m = self.edge.metrics()
        self.assertEqual(m["flvedge_viewers"], 1)
        self.assertEqual(m["flvedge_streams"], 1)
        self.assertGreaterEqual(m["flvedge_origin_connects_total"], 1)
        self.assertGreater(m["flvedge_requests_total"], before)
        self.assertGreater(m["flvedge_bytes_sent_total"], 0)


class GlobalLimitTest(EdgeTestCase):
    def test_max_viewers_across_streams(self):
        origin = self.start_origin()
        for s in ("a", "b", "c", "d"):
            origin.route("/live/%s.flv" % s, Synth())
        edge = self.start_edge(live_config(origin.url("/live/"), limits={"max_viewers": 3},
                                           top={"status_prefix": "/_flvedge/"}))
        vs = [self.viewer(edge, "/flv/%s.flv" % s) for s in ("a", "b", "c")]
        for v in vs:
            self.assertEqual(v.status, 200, v.response)
            v.read_tags(3)
        self.assertStatus(self.get(edge, "/flv/d.flv"), 503)
        self.assertStatus(self.get(edge, "/flv/a.flv"), 503)
        vs[0].close()

        def gets_in():
            v = self.viewer(edge, "/flv/d.flv")
            if v.status == 200:
                return v
            v.conn.read_body_all(T(5))
            v.close()
            return None
        v = wait_until(gets_in, T(10), "a free place after a viewer left")
        v.read_tags(3)
        # Non-viewer requests are not viewers.
        self.assertStatus(self.get(edge, "/_flvedge/metrics"), 200)

    def test_max_connections(self):
        origin = self.start_origin()
        origin.route("/live/a.flv", Synth())
        edge = self.start_edge(live_config(origin.url("/live/"),
                                           limits={"max_connections": 4, "request_timeout": 30},
                                           top={"status_prefix": "/_flvedge/"}))
        # Four viewers that got their answer: each loop has accepted and counted its own.
        held = [self.viewer(edge, "/flv/a.flv") for _ in range(4)]
        self.assertEqual([v.status for v in held], [200] * 4)
        # A fifth is turned away: accepted and closed.
        def fifth_closed():
            s = socket.create_connection(("127.0.0.1", edge.port))
            got = b""
            try:
                s.settimeout(1.0)
                s.sendall(b"GET /flv/a.flv HTTP/1.1\r\nHost: x\r\n\r\n")
                while b"\r\n\r\n" not in got:
                    d = s.recv(65536)
                    if not d:
                        break
                    got += d
            except (ConnectionResetError, BrokenPipeError):
                pass
            except socket.timeout:
                return None  # still open: not turned away (yet)
            finally:
                s.close()
            self.assertNotEqual(status_of(got), 200, "served beyond max_connections")
            return True
        wait_until(fifth_closed, T(10), "a connection beyond max_connections to be closed")
        for v in held:
            v.close()

        def served():
            try:
                return self.get(edge, "/_flvedge/metrics", timeout=2).status == 200
            except (AssertionError, OSError):
                return False
        wait_until(served, T(10), "service after the held connections closed")


if __name__ == "__main__":
    unittest.main()
