"""
examples/: the Grafana dashboard queries only series a live /metrics scrape has (rate() only over
counters, histogram_quantile() only over histogram buckets); the systemd unit passes
`systemd-analyze verify`; the logrotate snippet passes `logrotate -d`, and a forced rotation by it
(the move, then SIGUSR1) leaves flvedge writing the new file. Each tool is skipped when missing.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import BIN, SRC, T, EdgeTestCase, Synth, live_config, run, wait_until

EXAMPLES = os.path.join(SRC, "examples")


def dashboard_exprs():
    """Every PromQL text of the dashboard: panel targets and templating queries."""
    with open(os.path.join(EXAMPLES, "grafana-dashboard.json")) as f:
        dash = json.load(f)
    out = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "query") and isinstance(v, str):
                    out.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(dash)
    return dash, out


class GrafanaDashboardTest(EdgeTestCase):
    def test_every_series_the_dashboard_uses_is_in_a_live_scrape(self):
        dash, exprs = dashboard_exprs()
        panels = dash["panels"]
        self.assertGreater(len(panels), 10)
        ids = [p["id"] for p in panels]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")
        for p in panels:
            if p.get("type") != "row":
                self.assertTrue(p.get("targets"), "panel %r has no query" % p.get("title"))
        names = set()
        for e in exprs:
            names.update(re.findall(r"\bflvedge_\w+", e))
        self.assertGreater(len(names), 15, names)
        # A node with a live stream, a viewer, a finished request and a failed one: every family.
        origin = self.start_origin()
        origin.route("/live/a.flv", Synth())
        edge = self.start_edge(live_config(origin.url("/live/"), top={"access_log": "access.log"}))
        v = self.viewer(edge, "/flv/a.flv")
        v.read_media_ms(300)
        self.assertStatus(self.get(edge, "/flv/missing.flv"), 404)
        text = edge.metrics_text()
        types = dict(re.findall(r"(?m)^# TYPE (\S+) (\S+)$", text))
        scraped = set(re.findall(r"(?m)^(flvedge_\w+)(?:\{[^}]*\})? ", text))
        missing = sorted(n for n in names if n not in scraped)
        self.assertEqual(missing, [], "dashboard series that /metrics does not have")

        def family(name):
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
                    return name[:-len(suffix)], "histogram"
            return name, types.get(name)

        for e in exprs:
            for fn, name in re.findall(r"\b(rate|increase|irate)\((flvedge_\w+)", e):
                base, kind = family(name)
                self.assertTrue(kind == "counter" or (kind == "histogram" and name.endswith(("_bucket", "_sum", "_count"))),
                                "%s() over %s, a %s: %s" % (fn, name, kind, e))
            for name in re.findall(r"histogram_quantile\([^,]+,.*?(flvedge_\w+)", e):
                self.assertEqual(family(name), (name[:-len("_bucket")], "histogram"), e)
                self.assertTrue(name.endswith("_bucket"), e)
        v.close()


class SystemdUnitTest(unittest.TestCase):
    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not installed")
    def test_systemd_analyze_verify_finds_nothing(self):
        d = tempfile.mkdtemp(prefix="flvedge-unit-")
        self.addCleanup(shutil.rmtree, d, True)
        with open(os.path.join(EXAMPLES, "flvedge.service")) as f:
            unit = f.read()
        self.assertIn("/usr/local/bin/flvedge", unit)
        self.assertIn("ExecReload=", unit)
        # verify checks that ExecStart's program exists: the built binary stands in for the
        # installed one.
        path = os.path.join(d, "flvedge.service")
        with open(path, "w") as f:
            f.write(unit.replace("/usr/local/bin/flvedge", BIN))
        r = run(["systemd-analyze", "verify", path], timeout=T(60))
        # An unknown key or a bad value is only a warning (exit 0): any line about the unit fails.
        about = [l for l in (r.stdout + r.stderr).splitlines() if "flvedge" in l]
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(about, [], "systemd-analyze verify complains")


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


@unittest.skipUnless(shutil.which("logrotate"), "logrotate not installed (Debian package logrotate)")
class LogrotateTest(EdgeTestCase):
    def snippet(self, logdir):
        with open(os.path.join(EXAMPLES, "logrotate")) as f:
            text = f.read()
        self.assertIn("/var/log/flvedge/access.log", text)
        self.assertNotIn("copytruncate", text, "flvedge reopens on SIGUSR1: nothing to truncate")
        return text.replace("/var/log/flvedge/", logdir + "/")

    def logrotate(self, conf_text, d, *args):
        conf = os.path.join(d, "flvedge.conf")
        with open(conf, "w") as f:
            f.write(conf_text)
        return run(["logrotate", "-s", os.path.join(d, "state")] + list(args) + [conf], timeout=T(60))

    def test_the_snippet_parses_and_a_forced_rotation_moves_the_log_and_flvedge_reopens_it(self):
        d = tempfile.mkdtemp(prefix="flvedge-logrotate-")
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o755)  # logrotate refuses a world-writable parent
        log = os.path.join(d, "access.log")
        text = self.snippet(d)
        r = self.logrotate(text, d, "-d")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotRegex(r.stdout + r.stderr, r"(?im)^error:", r.stdout + r.stderr)
        # The same snippet for real, its postrotate signalling the test's edge instead of systemd.
        origin = self.start_origin()
        origin.route("/live/a.flv", Synth())
        edge = self.start_edge(live_config(origin.url("/live/"), top={"access_log": log}))
        self.assertStatus(self.get(edge, "/flv/none-1"), 404)
        wait_until(lambda: "/flv/none-1" in read(log), T(10), "a logged line")
        post = re.search(r"(?m)^\s*systemctl kill .*$", text)
        self.assertIsNotNone(post, "the postrotate line")
        real = text.replace(post.group(0), "        kill -USR1 %d" % edge.pid)
        r = self.logrotate(real, d, "-f")
        self.assertEqual(r.returncode, 0, r.stderr)
        edge.wait_log("SIGUSR1: reopening the access log")
        rotated = [n for n in os.listdir(d) if n.startswith("access.log-")]
        self.assertEqual(len(rotated), 1, os.listdir(d))   # dateext; delaycompress: not yet .gz
        with open(os.path.join(d, rotated[0])) as f:
            self.assertIn("/flv/none-1", f.read())
        self.assertStatus(self.get(edge, "/flv/none-2"), 404)
        wait_until(lambda: "/flv/none-2" in read(log), T(10), "the next line in the new file")
        with open(os.path.join(d, rotated[0])) as f:
            self.assertNotIn("/flv/none-2", f.read())


if __name__ == "__main__":
    unittest.main()
