"""
Hot reload under load (docs/policies.md): 300 viewers watch through fe_load (the C load client,
which validates the FLV it gets) while the policy is reloaded 20 times, alternating a good script
with a broken one (syntax error, error at load, a factory returning a number, a bad phase), by
SIGHUP and by `flvedge -s reload` (which refuses a broken config itself, without signalling).
No viewer is dropped or corrupted; after every good reload new requests see the new policy at
once; after every broken one the previous policy stays in force and the error is logged.
"""

import os
import signal
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import BIN, T, EdgeTestCase, LoadClient, Synth, run, wait_until

VIEWERS = 300

GOOD = r'''
-- generation %(gen)d
return function(settings)
  local mine = settings.gen .. "-%(gen)d"
  return {
    access = function(req)
      local probe = req.args.probe
      if probe and probe ~= mine then return 403, "in force: " .. mine .. "\n" end
    end,
  }
end
'''

BROKEN = [
    "return function(settings) return { access = function(req) end end\n",   # syntax error
    "error('broken on purpose at load')\n",                                  # raises at load
    "return function(settings) return 42 end\n",                             # not a table
    "return { access = 'not a function' }\n",                                # bad phase
]


class ReloadUnderLoadTest(EdgeTestCase):
    def test_reload_20_times_with_300_viewers(self):
        origin = self.start_origin()
        origin.route("/live/s.flv", Synth(vsize=600))
        edge = self.start_edge(
            'return { listen = { "127.0.0.1:0" }, workers = 2, pid_file = "edge.pid", resources = {\n'
            '  { name = "live", prefix = "/flv/", type = "live", origin = "%s",\n'
            '    policy = "gen", policy_settings = { gen = "g" } } } }\n' % origin.url("/live/"),
            files={"gen.lua": GOOD % {"gen": 0}})
        policy_path = os.path.join(edge.dir, "gen.lua")

        load = LoadClient(edge, "/flv/s.flv?probe=g-0", VIEWERS)
        try:
            wait_until(lambda: edge.metric("flvedge_viewers") == VIEWERS, T(30), "300 viewers watching")
            self.assertEqual(self.probe(edge, "g-0"), 200)
            self.assertEqual(self.probe(edge, "g-9", body=True), (403, b"in force: g-0\n"))

            gen, done = 0, 0
            for i in range(20):
                good = i % 2 == 0
                if good:
                    gen += 1
                    text = GOOD % {"gen": gen}
                else:
                    text = BROKEN[(i // 2) % len(BROKEN)]
                with open(policy_path, "w") as f:
                    f.write(text)
                mark = "reloaded" if good else "reload failed"
                before = len(edge.log_lines(mark))
                if i % 4 < 2:
                    edge.send_signal(signal.SIGHUP)
                    wait_until(lambda: len(edge.log_lines(mark)) > before, T(15),
                               "log line %r after reload %d" % (mark, i + 1))
                else:
                    # -s reload checks the config and policies first: a broken one is refused
                    # right there, with the reason, and the running server is not signalled.
                    r = run([BIN, "-s", "reload", "-c", edge.config_path], timeout=T(20))
                    if good:
                        self.assertEqual(r.returncode, 0, r.stderr)
                        wait_until(lambda: len(edge.log_lines(mark)) > before, T(15),
                                   "log line %r after reload %d" % (mark, i + 1))
                    else:
                        self.assertEqual(r.returncode, 1, "a broken policy was not refused")
                        self.assertRegex(r.stderr, r"gen\.lua|policy")
                done += 1
                # The policy in force: the newest good one, whatever just failed.
                mine = "g-%d" % gen
                self.assertEqual(self.probe(edge, mine), 200, "reload %d: %s must be admitted" % (i + 1, mine))
                status, body = self.probe(edge, "g-%d" % (gen - 1), body=True)
                self.assertEqual((status, body), (403, ("in force: %s\n" % mine).encode()),
                                 "reload %d (%s)" % (i + 1, "good" if good else "broken"))
                # The probe's viewer may still be leaving on the other loop: wait for the count,
                # which a dropped viewer would take below VIEWERS for good.
                wait_until(lambda: edge.metric("flvedge_viewers") == VIEWERS, T(5),
                           "%d viewers after reload %d (one dropped?)" % (VIEWERS, i + 1))
            self.assertEqual(done, 20)
            # ... and they still get media: every viewer is sent more (here: 1 s of video) after.
            sent = edge.metric("flvedge_bytes_sent_total")
            wait_until(lambda: edge.metric("flvedge_bytes_sent_total") > sent + VIEWERS * 25 * 600, T(15),
                       "media flowing to the viewers after the reloads")
            self.assertEqual(len(edge.log_lines("reload failed")), 5)  # the SIGHUP ones
            self.assertEqual(edge.metric("flvedge_viewers_kicked_total"), 0)
        finally:
            load.stop()
        load.check_clean(self)
        self.assertTrue(edge.alive())
        # Both loops had viewers: the reloads reached a loop that was not the one signalled.
        self.assertTrue(all(n > 0 for n in edge.loop_metric("connections_accepted_total")))

    def probe(self, edge, value, body=False):
        """A new request under the policy in force: its status (a 200 is a live stream; closed at once)."""
        if body:
            r = self.get(edge, "/flv/s.flv?probe=" + value)
            return r.status, r.body
        v = self.viewer(edge, "/flv/s.flv?probe=" + value)
        status = v.status
        v.close()
        return status


if __name__ == "__main__":
    unittest.main()
