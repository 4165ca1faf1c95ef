"""origin = "file:PATH": one FLV file played as an endless live stream, in real time."""

import os
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (T, EdgeTestCase, Synth, check_join_sequence, check_monotonic, ensure_media,
                        have_ffmpeg, media_from_first_keyframe, read_flv_file)


@unittest.skipUnless(have_ffmpeg(), "ffmpeg not installed (needed to make the media)")
class FileSourceTest(EdgeTestCase):
    @classmethod
    def setUpClass(cls):
        # 3 s, a keyframe every second.
        cls.media = ensure_media(seconds=3, size="320x180", fps=25, gop=25, vbitrate="300k")
        _, tags = read_flv_file(cls.media)
        cls.duration_ms = max(ts for _, ts, _, _ in tags) + 40

    def _plays_forever(self, edge, path):
        v = self.viewer(edge, path)
        self.assertEqual(v.status, 200, v.response)
        self.assertEqual(v.response.header("X-Cache-Status"), "MISS", v.response)
        want_ms = int(self.duration_ms * 1.6)
        t0 = time.monotonic()
        v.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
        t_first = time.monotonic()
        media = lambda: media_from_first_keyframe(v.tags)
        v.read_until(lambda v: media()[-1].ts - media()[0].ts >= want_ms if media() else False,
                     want_ms / 1000.0 + T(10), "%d ms of media" % want_ms)
        elapsed = time.monotonic() - t_first
        m = media()
        span = (m[-1].ts - m[0].ts) / 1000.0
        check_join_sequence(v.tags, v.flv.flags)
        check_monotonic(v.tags)
        # Real time: not much faster than the clock (a GOP of head start is fine) ...
        self.assertGreater(elapsed, span - 1.5,
                           "%.1f s of media arrived in %.1f s: faster than real time" % (span, elapsed))
        # ... and not slower either.
        self.assertLess(elapsed, span + T(1.5), "%.1f s of media took %.1f s" % (span, elapsed))
        keys = [t.ts for t in m if t.is_keyframe]
        self.assertGreaterEqual(len(keys), 4, "keyframes at %r" % keys)
        gaps = [b - a for a, b in zip(keys, keys[1:])]
        self.assertLessEqual(max(gaps), 1500, "keyframe gaps %r (file has one every second)" % gaps)
        for kind in (8, 9):
            ts = [t.ts for t in m if t.type == kind]
            self.assertGreater(ts[-1] - ts[0], self.duration_ms, "type %d did not loop" % kind)
            jumps = [b - a for a, b in zip(ts, ts[1:])]
            self.assertLess(max(jumps), 1000, "type %d: timestamp jumps %r across the loop"
                            % (kind, sorted(jumps)[-3:]))
        return v

    def test_absolute_path_plays_past_the_end_of_the_file(self):
        edge = self.start_edge({"resources": [{"name": "f", "prefix": "/flv/", "type": "live",
                                               "origin": "file:" + self.media}]})
        self._plays_forever(edge, "/flv/demo.flv")

    def test_relative_path_is_relative_to_the_config_file(self):
        with open(self.media, "rb") as f:
            data = f.read()
        edge = self.start_edge({"resources": [{"name": "f", "prefix": "/flv/", "type": "live",
                                               "origin": "file:media/demo.flv"}]},
                               files={"media/demo.flv": data})
        self._plays_forever(edge, "/flv/demo.flv")

    def test_two_viewers_share_the_file_stream(self):
        edge = self.start_edge({"resources": [{"name": "f", "prefix": "/flv/", "type": "live",
                                               "origin": "file:" + self.media}]})
        a = self.viewer(edge, "/flv/demo.flv")
        a.read_tags(30)
        b = self.viewer(edge, "/flv/demo.flv")
        self.assertEqual(b.response.header("X-Cache-Status"), "HIT", b.response)
        b.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
        check_join_sequence(b.tags, b.flv.flags)

    def test_directory_origin(self):
        with open(self.media, "rb") as f:
            data = f.read()
        edge = self.start_edge({"resources": [{"name": "f", "prefix": "/flv/", "type": "live",
                                               "origin": "file:media/"}]},
                               files={"media/one.flv": data, "secret.flv": data})
        v = self.viewer(edge, "/flv/one.flv")
        self.assertEqual(v.status, 200, v.response)
        v.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
        check_join_sequence(v.tags, v.flv.flags)
        self.assertStatus(self.get(edge, "/flv/missing.flv"), 404)
        # Nothing outside the directory.
        for path in ("/flv/../secret.flv", "/flv/..%2Fsecret.flv", "/flv/%2E%2E/secret.flv"):
            with self.subTest(path=path):
                r = self.get(edge, path)
                self.assertIn(r.status, (400, 403, 404), "%s -> %d" % (path, r.status))

class SharedFileTest(EdgeTestCase):
    """A file is loaded once and played by every stream of it; a file changed on disk is read
    again for the streams that open after the change."""

    def _seq_crc(self, edge, path):
        v = self.viewer(edge, path)
        self.assertEqual(v.status, 200, v.response)
        v.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
        check_join_sequence(v.tags, v.flv.flags)
        return [t for t in v.tags if t.is_video and t.is_seq_header][0].crc

    def test_a_file_changed_on_disk_is_read_again_for_new_streams(self):
        old = Synth(duration_ms=3000).to_bytes()
        new = Synth(duration_ms=3000, variant=1).to_bytes()
        edge = self.start_edge({"resources": [{"name": "f", "prefix": "/flv/", "type": "live",
                                               "origin": "file:one.flv"}]},
                               files={"one.flv": old})
        a = self._seq_crc(edge, "/flv/a.flv")  # stays open: the old copy stays in use
        path = os.path.join(edge.dir, "one.flv")
        with open(path + ".new", "wb") as f:
            f.write(new)
        os.replace(path + ".new", path)
        b = self._seq_crc(edge, "/flv/b.flv")
        self.assertNotEqual(a, b, "a stream opened after the change plays the old file")
        self.assertEqual(self._seq_crc(edge, "/flv/c.flv"), b)

    def test_each_resource_checks_its_max_tag_size_on_a_shared_file(self):
        res = {"type": "live", "origin": "file:one.flv"}
        edge = self.start_edge({"resources": [dict(res, name="big", prefix="/big/"),
                                              dict(res, name="small", prefix="/small/",
                                                   max_tag_size=1024)]},
                               files={"one.flv": Synth(duration_ms=3000, ksize=6000).to_bytes()})
        self._seq_crc(edge, "/big/s.flv")
        self.assertStatus(self.get(edge, "/small/s.flv"), 502)
        self._seq_crc(edge, "/big/t.flv")


if __name__ == "__main__":
    unittest.main()
