"""
The admin listener (admin = { listen, token }): its own address, a Bearer token on every request,
GET /metrics and /health, the POST endpoints' bodies (bounded, strict JSON), a token changed by a
reload, admin paths absent from the public listener, and the config checks.
"""

import http.client
import json
import os
import re
import signal
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (ADMIN_TOKEN, BIN, SRC, WORKERS, T, EdgeTestCase, HttpConn, Synth, admin_request,
                        live_config, run, to_lua, wait_until)

TOKEN = "tok-0123456789abcdef"
ADMIN_RE = re.compile(r"flvedge: admin API on http://127\.0\.0\.1:(\d+)")


def config(token=TOKEN, admin_listen="127.0.0.1:0"):
    return {
        "log_level": "info",
        "admin": {"listen": admin_listen, "token": token},
        "resources": [{"name": "live", "prefix": "/flv/", "type": "live",
                       "origin": "http://127.0.0.1:1/live/"}],
    }


class AdminTest(EdgeTestCase):
    def start(self, **kw):
        edge = self.start_edge(config(**kw))
        m = ADMIN_RE.findall(edge.stderr_text())
        self.assertEqual(len(m), 1, edge.stderr_tail())
        self.admin_port = int(m[0])
        self.assertNotIn(self.admin_port, edge.ports)
        return edge

    def conn(self):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=T(10))
        self.addCleanup(c.close)
        return c

    def ask(self, method, path, token=TOKEN, body=None, conn=None, headers=None):
        c = conn or self.conn()
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return r, data

    def ask_json(self, *a, **kw):
        r, data = self.ask(*a, **kw)
        self.assertEqual(r.getheader("Content-Type"), "application/json", data)
        return r, json.loads(data)

    # -- auth --------------------------------------------------------------------------------

    def test_no_token_and_wrong_token_are_401(self):
        self.start()
        for path in ("/metrics", "/health", "/vod/purge", "/nowhere"):
            r, body = self.ask_json("GET", path, token=None)
            self.assertEqual(r.status, 401, path)
            self.assertTrue(r.getheader("WWW-Authenticate", "").startswith("Bearer"))
            self.assertEqual(body, {"error": "authorization required"})
        for bad in ("tok-0123456789abcdeX", "tok-0123456789abcde", TOKEN + "x", ""):
            r, body = self.ask_json("GET", "/health", token=bad)
            self.assertEqual(r.status, 401, bad)
            self.assertIn('error="invalid_token"', r.getheader("WWW-Authenticate"))
        r, _ = self.ask("GET", "/health", token=None, headers={"Authorization": "Basic " + TOKEN})
        self.assertEqual(r.status, 401)
        # The scheme is case-insensitive (RFC 9110 11.1); the token is not.
        r, _ = self.ask("GET", "/health", token=None, headers={"Authorization": "bearer " + TOKEN})
        self.assertEqual(r.status, 200)
        r, _ = self.ask("GET", "/health", token=TOKEN.upper())
        self.assertEqual(r.status, 401)

    # -- built-in endpoints --------------------------------------------------------------------

    def test_metrics_and_health_with_the_token(self):
        edge = self.start()
        r, data = self.ask("GET", "/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.getheader("Content-Type").startswith("text/plain; version=0.0.4"))
        text = data.decode()
        self.assertRegex(text, r"(?m)^flvedge_connections \d+$")
        self.assertRegex(text, r"(?m)^flvedge_loops %d$" % WORKERS)
        r, body = self.ask_json("GET", "/health")
        self.assertEqual(r.status, 200)
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["loops"], WORKERS)
        self.assertIsInstance(body["uptime"], int)
        self.assertGreaterEqual(body["uptime"], 0)
        self.assertEqual(body["version"], run([BIN, "-v"], timeout=T(10)).stdout.split()[-1])
        r, data = self.ask("HEAD", "/health")
        self.assertEqual((r.status, data), (200, b""))
        # The public listener has no metrics unless the config sets status_prefix.
        self.assertStatus(self.get(edge, "/_flvedge/metrics"), 404)

    def test_unknown_path_404_and_wrong_method_405(self):
        self.start()
        r, body = self.ask_json("GET", "/_flvedge/metrics")
        self.assertEqual((r.status, body), (404, {"error": "no such admin endpoint"}))
        r, body = self.ask_json("POST", "/health", body=b"{}")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.getheader("Allow"), "GET, HEAD")
        r, body = self.ask_json("GET", "/vod/purge")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.getheader("Allow"), "POST")
        self.assertIn("error", body)

    # -- POST bodies -------------------------------------------------------------------------

    def test_vod_endpoints_without_a_vod_resource(self):
        self.start()
        r, body = self.ask_json("POST", "/vod/purge", body=b'{"urls":["/videos/a.flv"],"pattern":"/videos/*"}')
        self.assertEqual((r.status, body), (200, {"purged": 0}))
        r, body = self.ask_json("POST", "/vod/prefetch", body=b'{"urls":["/videos/a.flv"]}')
        self.assertEqual((r.status, body),
                         (400, {"error": "no vod resource serves this path", "url": "/videos/a.flv"}))

    def test_bad_json_is_400_with_the_reason_and_the_connection_stays(self):
        self.start()
        c = self.conn()
        cases = [
            ("/vod/purge", b'{"urls":["/a.flv",]}', "invalid JSON: at byte 18: a value expected"),
            ("/vod/purge", b'{"urls":["/a.flv"]', "invalid JSON: at byte 18: '}' expected"),
            ("/vod/purge", b'{"urls":"/a.flv"}', '"urls" must be an array of paths'),
            ("/vod/purge", b'{"urls":["a.flv"]}',
             "every entry of \"urls\" must be a path starting with '/' (visible ASCII)"),
            ("/vod/purge", b'{}', '"urls" or "pattern" is required'),
            ("/vod/prefetch", b'{"pattern":"/v/*"}',
             'unknown member "pattern" (this endpoint takes "urls")'),
            ("/vod/purge", b'{"urls":[],"urls":[]}', 'invalid JSON: at byte 11: duplicate member "urls"'),
            ("/vod/purge", b'"\xff"', "invalid JSON: at byte 1: invalid UTF-8 in a string"),
            ("/vod/purge", b"", "invalid JSON: at byte 0: a value expected"),
            ("/vod/purge", b"[]", "the body must be a JSON object"),
        ]
        for path, data, why in cases:
            r, body = self.ask_json("POST", path, body=data, conn=c)
            self.assertEqual((r.status, body), (400, {"error": why}), data)
        r, body = self.ask_json("POST", "/vod/purge", body=b'{"nested":{"a":{"b":{"c":{}}}}}', conn=c)
        self.assertEqual(r.status, 400)
        self.assertIn("nested deeper than", body["error"])
        # Every 400 above came on one connection, which still answers.
        r, body = self.ask_json("GET", "/health", conn=c)
        self.assertEqual(body["status"], "ok")

    def test_body_of_64_kib_is_read_and_one_byte_more_is_413(self):
        self.start()
        fill = 65536 - len(b'{"urls":["/"]}')
        ok = b'{"urls":["/' + b"a" * fill + b'"]}'
        self.assertEqual(len(ok), 65536)
        r, body = self.ask_json("POST", "/vod/purge", body=ok)
        self.assertEqual((r.status, body), (200, {"purged": 0}))  # read whole, checked and run

        # Announced too large: refused before any of it is sent, and the connection closes.
        hc = HttpConn(self.admin_port, "/vod/purge", method="POST",
                      headers={"Authorization": "Bearer " + TOKEN, "Content-Length": "65537"})
        self.addCleanup(hc.close)
        resp = hc.read_head()
        self.assertEqual(resp.status, 413)
        self.assertEqual(resp.header("Connection"), "close")
        self.assertEqual(json.loads(hc.read_body_all()), {"error": "request body too large"})
        self.assertTrue(hc.wait_closed(T(5)))

        # Chunked, with no length announced: refused at the byte over the limit.
        hc = HttpConn(self.admin_port, "/vod/purge", method="POST",
                      headers={"Authorization": "Bearer " + TOKEN, "Transfer-Encoding": "chunked"})
        self.addCleanup(hc.close)
        big = b"a" * 65537
        hc.send(b"%x\r\n%s" % (len(big), big))
        resp = hc.read_head()
        self.assertEqual(resp.status, 413)
        self.assertEqual(json.loads(hc.read_body_all()), {"error": "request body too large"})
        self.assertTrue(hc.wait_closed(T(5)))

        # A chunked body within the limit is de-chunked and read.
        r, body = self.ask_json("POST", "/vod/purge", body=iter([b'{"urls":', b'["/a"]}']))
        self.assertEqual((r.status, body), (200, {"purged": 0}))

    # -- reload ------------------------------------------------------------------------------

    def test_reload_changes_the_token(self):
        edge = self.start()
        new = "new-token-fedcba9876543210"
        with open(edge.config_path, "w") as f:
            cfg = config(token=new)
            cfg.update(listen=["127.0.0.1:0"], workers=WORKERS)
            f.write("return " + to_lua(cfg) + "\n")
        before = len(edge.log_lines("reloaded"))
        edge.send_signal(signal.SIGHUP)
        edge.wait_log("reloaded", timeout=T(10))
        self.assertEqual(len(edge.log_lines("reloaded")), before + 1)
        r, _ = self.ask("GET", "/health", token=TOKEN)
        self.assertEqual(r.status, 401)
        r, body = self.ask_json("GET", "/health", token=new)
        self.assertEqual((r.status, body["status"]), (200, "ok"))
        # Moving admin.listen waits for a restart, and says so.
        with open(edge.config_path, "w") as f:
            cfg = config(token=new, admin_listen="127.0.0.1:1")
            cfg.update(listen=["127.0.0.1:0"], workers=WORKERS)
            f.write("return " + to_lua(cfg) + "\n")
        edge.send_signal(signal.SIGHUP)
        edge.wait_log("admin.listen changed", timeout=T(10))
        edge.wait_log("reloaded", timeout=T(10))
        r, _ = self.ask("GET", "/health", token=new)
        self.assertEqual(r.status, 200)
        # Taking admin out: the listener stays until a restart, and refuses everything.
        with open(edge.config_path, "w") as f:
            cfg = config()
            del cfg["admin"]
            cfg.update(listen=["127.0.0.1:0"], workers=WORKERS)
            f.write("return " + to_lua(cfg) + "\n")
        before = len(edge.log_lines("reloaded"))
        edge.send_signal(signal.SIGHUP)
        wait_until(lambda: len(edge.log_lines("reloaded")) > before, T(10), "the third reload")
        self.assertTrue(edge.log_lines("admin API refuses every request"))
        r, body = self.ask_json("GET", "/health", token=new)
        self.assertEqual((r.status, body), (403, {"error": "the admin API is off in the running config"}))

    # -- the public listener -----------------------------------------------------------------

    def test_admin_paths_are_not_on_the_public_listener(self):
        edge = self.start()
        auth = {"Authorization": "Bearer " + TOKEN}
        for path in ("/metrics", "/health"):
            r = self.get(edge, path, headers=auth)
            self.assertStatus(r, 404)
            self.assertNotIn(b"flvedge_connections", r.body)
        r = self.get(edge, "/vod/purge", method="POST", headers=auth, body=b'{"urls":["/a"]}')
        self.assertStatus(r, 405)


