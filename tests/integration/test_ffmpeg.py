"""Real clients (ffprobe, ffmpeg) on real H.264 + AAC media, and ffmpeg as a real origin."""

import os
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (T, EdgeTestCase, ensure_media, ffprobe_streams, file_source, free_port,
                        have_ffmpeg, live_config, run, spawn, tcp_listening, wait_until)


def codecs(streams):
    return sorted(s.get("codec_name", "?") for s in streams)


@unittest.skipUnless(have_ffmpeg(), "ffmpeg/ffprobe not installed")
class FfmpegClientTest(EdgeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.media = ensure_media(seconds=10, size="640x360", fps=25, gop=50)

    def setUp(self):
        self.origin = self.start_origin()
        self.origin.route("/live/real.flv", file_source(self.media, loop=True))
        self.edge = self.start_edge(live_config(
            self.origin.url("/live/"),
            extra_resources=[{"name": "file", "prefix": "/file/", "type": "live",
                              "origin": "file:" + self.media}]))

    def probe(self, path, want):
        rc, streams, err = ffprobe_streams(self.edge.url(path), timeout=T(30))
        self.assertEqual(rc, 0, "ffprobe %s failed: %s" % (path, err))
        self.assertEqual(codecs(streams), want, "ffprobe %s: %r" % (path, streams))
        for s in streams:
            if s.get("codec_name") == "h264":
                self.assertEqual((s.get("width"), s.get("height")), ("640", "360"), s)
        self.assertEqual(err.strip(), "", "ffprobe complained")

    def test_ffprobe_sees_h264_and_aac(self):
        self.probe("/flv/real.flv", ["aac", "h264"])

    def test_ffprobe_only_audio(self):
        self.probe("/flv/real.flv?only_audio=1", ["aac"])

    def test_ffprobe_only_video(self):
        self.probe("/flv/real.flv?only_video=1", ["h264"])

    def test_ffmpeg_decodes_5_s_cleanly(self):
        r = run(["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", self.edge.url("/flv/real.flv"),
                 "-t", "5", "-f", "null", "-"], timeout=T(40))
        self.assertEqual(r.returncode, 0, "ffmpeg failed: %s" % r.stderr[-2000:])
        self.assertEqual(r.stderr.strip(), "", "ffmpeg complained")

    def test_file_origin_ffprobe(self):
        self.probe("/file/any.flv", ["aac", "h264"])

    def test_file_origin_ffmpeg_decodes_cleanly(self):
        r = run(["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", self.edge.url("/file/x.flv"),
                 "-t", "3", "-f", "null", "-"], timeout=T(40))
        self.assertEqual(r.returncode, 0, "ffmpeg failed: %s" % r.stderr[-2000:])
        self.assertEqual(r.stderr.strip(), "", "ffmpeg complained")


@unittest.skipUnless(have_ffmpeg(), "ffmpeg/ffprobe not installed")
class FfmpegOriginTest(EdgeTestCase):
    """ffmpeg's own HTTP server as the origin (code nobody here wrote), the edge in quick mode."""

    def test_ffmpeg_listen_origin_through_quick_mode(self):
        media = ensure_media(seconds=10, size="640x360", fps=25, gop=50)
        port = free_port()
        log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "fe-ffmpeg-origin-%d.log" % os.getpid())
        log = open(log_path, "wb")
        self.addCleanup(lambda: os.path.exists(log_path) and os.unlink(log_path))
        self.addCleanup(log.close)
        ff = spawn(["ffmpeg", "-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i", media,
                    "-c", "copy", "-f", "flv", "-flvflags", "no_duration_filesize",
                    "-content_type", "video/x-flv", "-listen", "1",
                    "http://127.0.0.1:%d/live.flv" % port], stderr=log, stdout=log)
        self.addCleanup(lambda: (ff.poll() is None and ff.kill(), ff.wait(10)))
        # A probing connect would use up ffmpeg's only client: look at the socket table instead.
        wait_until(lambda: tcp_listening(port) or ff.poll() is not None, T(20), "ffmpeg to listen")
        if ff.poll() is not None:
            with open(log_path, "rb") as f:
                self.fail("ffmpeg origin exited: %s" % f.read()[-1000:])
        edge = self.start_quick_edge("http://127.0.0.1:%d" % port)
        rc, streams, err = ffprobe_streams(edge.url("/live.flv"), timeout=T(30))
        self.assertEqual(rc, 0, "ffprobe through the edge failed: %s; edge log:\n%s"
                         % (err, edge.stderr_tail(2000)))
        self.assertEqual(codecs(streams), ["aac", "h264"], streams)
        # A second client joins the running stream (ffmpeg has only one: the edge).
        rc, streams, err = ffprobe_streams(edge.url("/live.flv"), timeout=T(30))
        self.assertEqual(rc, 0, "second ffprobe failed: %s" % err)
        self.assertEqual(codecs(streams), ["aac", "h264"], streams)


if __name__ == "__main__":
    unittest.main()
