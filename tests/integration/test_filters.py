"""?only_audio=1 and ?only_video=1: one track out of an A/V live stream."""

import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (AUDIO, SCRIPT, T, VIDEO, EdgeTestCase, Synth, check_join_sequence,
                        live_config)


class FilterTest(EdgeTestCase):
    def setUp(self):
        self.origin = self.start_origin()
        self.origin.route("/live/av.flv", Synth(gop=12))
        self.edge = self.start_edge(live_config(self.origin.url("/live/")))

    def test_only_audio(self):
        v = self.viewer(self.edge, "/flv/av.flv?only_audio=1")
        self.assertEqual(v.status, 200, v.response)
        v.read_until(lambda v: sum(t.is_audio for t in v.tags) >= 30, T(10), "30 audio tags")
        self.assertEqual(v.flv.flags, 0x04, "FLV header flags for only_audio")
        types = {t.type for t in v.tags}
        self.assertTrue(types <= {AUDIO, SCRIPT}, "tag types %r in an only_audio stream" % types)
        # A filtered viewer may go without onMetaData (it describes both tracks).
        check_join_sequence(v.tags, v.flv.flags, audio=True, video=False, metadata=None)

    def test_only_video(self):
        v = self.viewer(self.edge, "/flv/av.flv?only_video=1")
        self.assertEqual(v.status, 200, v.response)
        v.read_until(lambda v: sum(t.is_keyframe for t in v.tags) >= 2, T(10), "two keyframes")
        self.assertEqual(v.flv.flags, 0x01, "FLV header flags for only_video")
        types = {t.type for t in v.tags}
        self.assertTrue(types <= {VIDEO, SCRIPT}, "tag types %r in an only_video stream" % types)
        check_join_sequence(v.tags, v.flv.flags, audio=False, video=True, metadata=None)

    def test_filtered_viewers_get_the_same_tags_as_a_full_viewer(self):
        full = self.viewer(self.edge, "/flv/av.flv")
        full.read_media_ms(500)
        a = self.viewer(self.edge, "/flv/av.flv?only_audio=1")
        vid = self.viewer(self.edge, "/flv/av.flv?only_video=1")
        a.read_until(lambda v: sum(t.is_audio for t in v.tags) >= 40, T(10), "40 audio tags")
        vid.read_until(lambda v: sum(t.is_keyframe for t in v.tags) >= 2, T(10), "two keyframes")
        last = max(max(t.serial or 0 for t in a.tags), max(t.serial or 0 for t in vid.tags))
        full.read_until(lambda v: max(t.serial or 0 for t in v.tags) >= last, T(10), "the same serials")
        by_serial = {t.serial: t.key for t in full.tags if t.serial is not None}
        for viewer in (a, vid):
            for t in viewer.tags:
                if t.serial is not None:
                    self.assertEqual(by_serial.get(t.serial), t.key,
                                     "%s: tag %r differs from the full stream's" % (viewer.path, t))

    def test_both_filters_is_400(self):
        r = self.get(self.edge, "/flv/av.flv?only_audio=1&only_video=1")
        self.assertStatus(r, 400)
        self.assertTrue(r.body.strip(), "400 without a body")
        self.assertRegex(r.body.decode("utf-8", "replace"), "only_audio|only_video",
                         "the 400 body does not say what is wrong")

    def test_bad_values_are_400(self):
        for q in ("only_audio=yes", "only_video=abc", "only_video=2"):
            with self.subTest(query=q):
                r = self.get(self.edge, "/flv/av.flv?" + q)
                self.assertStatus(r, 400)
                self.assertTrue(r.body.strip(), "400 without a body")

    def test_filtered_viewer_shares_the_origin_connection(self):
        # Not spelled out in the spec, but one hub per stream means one pull for all variants.
        full = self.viewer(self.edge, "/flv/av.flv")
        full.read_media_ms(300)
        a = self.viewer(self.edge, "/flv/av.flv?only_audio=1")
        a.read_tags(10)
        vid = self.viewer(self.edge, "/flv/av.flv?only_video=1")
        vid.read_tags(10)
        self.assertEqual(self.origin.connections("/live/av.flv"), 1)


if __name__ == "__main__":
    unittest.main()
