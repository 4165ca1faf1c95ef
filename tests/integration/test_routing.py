"""
Routing as docs/configuration.md describes it: first match by host, then the longest prefix;
static resources; cors_origin and status_prefix settings.
"""

import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import T, EdgeTestCase, Synth, check_join_sequence


class RoutingTest(EdgeTestCase):
    def setUp(self):
        self.a = self.start_origin()
        self.b = self.start_origin()
        self.c = self.start_origin()
        self.d = self.start_origin()
        for o in (self.a, self.b, self.c, self.d):
            o.route("/live/s.flv", Synth())
        self.edge = self.start_edge({"resources": [
            {"name": "v6", "host": "[::1]", "prefix": "/flv/", "type": "live",
             "origin": self.a.url("/live/")},
            {"name": "exact", "host": "a.example.com", "prefix": "/flv/", "type": "live",
             "origin": self.a.url("/live/")},
            {"name": "wild", "host": "*.example.com", "prefix": "/flv/", "type": "live",
             "origin": self.b.url("/live/")},
            {"name": "any", "host": "*", "prefix": "/flv/", "type": "live",
             "origin": self.c.url("/live/")},
            {"name": "deeper", "host": "*", "prefix": "/flv/hd/", "type": "live",
             "origin": self.d.url("/live/")},
        ]})

    def pulls(self, host, path="/flv/s.flv"):
        v = self.viewer(self.edge, path, headers={"Host": host})
        self.assertEqual(v.status, 200, "%s%s: %r" % (host, path, v.response))
        v.read_tags(5)
        v.close()
        return [o for o in (self.a, self.b, self.c, self.d) if o.connections("/live/s.flv")]

    def test_exact_host_with_port(self):
        self.assertEqual(self.pulls("a.example.com:8080"), [self.a])

    def test_host_is_case_insensitive(self):
        self.assertEqual(self.pulls("A.Example.COM"), [self.a])

    def test_ipv6_literal_host_with_port(self):
        self.assertEqual(self.pulls("[::1]:8080"), [self.a])

    def test_wildcard_host(self):
        self.assertEqual(self.pulls("x.example.com"), [self.b])

    def test_other_host_falls_to_star(self):
        self.assertEqual(self.pulls("example.org"), [self.c])

    def test_longest_prefix(self):
        self.assertEqual(self.pulls("example.org", "/flv/hd/s.flv"), [self.d])


class StaticAndSettingsTest(EdgeTestCase):
    def setUp(self):
        self.origin = self.start_origin()
        self.origin.route("/live/s.flv", Synth())
        self.edge = self.start_edge({
            "cors_origin": "https://player.example",
            "status_prefix": "/_status/",
            "resources": [
                {"name": "live", "prefix": "/flv/", "type": "live", "origin": self.origin.url("/live/")},
                {"name": "player", "prefix": "/", "type": "static", "root": "player"},
            ]}, files={"player/index.html": "<html>hello</html>\n",
                       "player/js/app.js": "console.log(1);\n",
                       "secret.txt": "do not serve\n"})

    def test_static_file(self):
        r = self.get(self.edge, "/index.html")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"<html>hello</html>\n")
        self.assertEqual(r.header("Content-Length"), str(len(r.body)))
        r = self.get(self.edge, "/js/app.js")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"console.log(1);\n")

    def test_static_head(self):
        r = self.get(self.edge, "/index.html", method="HEAD")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"")
        self.assertEqual(r.header("Content-Length"), "19")

    def test_static_missing_and_outside(self):
        self.assertStatus(self.get(self.edge, "/nope.html"), 404)
        for path in ("/../secret.txt", "/..%2Fsecret.txt", "/js/../../secret.txt", "/%2e%2e/secret.txt"):
            with self.subTest(path=path):
                r = self.get(self.edge, path)
                self.assertIn(r.status, (400, 403, 404), "%s -> %d %r" % (path, r.status, r.body[:50]))

    def test_static_post_is_405(self):
        self.assertStatus(self.get(self.edge, "/index.html", method="POST", body=b"x"), 405)

    def test_live_prefix_wins_over_root(self):
        v = self.viewer(self.edge, "/flv/s.flv")
        self.assertEqual(v.status, 200, v.response)
        v.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
        check_join_sequence(v.tags, v.flv.flags)
        self.assertEqual(v.response.header("Access-Control-Allow-Origin"), "https://player.example")

    def test_status_prefix(self):
        r = self.get(self.edge, "/_status/metrics")
        self.assertStatus(r, 200)
        self.assertIn(b"flvedge_requests_total", r.body)


class NoCorsTest(EdgeTestCase):
    def test_cors_origin_false_sends_none(self):
        origin = self.start_origin()
        origin.route("/live/s.flv", Synth())
        edge = self.start_edge({"cors_origin": False, "resources": [
            {"name": "live", "prefix": "/flv/", "type": "live", "origin": origin.url("/live/")}]})
        v = self.viewer(edge, "/flv/s.flv")
        self.assertEqual(v.status, 200, v.response)
        self.assertIsNone(v.response.header("Access-Control-Allow-Origin"), v.response)


if __name__ == "__main__":
    unittest.main()
