"""The command line (-v, -t, quick mode) and graceful stop on SIGTERM / SIGINT."""

import os
import re
import signal
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (BIN, SRC, T, EdgeTestCase, Synth, check_join_sequence, live_config, run,
                        to_lua, wait_until)


def project_version():
    with open(os.path.join(SRC, "CMakeLists.txt")) as f:
        m = re.search(r"project\(\s*flvedge\s+VERSION\s+([0-9.]+)", f.read())
    return m.group(1) if m else None


class CliTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="flvedge-cli-")
        self.addCleanup(self.dir.cleanup)

    def write(self, name, text):
        p = os.path.join(self.dir.name, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def check(self, path):
        return run([BIN, "-t", "-c", path], timeout=T(15))

    def test_version(self):
        r = run([BIN, "-v"], timeout=T(10))
        self.assertEqual(r.returncode, 0, r)
        out = (r.stdout + r.stderr).strip()
        version = project_version()
        self.assertRegex(out, r"^flvedge \S+", out)
        if version:
            self.assertIn("flvedge " + version, out)

    def test_good_config_is_ok(self):
        cfg = {"listen": ["127.0.0.1:0"], "log_level": "warn",
               "limits": {"max_viewers": 100, "request_timeout": 5},
               "resources": [{"name": "live", "prefix": "/flv/", "type": "live",
                              "origin": "http://127.0.0.1:9/live/", "linger": 3},
                             {"name": "file", "prefix": "/f/", "type": "live", "origin": "file:media/"}]}
        p = self.write("good.lua", "return " + to_lua(cfg) + "\n")
        r = self.check(p)
        self.assertEqual(r.returncode, 0, "flvedge -t on a good config: %s" % r.stderr)
        self.assertIn("is ok", r.stdout + r.stderr)
        self.assertIn(p, r.stdout + r.stderr, "the message does not name the config file")

    def _bad(self, name, text, *patterns):
        p = self.write(name, text) if text is not None else os.path.join(self.dir.name, name)
        r = self.check(p)
        self.assertEqual(r.returncode, 1, "flvedge -t on %s: exit %d, stderr %r" % (name, r.returncode, r.stderr))
        self.assertIn(p, r.stderr, "the message does not name the file: %r" % r.stderr)
        self.assertIn("flvedge: ", r.stderr)
        for pat in patterns:
            self.assertRegex(r.stderr, re.compile(pat, re.I), "the message is not clear")
        self.assertNotIn("is ok", r.stdout + r.stderr)
        return r

    def test_bad_workers_listen_mode_and_merge(self):
        base = {"listen": ["127.0.0.1:0"],
                "resources": [{"name": "live", "prefix": "/flv/", "type": "live",
                               "origin": "http://127.0.0.1:9/live/"}]}
        for key, value, pat in (("workers", 0, r"workers"), ("workers", 1.5, r"workers"),
                                ("workers", "many", r"workers"), ("listen_mode", "hash", r"listen_mode")):
            cfg = dict(base, **{key: value})
            self._bad("%s.lua" % key, "return " + to_lua(cfg) + "\n", pat)
        cfg = dict(base, resources=[dict(base["resources"][0], merge_ms="soon")])
        self._bad("merge.lua", "return " + to_lua(cfg) + "\n", r"merge_ms")
        r = run([BIN, "--listen", "127.0.0.1:0", "--origin", "http://127.0.0.1:9/", "--workers", "0"],
                timeout=T(10))
        self.assertEqual(r.returncode, 1)
        self.assertIn("--workers", r.stderr)

    def test_syntax_error(self):
        self._bad("syntax.lua", "return { listen = { \"127.0.0.1:0\" \n resources = \n")

    def test_missing_file(self):
        self._bad("does-not-exist.lua", None, r"no such file|not found|cannot open|does not exist")

    def test_listen_not_a_list_of_strings(self):
        self._bad("listen.lua", "return { listen = 5, resources = {} }\n", r"listen")

    def test_bogus_resource_type(self):
        cfg = {"listen": ["127.0.0.1:0"],
               "resources": [{"name": "x", "prefix": "/flv/", "type": "bogus", "origin": "http://127.0.0.1:9/"}]}
        self._bad("bogus.lua", "return " + to_lua(cfg) + "\n", r"bogus|type")

    def test_origin_that_is_no_url(self):
        # It would go into every origin request line as it is.
        for name, origin in (("crlf", "http://127.0.0.1:9/live/\r\nX-Injected: yes"),
                             ("space", "http://127.0.0.1:9/a b/"), ("utf8", "http://127.0.0.1:9/\u00e9/"),
                             ("empty", "http://")):
            with self.subTest(case=name):
                cfg = {"listen": ["127.0.0.1:0"],
                       "resources": [{"name": "x", "prefix": "/flv/", "type": "live", "origin": origin}]}
                self._bad("origin-%s.lua" % name, "return " + to_lua(cfg) + "\n", r"origin: expected")

    def test_config_returning_nothing(self):
        self._bad("empty.lua", "local x = 1\n")

    def test_runtime_error_in_config(self):
        self._bad("error.lua", "error('boom from config')\n", r"boom from config")

    def test_running_with_a_bad_config_fails_fast(self):
        p = self.write("bad.lua", "return { listen = 5 }\n")
        r = run([BIN, "-c", p], timeout=T(15))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(p, r.stderr)


class StopTest(EdgeTestCase):
    def _graceful(self, sig):
        origin = self.start_origin()
        path = "/live/stop.flv"
        origin.route(path, Synth())
        edge = self.start_edge(live_config(origin.url("/live/")))
        viewers = [self.viewer(edge, "/flv/stop.flv") for _ in range(3)]
        other = self.viewer(edge, "/flv/stop.flv", version="HTTP/1.0")
        for v in viewers + [other]:
            self.assertEqual(v.status, 200, v.response)
            v.read_tags(10)
        code = edge.stop(sig, timeout=T(15), expect_code=None)
        self.assertEqual(code, 0, "exit code after signal %d; stderr:\n%s" % (sig, edge.stderr_tail()))
        for v in viewers:
            self.assertTrue(v.read_to_end(T(5)), "a viewer's chunked body was not ended")
            self.assertTrue(v.flv.at_boundary(), "a viewer's body stopped inside a tag")
            check_join_sequence(v.tags, v.flv.flags)
        self.assertTrue(other.read_to_end(T(5)), "HTTP/1.0 viewer not closed")
        self.assertTrue(other.flv.at_boundary(), "HTTP/1.0 viewer's body stopped inside a tag")
        wait_until(lambda: origin.active(path) == 0, T(5), "the origin connection to close")

    def test_sigterm_with_viewers(self):
        self._graceful(signal.SIGTERM)

    def test_sigint_with_viewers(self):
        self._graceful(signal.SIGINT)

    def test_sigterm_with_a_stuck_viewer_and_a_pending_origin(self):
        origin = self.start_origin()
        origin.route("/live/fat.flv", Synth(vsize=60_000, ksize=200_000))
        origin.route("/live/silent.flv", silent=True)
        edge = self.start_edge(live_config(origin.url("/live/"), slow_viewer_timeout=2,
                                           origin_connect_timeout=5, origin_read_timeout=10))
        stuck = self.viewer(edge, "/flv/fat.flv", rcvbuf=4096)   # never reads its body
        normal = self.viewer(edge, "/flv/fat.flv")
        normal.read_media_ms(500)
        waiting = self.viewer(edge, "/flv/silent.flv", open=False)
        wait_until(lambda: origin.connections("/live/silent.flv") == 1, T(5), "the pending pull")
        code = edge.stop(signal.SIGTERM, timeout=2 + T(10), expect_code=None)
        self.assertEqual(code, 0, "exit code; stderr:\n%s" % edge.stderr_tail())
        self.assertTrue(normal.read_to_end(T(5)), "the normal viewer's body was not ended")
        self.assertTrue(waiting.conn.wait_closed(T(5)), "the waiting viewer was left open")
        self.assertTrue(stuck.conn.wait_closed(T(5)), "the stuck viewer was left open")

    def _stoppable(self):
        """An edge with a pid file and a policy; returns (edge, its policy file's path)."""
        edge = self.start_edge(
            'return { listen = { "127.0.0.1:0" }, workers = 2, pid_file = "edge.pid", resources = {\n'
            '  { name = "live", prefix = "/flv/", type = "live", origin = "http://127.0.0.1:9/live/",\n'
            '    policy = "p" } } }\n',
            files={"p.lua": "return function(settings) return { access = function(req) end } end\n"})
        wait_until(lambda: os.path.exists(os.path.join(edge.dir, "edge.pid")), T(10), "the pid file")
        return edge, os.path.join(edge.dir, "p.lua")

    def _s_stop(self, edge, *args):
        r = run([BIN, "-s", "stop"] + list(args), timeout=T(15))
        self.assertEqual(r.returncode, 0, "flvedge -s stop: %r" % r.stderr)
        wait_until(lambda: not edge.alive(), T(15), "the edge to stop")
        self.assertEqual(edge.stop(), 0)
        self.assertTrue(edge.log_lines("SIGTERM: stopping gracefully"), edge.stderr_tail())

    def test_s_stop_with_a_broken_policy(self):
        edge, policy = self._stoppable()
        with open(policy, "w") as f:
            f.write("return function(settings) syntax error here\n")
        self._s_stop(edge, "-c", edge.config_path)

    def test_s_stop_with_a_broken_config(self):
        edge, _ = self._stoppable()
        with open(edge.config_path) as f:
            text = f.read()
        # Still runs, names its pid_file, but is no valid config any more.
        with open(edge.config_path, "w") as f:
            f.write(text.replace('type = "live"', 'type = "bogus"'))
        r = run([BIN, "-t", "-c", edge.config_path], timeout=T(15))
        self.assertEqual(r.returncode, 1, r)
        self._s_stop(edge, "-c", edge.config_path)

    def test_s_stop_with_a_config_that_does_not_run_needs_pid_file(self):
        edge, _ = self._stoppable()
        with open(edge.config_path, "w") as f:
            f.write("return { listen = \n")
        r = run([BIN, "-s", "stop", "-c", edge.config_path], timeout=T(15))
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("--pid-file", r.stderr)
        self.assertTrue(edge.alive())
        self._s_stop(edge, "-c", edge.config_path, "--pid-file", os.path.join(edge.dir, "edge.pid"))

    def test_sigterm_idle(self):
        edge = self.start_edge(live_config("http://127.0.0.1:9/live/"))
        self.assertEqual(edge.stop(signal.SIGTERM, timeout=T(10)), 0)


class QuickModeTest(EdgeTestCase):
    def test_quick_mode_proxies_path_and_drops_query(self):
        origin = self.start_origin()
        origin.route("/live/q.flv", Synth())
        edge = self.start_quick_edge(origin.url(""))
        v = self.viewer(edge, "/live/q.flv?token=abc&x=1")
        self.assertEqual(v.status, 200, v.response)
        v.read_until(lambda v: sum(t.is_keyframe for t in v.tags) >= 1, T(10), "a keyframe")
        check_join_sequence(v.tags, v.flv.flags)
        reqs = origin.requests_for("/live/q.flv")
        self.assertEqual(len(reqs), 1)
        self.assertEqual(reqs[0]["target"], "/live/q.flv", "the origin request target")
        self.assertEqual(reqs[0]["method"], "GET")

    def test_quick_mode_with_origin_prefix_and_log_level(self):
        origin = self.start_origin()
        origin.route("/base/live/p.flv", Synth())
        edge = self.start_quick_edge(origin.url("/base"), extra_args=["--log-level", "debug"])
        v = self.viewer(edge, "/live/p.flv")
        self.assertEqual(v.status, 200, v.response)
        v.read_tags(10)

    def test_quick_mode_unknown_path_is_from_origin(self):
        origin = self.start_origin()
        edge = self.start_quick_edge(origin.url(""))
        self.assertStatus(self.get(edge, "/nope/x.flv"), 404)


if __name__ == "__main__":
    unittest.main()
