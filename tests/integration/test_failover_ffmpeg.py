"""
Failover with real clients on real H.264 + AAC: ffmpeg -xerror decodes through the edge across the
primary's death with no error, and ffprobe -show_packets finds every track's timestamps increasing
in what a viewer received; the same across a switch to a backup encoding at another resolution
(new sequence headers in the middle of the stream), whose frames ffprobe decodes at the new size.
"""

import os
import re
import shutil
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (T, EdgeTestCase, FlvReader, HttpConn, ensure_media, file_source,
                        have_ffmpeg, live_config, media_span_ms, run, spawn)


@unittest.skipUnless(have_ffmpeg(), "ffmpeg/ffprobe not installed")
class FfmpegFailoverTest(EdgeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.main = ensure_media(seconds=10, size="640x360", fps=25, gop=50)
        cls.small = ensure_media(seconds=10, size="320x240", fps=25, gop=50)

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="flvedge-fo-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.a = self.start_origin()
        self.b = self.start_origin()

    def run_across_kill(self, backup_media):
        self.a.route("/live/s.flv", file_source(self.main, loop=True))
        self.b.route("/live/s.flv", file_source(backup_media, loop=True))
        edge = self.start_edge(live_config([self.a.url("/live/"), self.b.url("/live/")],
                                           origin_connect_timeout=1, origin_read_timeout=1))
        url = edge.url("/flv/s.flv")
        err_path = os.path.join(self.dir, "ffmpeg.err")
        with open(err_path, "wb") as err:
            ff = spawn(["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", url, "-t", "6",
                        "-f", "null", "-"], stdout=open(os.devnull, "wb"), stderr=err)
        self.addCleanup(lambda: ff.poll() is None and ff.kill())
        # What a viewer receives, kept for ffprobe.
        conn = HttpConn(edge.port, "/flv/s.flv")
        self.addCleanup(conn.close)
        self.assertEqual(conn.read_head(T(10)).status, 200)
        flv = FlvReader()
        cap_path = os.path.join(self.dir, "capture.flv")
        killed = None
        deadline = time.monotonic() + T(20)
        with open(cap_path, "wb") as cap:
            while time.monotonic() < deadline:
                data = conn.read_body_some(T(5))
                self.assertTrue(data, "the viewer's body ended")
                cap.write(data)
                flv.feed(data)
                span = media_span_ms(flv.tags)
                if killed is None and span >= 2000:
                    killed = self.a.kill()
                if span >= 6000:
                    break
        self.assertIsNotNone(killed)
        rc = ff.wait(T(30))
        with open(err_path) as f:
            complaints = f.read()
        self.assertEqual(rc, 0, "ffmpeg failed across the failover: %s" % complaints[-2000:])
        self.assertEqual(complaints.strip(), "", "ffmpeg complained")
        self.assertGreater(edge.metric("flvedge_origin_failovers_total"), 0)
        return cap_path

    def check_packets(self, cap_path):
        r = run(["ffprobe", "-v", "error", "-show_entries", "packet=stream_index,dts",
                 "-of", "csv=p=0", cap_path], timeout=T(60))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr.strip(), "", "ffprobe complained")
        last = {}
        n = 0
        for line in r.stdout.split():
            idx, dts = line.split(",")[:2]
            if dts in ("", "N/A"):
                continue
            dts = float(dts)
            if idx in last:
                self.assertGreater(dts, last[idx], "stream %s: dts %s after %s" % (idx, dts, last[idx]))
            last[idx] = dts
            n += 1
        self.assertGreater(n, 200, "too few packets")
        self.assertEqual(len(last), 2, "want audio and video packets")

    def frame_sizes(self, cap_path):
        """The sizes of the decoded video frames. ffmpeg decodes (showinfo prints each frame):
        ffprobe -show_frames of Debian's 5.1 crashes after the last frame of a stream whose size
        changed, having printed every frame right."""
        r = run(["ffmpeg", "-nostdin", "-xerror", "-i", cap_path, "-map", "0:v", "-vf", "showinfo",
                 "-f", "null", "-"], timeout=T(60))
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        return set(re.findall(r" s:(\d+x\d+) ", r.stderr))

    def test_ffmpeg_decodes_across_a_primary_kill(self):
        cap = self.run_across_kill(self.main)
        self.check_packets(cap)
        self.assertEqual(self.frame_sizes(cap), {"640x360"})

    def test_ffmpeg_decodes_across_a_switch_to_another_resolution(self):
        cap = self.run_across_kill(self.small)
        self.check_packets(cap)
        self.assertEqual(self.frame_sizes(cap), {"640x360", "320x240"})


if __name__ == "__main__":
    unittest.main(verbosity=2)
