"""
A viewer that does not keep up must not hold back the others nor grow the edge's memory: it is
moved forward to a newer keyframe (flvedge_viewer_jumps_total) or cut off after
slow_viewer_timeout (flvedge_viewers_kicked_total).
"""

import os
import struct
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (SANITIZED, T, EdgeTestCase, Synth, Viewer, check_join_sequence,
                        live_config, wait_until)

PATH = "/live/big.flv"
LAG_LIMIT = 2.5 if SANITIZED else 1.2   # seconds from the origin's send to a normal viewer
RSS_GROWTH_LIMIT_KB = 64 * 1024


def frame_no(tag):
    """The Synth video frame number of a video tag (None for others)."""
    if tag.is_video and tag.head[5:7] == b"FE":
        return struct.unpack(">I", tag.head[11:15])[0]
    return None


class NormalViewer(threading.Thread):
    def __init__(self, test, port, origin):
        super().__init__(daemon=True)
        self.v = Viewer(port, "/flv/big.flv", digest=False)
        test.addCleanup(self.v.close)
        self.origin = origin
        self.stop = threading.Event()
        self.max_lag = 0.0
        self.lag_at = None
        self.error = None
        self.newest_ts = -1

    def run(self):
        try:
            self.v.open()
            warm = time.monotonic() + 1.5
            sent = self.origin.sent_at.setdefault(PATH, {})
            while not self.stop.is_set():
                try:
                    new = self.v.pump(1.0)
                except TimeoutError:
                    new = []
                if self.v.ended:
                    raise AssertionError("normal viewer's body ended (clean=%s)" % self.v.clean_end)
                for t in new:
                    if t.is_media:
                        self.newest_ts = max(self.newest_ts, t.ts)
                    s = t.serial
                    if s is None or t.recv_time < warm:
                        continue
                    at = sent.get(s)
                    if at is not None and t.recv_time - at > self.max_lag:
                        self.max_lag = t.recv_time - at
                        self.lag_at = t
        except BaseException as e:
            self.error = e


