"""
Several loops, one origin pull per stream (docs/architecture.md, "Loops and cores"): whatever loop
a viewer lands on, the stream is pulled once per node, every viewer gets the same bytes from its
first keyframe on, one viewer is the MISS, and ends, errors, departures and SIGTERM reach viewers
on every loop. Each story runs with 2 and with 4 loops.
"""

import signal
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (T, EdgeTestCase, LoadClient, Synth, check_join_sequence, live_config,
                        wait_until)

LOAD_VIEWERS = 2000


def media_from_first_key(tags):
    """(type, ts, size, crc, head) of every tag from the first video keyframe on."""
    i = next(i for i, t in enumerate(tags) if t.is_keyframe)
    return [(t.type, t.ts) + t.key for t in tags[i:]]


class MultiLoopBase(EdgeTestCase):
    LOOPS = 2

    def edge_for(self, origin, **res):
        res.setdefault("linger", 1)
        return self.start_edge(live_config(origin.url("/live/"), top={"workers": self.LOOPS},
                                           **res))

    def viewer_on_loops(self, edge, path, want_loops, limit=400):
        """Opens viewers until they sit on `want_loops` distinct loops; returns {loop: [viewers]}."""
        by_loop = {}
        for _ in range(limit):
            before = edge.loop_metric("viewers")
            v = self.viewer(edge, path)
            self.assertEqual(v.status, 200, v.response)
            after = wait_until(lambda: (lambda a: a if sum(a) == sum(before) + 1 else None)(
                edge.loop_metric("viewers")), T(10), "the new viewer in the per-loop gauge")
            loop = next(i for i in range(len(after)) if after[i] == before[i] + 1)
            by_loop.setdefault(loop, []).append(v)
            if len(by_loop) >= want_loops:
                return by_loop
        self.fail("viewers never spread over %d loops: %r" % (want_loops, {k: len(v) for k, v in by_loop.items()}))

    def test_every_loop_serves_one_pull_with_the_same_bytes(self):
        origin = self.start_origin()
        origin.route("/live/s.flv", Synth(vsize=800))
        edge = self.edge_for(origin)
        load = LoadClient(edge, "/flv/s.flv", LOAD_VIEWERS, rate=1000)
        try:
            wait_until(lambda: edge.metric("flvedge_viewers") == LOAD_VIEWERS, T(60),
                       "%d viewers watching" % LOAD_VIEWERS)
            per_loop = edge.loop_metric("viewers")
            self.assertEqual(len(per_loop), self.LOOPS)
            self.assertTrue(all(n > 0 for n in per_loop), "a loop got no viewer: %r" % per_loop)
            # Late joiners on every loop: each starts clean, and all get the same bytes.
            by_loop = self.viewer_on_loops(edge, "/flv/s.flv", self.LOOPS)
            viewers = [v for vs in by_loop.values() for v in vs]
            for v in viewers:
                v.read_until(lambda v: sum(t.is_keyframe for t in v.tags) >= 2, T(15), "two keyframes")
                check_join_sequence(v.tags, v.flv.flags)
                self.assertEqual(v.response.header("X-Cache-Status"), "HIT")
            # Compare from the newest first keyframe any of them had, over 40 tags all of them read.
            start = max(media_from_first_key(v.tags)[0] for v in viewers)

            def past_start(v):
                run = media_from_first_key(v.tags)
                return start in run and len(run) - run.index(start) >= 40

            for v in viewers:
                v.read_until(past_start, T(15), "40 tags past the common keyframe")
            runs = [media_from_first_key(v.tags) for v in viewers]
            runs = [r[r.index(start):] for r in runs]
            n = min(len(r) for r in runs)
            self.assertGreater(n, 10)
            for i, r in enumerate(runs[1:], 1):
                self.assertEqual(r[:n], runs[0][:n], "viewer %d's media differs from viewer 0's" % i)
            self.assertEqual(origin.connections("/live/s.flv"), 1, "more than one pull per node")
            relayed = edge.loop_metric("relay_subscribers")
            self.assertEqual(sum(relayed), self.LOOPS - 1, "every other loop is fed by the owner")
        finally:
            load.stop()
        load.check_clean(self)

    def test_one_miss_among_viewers_joining_on_every_loop(self):
        origin = self.start_origin()
        origin.route("/live/m.flv", Synth(), header_delay=0.5)
        edge = self.edge_for(origin)
        viewers = [self.viewer(edge, "/flv/m.flv", open=False) for _ in range(8 * self.LOOPS)]
        wait_until(lambda: edge.metric("flvedge_viewers") == len(viewers), T(10), "every viewer joined")
        self.assertEqual(sum(1 for n in edge.loop_metric("viewers") if n > 0), self.LOOPS,
                         "the viewers did not land on every loop")
        for v in viewers:
            self.assertEqual(v.open().status, 200, v.response)
        caches = sorted(v.response.header("X-Cache-Status") for v in viewers)
        self.assertEqual(caches.count("MISS"), 1, caches)
        self.assertEqual(origin.connections("/live/m.flv"), 1)
        self.assertEqual(edge.metric("flvedge_origin_connects_total"), 1)

    def test_origin_errors_and_ends_reach_every_loop(self):
        origin = self.start_origin()
        origin.route("/live/e.flv", status=503, body=b"origin says no\n", header_delay=0.5)
        edge = self.edge_for(origin)
        viewers = [self.viewer(edge, "/flv/e.flv", open=False) for _ in range(6 * self.LOOPS)]
        wait_until(lambda: edge.metric("flvedge_viewers") == len(viewers), T(10), "every viewer waiting")
        self.assertEqual(sum(1 for n in edge.loop_metric("viewers") if n > 0), self.LOOPS)
        for v in viewers:
            r = v.open()
            self.assertEqual(r.status, 503, r)
            self.assertEqual(v.conn.read_body_all(T(5)), b"origin says no\n")
        self.assertEqual(origin.connections("/live/e.flv"), 1)

        origin.route("/live/end.flv", Synth())
        by_loop = self.viewer_on_loops(edge, "/flv/end.flv", self.LOOPS)
        for vs in by_loop.values():
            for v in vs:
                v.read_tags(5)
        origin.end("/live/end.flv")
        for loop, vs in by_loop.items():
            for v in vs:
                self.assertTrue(v.read_to_end(T(10)), "loop %d: the end was not clean" % loop)
                self.assertTrue(v.flv.at_boundary())

    def test_stream_lives_on_when_the_owning_loop_has_no_viewer_left(self):
        origin = self.start_origin()
        origin.route("/live/o.flv", Synth())
        edge = self.edge_for(origin, linger=1)
        first = self.viewer(edge, "/flv/o.flv")
        connects = edge.loop_metric("origin_connects_total")
        self.assertEqual(sorted(connects), [0] * (self.LOOPS - 1) + [1], connects)
        owner = connects.index(1)
        by_loop = self.viewer_on_loops(edge, "/flv/o.flv", self.LOOPS)
        others = [v for loop, vs in by_loop.items() if loop != owner for v in vs]
        on_owner = [first] + by_loop.get(owner, [])
        for v in on_owner + others:
            v.read_tags(3)
        for v in on_owner:
            v.close()
        wait_until(lambda: edge.loop_metric("viewers")[owner] == 0, T(5), "the owner loop emptied")
        # Longer than the linger: the pull goes on for the other loops' viewers.
        for v in others:
            v.read_media_ms(2500, T(10))
        self.assertEqual(origin.connections("/live/o.flv"), 1)
        self.assertEqual(origin.active("/live/o.flv"), 1)
        # The last viewer anywhere leaves: the linger counts from then, then the pull stops.
        left = time.monotonic()
        for v in others:
            v.close()
        wait_until(lambda: origin.active("/live/o.flv") == 0, T(10), "the pull to stop after the linger")
        self.assertGreater(time.monotonic() - left, 0.8, "the pull stopped before the linger")

    def test_sigterm_drains_viewers_on_every_loop(self):
        origin = self.start_origin()
        origin.route("/live/d.flv", Synth())
        edge = self.edge_for(origin)
        by_loop = self.viewer_on_loops(edge, "/flv/d.flv", self.LOOPS)
        for vs in by_loop.values():
            for v in vs:
                v.read_tags(3)
        edge.send_signal(signal.SIGTERM)
        for loop, vs in by_loop.items():
            for v in vs:
                self.assertTrue(v.read_to_end(T(10)), "loop %d: viewer not ended cleanly" % loop)
        self.assertEqual(edge.stop(timeout=T(15)), 0)


class SharedSocketTest(EdgeTestCase):
    """listen_mode "shared": one socket every loop polls; the loops serve what they accept."""

    def test_shared_socket_serves(self):
        origin = self.start_origin()
        origin.route("/live/sh.flv", Synth())
        edge = self.start_edge(live_config(origin.url("/live/"),
                                           top={"workers": 2, "listen_mode": "shared"}))
        viewers = [self.viewer(edge, "/flv/sh.flv") for _ in range(10)]
        for v in viewers:
            self.assertEqual(v.status, 200, v.response)
            v.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
            check_join_sequence(v.tags, v.flv.flags)
        self.assertEqual(sum(edge.loop_metric("viewers")), 10)
        self.assertEqual(origin.connections("/live/sh.flv"), 1)


class TwoLoopsTest(MultiLoopBase):
    LOOPS = 2


class FourLoopsTest(MultiLoopBase):
    LOOPS = 4


del MultiLoopBase

if __name__ == "__main__":
    unittest.main()