class AdminConfigTest(unittest.TestCase):
    def check(self, text):
        d = tempfile.mkdtemp(prefix="flvedge-admin-")
        path = os.path.join(d, "bad.lua")
        with open(path, "w") as f:
            f.write(text)
        return run([BIN, "-t", "-c", path], timeout=T(15))

    def refused(self, admin, *patterns):
        text = ('return { listen = { "127.0.0.1:0" }, admin = %s, resources = {\n'
                '  { prefix = "/flv/", type = "live", origin = "http://127.0.0.1:1/" } } }\n' % admin)
        r = self.check(text)
        self.assertEqual(r.returncode, 1, "flvedge -t with admin = %s: %r" % (admin, r.stderr))
        for p in patterns:
            self.assertRegex(r.stderr, p)

    def test_good_admin_is_ok(self):
        r = self.check('return { listen = { "127.0.0.1:0" }, admin = { listen = "127.0.0.1:0", '
                       'token = "%s" }, resources = {\n'
                       '  { prefix = "/flv/", type = "live", origin = "http://127.0.0.1:1/" } } }\n' % TOKEN)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_weak_or_incomplete_admin_is_refused(self):
        self.refused('{ listen = "127.0.0.1:0", token = "short" }',
                     r"admin\.token: too short: at least 16 characters")
        self.refused('{ token = "%s" }' % TOKEN, r"admin\.listen: missing")
        self.refused('{ listen = "127.0.0.1:0" }', r"admin\.token: missing")
        self.refused('{ listen = "127.0.0.1:0", token = "0123456789 abcdef" }',
                     r"admin\.token: only visible ASCII")
        self.refused('{ listen = "127.0.0.1:0", token = "%s", tokn = "x" }' % TOKEN,
                     r"admin: unknown key")
        self.refused('"127.0.0.1:0"', r"admin: expected a table")
        self.refused('{ listen = "127.0.0.1:0", token = 1234567890123456789 }',
                     r"admin\.token: expected a string")

    def test_quick_mode_admin_needs_a_strong_token(self):
        base = [BIN, "-t", "--listen", "127.0.0.1:0", "--origin", "http://127.0.0.1:1/"]
        r = run(base + ["--admin", "127.0.0.1:0"], timeout=T(15))
        self.assertEqual(r.returncode, 1)
        self.assertIn("--admin needs --admin-token", r.stderr)
        r = run(base + ["--admin", "127.0.0.1:0", "--admin-token", "short"], timeout=T(15))
        self.assertEqual(r.returncode, 1)
        self.assertIn("token: too short", r.stderr)
        r = run(base + ["--admin-token", TOKEN], timeout=T(15))
        self.assertEqual(r.returncode, 1)
        self.assertIn("--admin-token needs --admin", r.stderr)
        r = run(base + ["--admin", "127.0.0.1:0", "--admin-token", TOKEN], timeout=T(15))
        self.assertEqual(r.returncode, 0, r.stderr)