class SlowViewerTest(EdgeTestCase):
    def start(self, slow_viewer_timeout, window_bytes):
        self.origin = self.start_origin()
        # About 2.8 MB/s: 25 fps, 100 kB frames, 300 kB keyframes every second.
        self.origin.route(PATH, Synth(fps=25, gop=25, vsize=100_000, ksize=300_000, asize=400),
                          track_send_times=True)
        env = {}
        if SANITIZED:
            # ASan's quarantine keeps freed memory (256 MB by default): RSS would measure it.
            env["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=16").lstrip(":")
        self.edge = self.start_edge(live_config(self.origin.url("/live/"),
                                                slow_viewer_timeout=slow_viewer_timeout,
                                                window_bytes=window_bytes, linger=0), env=env)
        self.normal = [NormalViewer(self, self.edge.port, self.origin) for _ in range(3)]
        for n in self.normal:
            n.start()
        self.addCleanup(self._stop_normal)
        wait_until(lambda: all(n.newest_ts >= 1000 for n in self.normal) or any(n.error for n in self.normal),
                   T(15), "1 s of media at the normal viewers")
        self._check_normal()
        self.baseline_kb = self.edge.rss_kb()
        self.max_rss_kb = self.baseline_kb
        self.rss_stop = threading.Event()
        self.rss_thread = threading.Thread(target=self._sample_rss, daemon=True)
        self.rss_thread.start()
        self.addCleanup(self.rss_stop.set)

    def _sample_rss(self):
        while not self.rss_stop.wait(0.1):
            try:
                self.max_rss_kb = max(self.max_rss_kb, self.edge.rss_kb())
            except (OSError, AssertionError):
                return

    def _stop_normal(self):
        for n in self.normal:
            n.stop.set()
        for n in self.normal:
            n.join(5)

    def _check_normal(self):
        for n in self.normal:
            if n.error:
                raise AssertionError("normal viewer failed: %s" % n.error)

    def _check_others_unaffected(self):
        self._check_normal()
        for n in self.normal:
            self.assertLess(n.max_lag, LAG_LIMIT, "a normal viewer lagged %.2f s behind the origin at %r"
                            % (n.max_lag, n.lag_at))
        growth = self.max_rss_kb - self.baseline_kb
        self.assertLess(growth, RSS_GROWTH_LIMIT_KB,
                        "edge RSS grew by %d MB (baseline %d MB)" % (growth // 1024, self.baseline_kb // 1024))

    def _media_advance(self, ms):
        """Waits until the first normal viewer's media has advanced `ms` from now."""
        start = self.normal[0].newest_ts
        wait_until(lambda: self.normal[0].newest_ts >= start + ms or self.normal[0].error,
                   ms / 1000.0 + T(10), "%d ms more media at a normal viewer" % ms)
        self._check_normal()

    def test_stalling_reader_is_moved_forward_or_cut(self):
        # The window holds about 1.1 s of this stream; a viewer stalls 2 s at a time, within
        # slow_viewer_timeout: it falls off the window and must be moved forward (or cut).
        self.start(slow_viewer_timeout=5, window_bytes=3 * 1048576)
        slow = Viewer(self.edge.port, "/flv/big.flv", rcvbuf=4096, digest=False)
        self.addCleanup(slow.close)
        r = slow.open()
        self.assertEqual(r.status, 200, r)
        sent = self.origin.sent_at[PATH]
        for cycle in range(3):
            # Stall (shorter than slow_viewer_timeout), then read until caught up again.
            self._media_advance(2000)
            deadline = time.monotonic() + T(10)
            while not slow.ended and time.monotonic() < deadline:
                try:
                    new = slow.pump(1.0)
                except TimeoutError:
                    continue
                caught_up = [t for t in new if t.serial in sent
                             and time.monotonic() - sent[t.serial] < 0.5]
                if caught_up:
                    break
            if slow.ended:
                break
        m = self.edge.metrics()
        jumps = m.get("flvedge_viewer_jumps_total", 0)
        kicked = m.get("flvedge_viewers_kicked_total", 0)
        frames = [(frame_no(t), t) for t in slow.tags if frame_no(t) is not None]
        gaps = [(a, b) for (a, _), (b, _) in zip(frames, frames[1:]) if b != a + 1]
        self.assertTrue(jumps > 0 or kicked >= 1,
                        "neither flvedge_viewer_jumps_total (%s) nor flvedge_viewers_kicked_total (%s) "
                        "moved for a stalling viewer" % (jumps, kicked))
        self.assertTrue(gaps or slow.ended,
                        "the stalling viewer was neither moved forward (no gap in its frames) nor cut off")
        # Wherever it was moved to, it resumed at a keyframe, with valid FLV all along.
        by_no = {no: t for no, t in frames}
        for a, b in gaps:
            self.assertTrue(by_no[b].is_keyframe, "after a jump (frame %d -> %d) the viewer resumed "
                            "at a non-keyframe %r" % (a, b, by_no[b]))
            self.assertGreater(b, a, "jumped backwards: frame %d -> %d" % (a, b))
        check_join_sequence(slow.tags[:3], slow.flv.flags)
        self._check_others_unaffected()

    def test_trickling_reader_is_moved_forward_or_cut(self):
        # Reads steadily at about a quarter of the stream's rate: its writes complete, so it is
        # never pending for long, yet it falls further behind unless the edge moves it forward.
        self.start(slow_viewer_timeout=2, window_bytes=3 * 1048576)
        # A small receive buffer, so that the kernel does not hold seconds of stream for it.
        slow = Viewer(self.edge.port, "/flv/big.flv", digest=False, rcvbuf=16384)
        self.addCleanup(slow.close)
        self.assertEqual(slow.open().status, 200)
        sent = self.origin.sent_at[PATH]
        t_end = time.monotonic() + 8
        while time.monotonic() < t_end and not slow.ended:
            try:
                slow.pump(0.5, max_recv=32768)
            except TimeoutError:
                pass
            time.sleep(0.05)  # the reader's own pace (about 650 kB/s), not a wait for the edge
        m = self.edge.metrics()
        jumps = m.get("flvedge_viewer_jumps_total", 0)
        kicked = m.get("flvedge_viewers_kicked_total", 0)
        self.assertTrue(jumps > 0 or kicked >= 1,
                        "neither flvedge_viewer_jumps_total (%s) nor flvedge_viewers_kicked_total (%s) "
                        "moved for a viewer reading at a quarter of the stream's rate" % (jumps, kicked))
        self._check_others_unaffected()
        if kicked >= 1:
            # It was cut (the normal viewers are fine, so it was this one). The kernel may still
            # hold megabytes queued for it; once those are read, the connection must be over.
            try:
                slow.read_to_end(T(15))
            except AssertionError:
                self.fail("flvedge_viewers_kicked_total is %s but the trickling viewer's "
                          "connection did not end" % kicked)
        else:
            newest = max((t.serial for t in slow.tags if t.serial in sent), default=None)
            self.assertIsNotNone(newest, "the trickling viewer got no media")
            lag = time.monotonic() - sent[newest]
            # Window (~1.1 s here) plus socket buffers: a viewer that is moved forward whenever it
            # falls off the window cannot be far behind.
            self.assertLess(lag, 6.0 if SANITIZED else 4.0,
                            "the trickling viewer is %.1f s behind the live point" % lag)
        frames = [(frame_no(t), t) for t in slow.tags if frame_no(t) is not None]
        for (a, _), (b, tb) in zip(frames, frames[1:]):
            if b != a + 1:
                self.assertGreater(b, a, "jumped backwards: frame %d -> %d" % (a, b))
                self.assertTrue(tb.is_keyframe, "resumed at a non-keyframe after a jump: %r" % tb)
        self._check_others_unaffected()

    def test_reader_that_never_reads_is_kicked(self):
        self.start(slow_viewer_timeout=2, window_bytes=8 * 1048576)
        slow = Viewer(self.edge.port, "/flv/big.flv", rcvbuf=4096, digest=False)
        self.addCleanup(slow.close)
        self.assertEqual(slow.open().status, 200)
        t0 = time.monotonic()
        wait_until(lambda: (self.edge.metric("flvedge_viewers_kicked_total") or 0) >= 1,
                   2 + T(10), "flvedge_viewers_kicked_total >= 1 (slow_viewer_timeout = 2)")
        kicked_after = time.monotonic() - t0
        self.assertGreater(kicked_after, 1.5, "kicked after %.2f s; slow_viewer_timeout is 2 s" % kicked_after)
        self.assertTrue(slow.conn.wait_closed(T(10)), "kicked viewer's connection still open")
        wait_until(lambda: self.edge.metric("flvedge_viewers") == len(self.normal), T(5),
                   "flvedge_viewers back to the normal viewers")
        self._media_advance(1000)
        self._check_others_unaffected()


if __name__ == "__main__":
    unittest.main()
