"""linger: the origin connection outlives the last viewer by `linger` seconds, then closes."""

import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import T, EdgeTestCase, Synth, live_config, wait_until


class LingerTest(EdgeTestCase):
    def setUp(self):
        self.origin = self.start_origin()

    def test_rejoin_within_linger_reuses_the_origin_then_it_closes(self):
        edge = self.start_edge(live_config(self.origin.url("/live/"), linger=1))
        path = "/live/ling.flv"
        self.origin.route(path, Synth())
        v1 = self.viewer(edge, "/flv/ling.flv")
        self.assertEqual(v1.response.header("X-Cache-Status"), "MISS", v1.response)
        v1.read_media_ms(300)
        v1.close()
        # Back at once: still within the linger.
        v2 = self.viewer(edge, "/flv/ling.flv")
        self.assertEqual(v2.status, 200, v2.response)
        self.assertEqual(v2.response.header("X-Cache-Status"), "HIT", v2.response)
        v2.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
        self.assertEqual(self.origin.connections(path), 1)
        self.assertEqual(self.origin.active(path), 1)
        v2.close()
        left = time.monotonic()
        wait_until(lambda: self.origin.active(path) == 0, 1 + T(5),
                   "the origin connection to close after the linger")
        closed = self.origin.conns_for(path)[0].closed_at
        self.assertGreater(closed - left, 0.7,
                           "origin closed %.2f s after the last viewer left; linger is 1 s"
                           % (closed - left))
        self.assertTrue(self.origin.conns_for(path)[0].peer_closed, "the edge did not close it")
        v3 = self.viewer(edge, "/flv/ling.flv")
        self.assertEqual(v3.status, 200, v3.response)
        self.assertEqual(v3.response.header("X-Cache-Status"), "MISS", v3.response)
        v3.read_tags(5)
        self.assertEqual(self.origin.connections(path), 2)

    def test_linger_zero_closes_at_once(self):
        edge = self.start_edge(live_config(self.origin.url("/live/"), linger=0))
        path = "/live/ling0.flv"
        self.origin.route(path, Synth())
        v = self.viewer(edge, "/flv/ling0.flv")
        v.read_media_ms(300)
        v.close()
        wait_until(lambda: self.origin.active(path) == 0, T(3),
                   "the origin connection to close with linger = 0")

    def test_viewer_count_during_linger(self):
        edge = self.start_edge(live_config(self.origin.url("/live/"), linger=1))
        self.origin.route("/live/lm.flv", Synth())
        v = self.viewer(edge, "/flv/lm.flv")
        v.read_tags(5)
        self.assertEqual(edge.metric("flvedge_viewers"), 1)
        v.close()
        wait_until(lambda: edge.metric("flvedge_viewers") == 0, T(5), "flvedge_viewers back to 0")
        wait_until(lambda: self.origin.active("/live/lm.flv") == 0, 1 + T(5), "the linger to end")
        wait_until(lambda: edge.metric("flvedge_streams") == 0, T(5), "flvedge_streams back to 0")


if __name__ == "__main__":
    unittest.main()