class AdminQuickModeTest(EdgeTestCase):
    def test_quick_mode_serves_the_admin_api(self):
        edge = self.start_quick_edge("http://127.0.0.1:1/",
                                     extra_args=["--admin", "127.0.0.1:0", "--admin-token", TOKEN])
        port = int(ADMIN_RE.findall(edge.stderr_text())[0])
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=T(10))
        self.addCleanup(c.close)
        c.request("GET", "/health", headers={"Authorization": "Bearer " + TOKEN})
        r = c.getresponse()
        self.assertEqual((r.status, json.loads(r.read())["status"]), (200, "ok"))


class StreamsApiTest(EdgeTestCase):
    """GET /streams, GET /streams/<key>, POST /streams/<key>/kick, POST /reload."""

    def start(self):
        self.origin = self.start_origin()
        for name in ("a", "b"):
            self.origin.route("/live/%s.flv" % name, Synth())
        self.edge = self.start_edge(live_config(self.origin.url("/live/")))
        return self.edge

    def test_streams_list_and_detail(self):
        edge = self.start()
        r = admin_request(edge, "GET", "/streams")
        self.assertEqual((r.status, r.json), (200, {"streams": []}))
        va = [self.viewer(edge, "/flv/a.flv") for _ in range(4)]
        vb = self.viewer(edge, "/flv/b.flv")
        for v in va + [vb]:
            v.read_media_ms(1200)
        r = admin_request(edge, "GET", "/streams")
        self.assertEqual(r.status, 200, r.body)
        streams = {s["key"]: s for s in r.json["streams"]}
        self.assertEqual(set(streams), {"live/a", "live/b"})
        a = streams["live/a"]
        self.assertEqual((a["resource"], a["stream"], a["viewers"]), ("live", "a", 4))
        self.assertEqual(len(a["viewers_per_loop"]), WORKERS)
        self.assertEqual(sum(a["viewers_per_loop"]), 4)
        self.assertEqual((a["origin"], a["origin_status"]), (self.origin.url("/live/a.flv"), 200))
        self.assertEqual((a["video_codec"], a["audio_codec"]), ("avc", "aac"))
        self.assertTrue(a["live"])
        self.assertTrue(100e3 < a["bitrate"] < 1e6, a["bitrate"])
        self.assertGreater(a["window_bytes"], 0)
        self.assertTrue(1.0 <= a["uptime"] < T(30), a["uptime"])
        # Sorted by viewers, busiest first.
        self.assertEqual([s["key"] for s in r.json["streams"]], ["live/a", "live/b"])
        r = admin_request(edge, "GET", "/streams/live/b")
        self.assertEqual(r.status, 200)
        self.assertEqual((r.json["key"], r.json["viewers"]), ("live/b", 1))
        r = admin_request(edge, "GET", "/streams/live/nope")
        self.assertEqual((r.status, r.json), (404, {"error": "no such stream on any loop"}))
        for path in ("/streams", "/streams/live/a"):
            self.assertEqual(admin_request(edge, "GET", path, token=None).status, 401)

    # Every field of a STREAM in docs/operations.md, and nothing else.
    STREAM_FIELDS = {
        "key", "resource", "stream", "viewers", "viewers_per_loop", "live", "bitrate", "uptime",
        "origin", "origin_status", "window_bytes", "video_codec", "audio_codec", "bytes_sent_total",
        "origin_bytes_total", "origin_connects_total", "origin_failovers_total", "origin_errors_total",
        "frames_dropped_total", "viewer_jumps_total", "viewers_kicked_total", "joins_total"}

    def test_stream_detail_has_every_documented_field(self):
        edge = self.start()
        va = [self.viewer(edge, "/flv/a.flv") for _ in range(3)]
        for v in va:
            v.read_media_ms(1200)
        with open(os.path.join(SRC, "docs", "operations.md")) as f:
            doc = f.read()
        documented = set(re.findall(r'"(\w+)":', doc[doc.index("A `STREAM`:"):doc.index("`bitrate` is")]))
        self.assertEqual(documented, self.STREAM_FIELDS, "docs/operations.md's STREAM changed")
        before = edge.series("flvedge_stream_bytes_sent_total")['{resource="live",stream="a"}']
        r = admin_request(edge, "GET", "/streams/live/a")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.header("Content-Type"), "application/json")
        d = r.json
        self.assertEqual(set(d), self.STREAM_FIELDS)
        after = edge.series("flvedge_stream_bytes_sent_total")['{resource="live",stream="a"}']
        self.assertEqual((d["key"], d["resource"], d["stream"]), ("live/a", "live", "a"))
        self.assertEqual(d["viewers"], 3)
        self.assertEqual(len(d["viewers_per_loop"]), WORKERS)
        self.assertEqual(sum(d["viewers_per_loop"]), 3)
        self.assertIs(d["live"], True)
        self.assertTrue(100e3 < d["bitrate"] < 1e6, d["bitrate"])           # Synth: ~0.3 Mbit/s
        self.assertTrue(1.0 <= d["uptime"] < T(30), d["uptime"])
        self.assertEqual((d["origin"], d["origin_status"]), (self.origin.url("/live/a.flv"), 200))
        self.assertTrue(0 < d["window_bytes"] <= d["origin_bytes_total"], d)
        self.assertEqual((d["video_codec"], d["audio_codec"]), ("avc", "aac"))
        # the counters are the stream's metrics series at that moment
        self.assertTrue(before <= d["bytes_sent_total"] <= after, (before, d, after))
        self.assertGreater(d["bytes_sent_total"], 3 * 30000, "three viewers took 1.2 s each")
        self.assertGreater(d["origin_bytes_total"], 30000)
        self.assertEqual(d["origin_connects_total"], 1)
        self.assertEqual(d["joins_total"], 3)
        for name in ("origin_failovers_total", "origin_errors_total", "frames_dropped_total",
                     "viewer_jumps_total", "viewers_kicked_total"):
            self.assertEqual(d[name], 0, name)
        # the list has the same entry
        listed = admin_request(edge, "GET", "/streams").json["streams"]
        self.assertEqual(len(listed), 1)
        self.assertEqual(set(listed[0]), self.STREAM_FIELDS)
        self.assertEqual(listed[0]["key"], "live/a")

    def test_kick_cuts_every_viewer_of_the_stream_on_every_loop(self):
        edge = self.start()
        va = [self.viewer(edge, "/flv/a.flv") for _ in range(4)]
        vb = self.viewer(edge, "/flv/b.flv")
        for v in va + [vb]:
            v.read_media_ms(300)
        self.assertEqual(admin_request(edge, "POST", "/streams/live/a/kick", token=None).status, 401)
        r = admin_request(edge, "POST", "/streams/live/a/kick")
        self.assertEqual((r.status, r.json), (200, {"kicked": 4}))
        for v in va:
            v.conn.wait_closed(T(5))
        # The other stream plays on.
        start = max(t.ts for t in vb.tags if t.is_media)
        vb.read_until(lambda v: max(t.ts for t in v.tags if t.is_media) >= start + 500, T(5), "b plays on")
        self.assertEqual(edge.metric("flvedge_viewers_kicked_total"), 4)
        # A loop left without viewers lets its copy of the stream go at once: the resource's counter
        # keeps what that copy counted.
        self.assertEqual(edge.series("flvedge_resource_viewers_kicked_total")['{resource="live"}'], 4)
        r = admin_request(edge, "POST", "/streams/live/zzz/kick")
        self.assertEqual((r.status, r.json), (200, {"kicked": 0}))
        self.assertEqual(admin_request(edge, "GET", "/streams/live/a/kick").status, 404)

    def test_reload_applies_a_good_config_and_refuses_a_broken_one(self):
        edge = self.start()
        with open(edge.config_path) as f:
            good = f.read()
        self.assertEqual(admin_request(edge, "POST", "/reload", token=None).status, 401)
        self.assertEqual(admin_request(edge, "GET", "/reload").status, 405)
        r = admin_request(edge, "POST", "/reload")
        self.assertEqual((r.status, r.json), (200, {"reloaded": True}))
        edge.wait_log("reloaded")
        self.assertEqual(edge.metric("flvedge_reloads_total"), 1)
        with open(edge.config_path, "w") as f:
            f.write(good.replace('type = "live"', 'type = "nonsense"'))
        r = admin_request(edge, "POST", "/reload")
        self.assertEqual(r.status, 500)
        self.assertIn("nonsense", r.json["error"])
        self.assertEqual(edge.metric("flvedge_reload_failures_total"), 1)
        # The running config stays: streams are still served.
        v = self.viewer(edge, "/flv/a.flv")
        v.read_media_ms(300)


if __name__ == "__main__":
    unittest.main()
