"""Live basics: headers, joining at a keyframe, one origin pull shared by many viewers."""

import sys
import threading
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (T, EdgeTestCase, Synth, Viewer, chain, check_join_sequence,
                        check_monotonic, check_suffix, live_config,
                        media_from_first_keyframe, parse_flv_bytes, wait_until)


class LiveTest(EdgeTestCase):
    def setUp(self):
        self.origin = self.start_origin()
        self.edge = self.start_edge(live_config(self.origin.url("/live/")))

    def test_first_viewer_gets_headers_and_a_clean_join(self):
        self.origin.route("/live/s1.flv", Synth())
        v = self.viewer(self.edge, "/flv/s1.flv")
        r = v.response
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.version, "HTTP/1.1")
        self.assertEqual((r.header("Content-Type") or "").split(";")[0].strip(), "video/x-flv", r)
        self.assertIn("chunked", (r.header("Transfer-Encoding") or "").lower(), r)
        self.assertIsNone(r.header("Content-Length"), r)
        self.assertEqual(r.header("X-Cache-Status"), "MISS", r)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "*", r)
        v.read_until(lambda v: sum(t.is_keyframe for t in v.tags) >= 2, T(10), "two keyframes")
        check_join_sequence(v.tags, v.flv.flags)
        self.assertEqual(self.origin.connections("/live/s1.flv"), 1)

    def test_second_viewer_is_a_hit_on_the_same_origin_connection(self):
        self.origin.route("/live/s2.flv", Synth())
        v1 = self.viewer(self.edge, "/flv/s2.flv")
        self.assertEqual(v1.response.header("X-Cache-Status"), "MISS", v1.response)
        v1.read_media_ms(300)
        v2 = self.viewer(self.edge, "/flv/s2.flv")
        self.assertEqual(v2.status, 200, v2.response)
        self.assertEqual(v2.response.header("X-Cache-Status"), "HIT", v2.response)
        self.assertEqual(v2.response.header("Access-Control-Allow-Origin"), "*", v2.response)
        v2.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
        check_join_sequence(v2.tags, v2.flv.flags)
        self.assertEqual(self.origin.connections("/live/s2.flv"), 1)

    def test_cors_preflight(self):
        self.origin.route("/live/s3.flv", Synth())
        r = self.get(self.edge, "/flv/s3.flv", method="OPTIONS", headers={
            "Origin": "http://player.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range"})
        self.assertTrue(200 <= r.status < 300, r)
        methods = [m.strip().upper() for m in (r.header("Access-Control-Allow-Methods") or "").split(",")]
        self.assertIn("GET", methods, r)
        allowed = [h.strip().lower() for h in (r.header("Access-Control-Allow-Headers") or "").split(",")]
        self.assertTrue("range" in allowed or "*" in allowed, r)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "*", r)

    def test_head_gives_headers_without_body(self):
        self.origin.route("/live/s4.flv", Synth())
        v = self.viewer(self.edge, "/flv/s4.flv", method="HEAD", headers={"Connection": "close"})
        r = v.response
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.header("Content-Type") or "").split(";")[0].strip(), "video/x-flv", r)
        # Connection: close, so the server closes after the head; nothing may follow it.
        self.assertTrue(v.conn.wait_closed(T(10)), "HEAD with Connection: close: not closed")
        self.assertEqual(bytes(v.conn.buf), b"", "bytes after a HEAD response head")
        self.assertEqual(v.conn.bytes_received, len(r.raw_head) + 4,
                         "bytes after a HEAD response head")

    def test_http10_viewer_gets_a_close_delimited_body(self):
        self.origin.route("/live/s5.flv", Synth(duration_ms=2000))
        v = self.viewer(self.edge, "/flv/s5.flv", version="HTTP/1.0")
        r = v.response
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("chunked", (r.header("Transfer-Encoding") or "").lower(), r)
        self.assertIsNone(r.header("Content-Length"), r)
        self.assertEqual(v.conn.framing, "close")
        # The raw body parses as FLV (chunk size lines would break it) and ends with the stream.
        v.read_to_end(T(15))
        check_join_sequence(v.tags, v.flv.flags)
        self.assertTrue(v.flv.at_boundary(), "body ended inside a tag")
        expected = parse_flv_bytes(Synth(duration_ms=2000).to_bytes()).tags
        self.assertEqual([t.key for t in v.tags], [t.key for t in expected])

    def _origin_mode(self, mode, **route_kw):
        path = "/live/mode_%s.flv" % mode
        src = Synth(duration_ms=1500)
        self.origin.route(path, src, mode=mode, **route_kw)
        v = self.viewer(self.edge, "/flv/mode_%s.flv" % mode)
        self.assertEqual(v.status, 200, v.response)
        self.assertTrue(v.read_to_end(T(15)), "%s origin: viewer body did not end cleanly" % mode)
        self.assertTrue(v.flv.at_boundary(), "body ended inside a tag")
        expected = parse_flv_bytes(src.to_bytes())
        self.assertEqual(v.flv.flags, expected.flags)
        got = [t.key for t in v.tags]
        want = [t.key for t in expected.tags]
        self.assertEqual(len(got), len(want), "%s origin: %d tags, origin sent %d" % (mode, len(got), len(want)))
        self.assertEqual(got, want, "%s origin: tags differ from what the origin sent" % mode)
        check_monotonic(v.tags)
        self.assertEqual(self.origin.connections(path), 1)

    def test_origin_chunked(self):
        self._origin_mode("chunked", chunk_size=777)  # chunks split tags anywhere

    def test_origin_close_delimited(self):
        self._origin_mode("close")

    def test_origin_content_length(self):
        self._origin_mode("length")

    def test_many_viewers_share_one_origin_connection(self):
        n_early, n_late = 10, 10
        path = "/live/many.flv"
        self.origin.route(path, Synth(duration_ms=4000, gop=12))
        first = self.viewer(self.edge, "/flv/many.flv")
        self.assertEqual(first.response.header("X-Cache-Status"), "MISS", first.response)
        viewers = [first]
        errors = []
        lock = threading.Lock()

        def run(v, opened):
            try:
                if not opened:
                    v.open()
                v.read_to_end(T(25))
            except BaseException as e:  # reported below
                with lock:
                    errors.append("%s: %s" % (v.path, e))

        threads = [threading.Thread(target=run, args=(first, True))]
        for i in range(n_early):
            v = Viewer(self.edge.port, "/flv/many.flv")
            self.addCleanup(v.close)
            viewers.append(v)
            threads.append(threading.Thread(target=run, args=(v, False)))
        for t in threads:
            t.start()
        # The late ones join once the stream is well under way (past several keyframes).
        wait_until(lambda: max((t.ts for t in list(first.tags) if t.is_media), default=0) >= 1500,
                   T(10), "1.5 s of media at the first viewer")
        late = []
        for i in range(n_late):
            v = Viewer(self.edge.port, "/flv/many.flv")
            self.addCleanup(v.close)
            late.append(v)
            th = threading.Thread(target=run, args=(v, False))
            threads.append(th)
            th.start()
        for t in threads:
            t.join(T(40))
        self.assertFalse(errors, "\n".join(errors))
        self.assertEqual(self.origin.connections(path), 1,
                         "origin connections for %d viewers" % (1 + n_early + n_late))
        for v in late:
            self.assertEqual(v.response.header("X-Cache-Status"), "HIT", v.response)
        reference = [t.key for t in media_from_first_keyframe(first.tags)]
        for v in viewers + late:
            self.assertEqual(v.status, 200)
            self.assertTrue(v.clean_end, "%s: body did not end cleanly" % v.path)
            check_join_sequence(v.tags, v.flv.flags)
            check_suffix(reference, [t.key for t in media_from_first_keyframe(v.tags)])
        # The late joiners did not start at the very beginning.
        first_key = reference[0]
        for v in late:
            self.assertNotEqual(media_from_first_keyframe(v.tags)[0].key, first_key,
                                "a late joiner started at the stream's first keyframe")

    def test_late_joiner_starts_at_a_recent_keyframe(self):
        gop = 12  # a keyframe every 480 ms
        self.origin.route("/live/late.flv", Synth(gop=gop))
        v1 = self.viewer(self.edge, "/flv/late.flv")
        v1.read_media_ms(2500, T(15))
        newest_serial = max(t.serial for t in v1.tags if t.serial is not None)
        v2 = self.viewer(self.edge, "/flv/late.flv")
        self.assertEqual(v2.response.header("X-Cache-Status"), "HIT", v2.response)
        v2.read_until(lambda v: sum(t.is_keyframe for t in v.tags) >= 2, T(10), "two keyframes")
        check_join_sequence(v2.tags, v2.flv.flags)
        # The header tags are the stream's own.
        for a, b in zip(v1.tags[:3], v2.tags[:3]):
            self.assertEqual((a.type, a.size, a.crc), (b.type, b.size, b.crc))
        later = media_from_first_keyframe(v2.tags)
        k = later[0]
        k1 = media_from_first_keyframe(v1.tags)[0]
        self.assertGreater(k.serial, k1.serial, "late joiner started at the first keyframe")
        # window_seconds = 0: the join point is the current GOP, not older ones (serials count
        # all tags: about 68 per second; one GOP of 480 ms is about 33 of them; allow two GOPs).
        self.assertGreaterEqual(k.serial, newest_serial - 2 * 33,
                                "late joiner started %d tags behind the live point"
                                % (newest_serial - k.serial))
        # Same tags as the first viewer from there on.
        last = later[-1].serial
        v1.read_until(lambda v: any(t.serial == last for t in v.tags), T(10), "the late joiner's tags")
        check_suffix([t.key for t in media_from_first_keyframe(v1.tags)], [t.key for t in later],
                     "late joiner", to_end=False)
    def test_viewers_arriving_while_the_origin_is_pending_share_one_pull(self):
        path = "/live/pending.flv"
        # The origin takes a moment to answer: all these requests arrive before it does.
        self.origin.route(path, Synth(gop=12), header_delay=0.7)
        viewers = [Viewer(self.edge.port, "/flv/pending.flv") for _ in range(10)]
        for v in viewers:
            self.addCleanup(v.close)
        for v in viewers:
            self.assertEqual(v.open(T(15)).status, 200, v.response)
        for v in viewers:
            v.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
            check_join_sequence(v.tags, v.flv.flags)
        self.assertEqual(self.origin.connections(path), 1,
                         "viewers that arrived during the origin's connect each pulled it")

    def test_audio_only_origin(self):
        self.origin.route("/live/ao.flv", Synth(video=False))
        v = self.viewer(self.edge, "/flv/ao.flv")
        self.assertEqual(v.status, 200, v.response)
        v.read_until(lambda v: sum(t.is_audio for t in v.tags) >= 40, T(10), "40 audio tags")
        self.assertEqual(v.flv.flags, 0x04)
        check_join_sequence(v.tags, v.flv.flags, audio=True, video=False)
        v2 = self.viewer(self.edge, "/flv/ao.flv")
        v2.read_until(lambda v: sum(t.is_audio for t in v.tags) >= 10, T(10),
                      "10 audio tags for a second viewer of an audio-only stream")
        check_join_sequence(v2.tags, v2.flv.flags, audio=True, video=False)

    def test_video_only_origin(self):
        self.origin.route("/live/vo.flv", Synth(audio=False, gop=12))
        v = self.viewer(self.edge, "/flv/vo.flv")
        v.read_until(lambda v: sum(t.is_keyframe for t in v.tags) >= 2, T(10), "two keyframes")
        self.assertEqual(v.flv.flags, 0x01)
        check_join_sequence(v.tags, v.flv.flags, audio=False, video=True)

    def test_timestamps_past_24_bits(self):
        # The extended timestamp byte: the stream crosses 2^24 ms (about 4.66 hours).
        start = (1 << 24) - 600
        self.origin.route("/live/ext.flv", Synth(start_ts=start, gop=12))
        v = self.viewer(self.edge, "/flv/ext.flv")
        v.read_until(lambda v: max((t.ts for t in v.tags if t.is_media), default=0) >= (1 << 24) + 600,
                     T(10), "media past 2^24 ms")
        check_join_sequence(v.tags, v.flv.flags)
        v2 = self.viewer(self.edge, "/flv/ext.flv")
        v2.read_until(lambda v: sum(t.is_keyframe for t in v.tags) >= 2, T(10), "two keyframes")
        check_join_sequence(v2.tags, v2.flv.flags)
        self.assertGreaterEqual(max(t.ts for t in v2.tags), 1 << 24)

    def test_late_joiner_gets_the_current_sequence_headers(self):
        # At 1 s the origin changes codec configuration (new SPS, new AAC config, new metadata).
        first = Synth(duration_ms=1000, gop=12)
        second = Synth(start_ts=1000, gop=12, variant=1, file_header=False, serial_base=1000000)
        self.origin.route("/live/reconf.flv", chain(first, second))
        v1 = self.viewer(self.edge, "/flv/reconf.flv")
        v1.read_media_ms(1600, T(10))
        # The early viewer got both configurations, in stream order.
        seqs = [t for t in v1.tags if t.is_seq_header]
        self.assertEqual(len(seqs), 4, "sequence headers seen by the early viewer: %r" % seqs)
        new_seq = {t.type: (t.size, t.crc) for t in seqs[2:]}
        new_meta = [t for t in v1.tags if t.is_metadata][-1]
        v2 = self.viewer(self.edge, "/flv/reconf.flv")
        v2.read_until(lambda v: sum(t.is_keyframe for t in v.tags) >= 2, T(10), "two keyframes")
        check_join_sequence(v2.tags, v2.flv.flags)
        got = {t.type: (t.size, t.crc) for t in v2.tags[1:3]}
        self.assertEqual(got, new_seq, "a late joiner got stale sequence headers: %r" % v2.tags[:4])
        self.assertEqual((v2.tags[0].size, v2.tags[0].crc), (new_meta.size, new_meta.crc),
                         "a late joiner got stale onMetaData")
        self.assertEqual(sum(t.is_seq_header for t in v2.tags), 2,
                         "a late joiner got more sequence headers than the current ones")


if __name__ == "__main__":
    unittest.main()
