"""What viewers see when the origin fails: statuses, timeouts, ends, stalls, malformed FLV."""

import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (T, EdgeTestCase, Synth, check_join_sequence, chain, flv_tag,
                        free_port, live_config, raw_source, tag_header_only, VIDEO, wait_until)


class OriginStatusTest(EdgeTestCase):
    def setUp(self):
        self.origin = self.start_origin()
        self.edge = self.start_edge(live_config(self.origin.url("/live/"),
                                                origin_connect_timeout=1, origin_read_timeout=1))

    def _passes_through_uncached(self, status, body):
        path = "/live/st%d.flv" % status
        self.origin.route(path, status=status, body=body)
        r = self.get(self.edge, "/flv/st%d.flv" % status)
        self.assertStatus(r, status)
        self.assertEqual(r.body, body, "the origin's body")
        self.assertEqual(self.origin.connections(path), 1)
        r = self.get(self.edge, "/flv/st%d.flv" % status)
        self.assertStatus(r, status)
        self.assertEqual(self.origin.connections(path), 2, "a %d was cached" % status)
        # Once the origin is fine again, so is the stream.
        self.origin.route(path, Synth())
        v = self.viewer(self.edge, "/flv/st%d.flv" % status)
        self.assertEqual(v.status, 200, v.response)
        v.read_media_ms(200)

    def test_origin_404(self):
        self._passes_through_uncached(404, b"no such stream here\n")

    def test_origin_503(self):
        self._passes_through_uncached(503, b"origin overloaded, try later\n")

    def test_unreachable_origin_is_502(self):
        port = free_port()
        edge = self.start_edge(live_config("http://127.0.0.1:%d/live/" % port,
                                           origin_connect_timeout=1, origin_read_timeout=1))
        t0 = time.monotonic()
        r = self.get(edge, "/flv/x.flv", timeout=T(10))
        self.assertStatus(r, 502)
        self.assertLess(time.monotonic() - t0, T(3), "a refused connection took this long")

    def test_a_config_origin_too_long_with_the_stream_name_is_500_and_logged(self):
        # An origin that fits the config but not with /NAME.flv after it is never cut short (that
        # would be another URL). No policy is involved, and the answer does not say one failed.
        base = self.origin.url("/live/")
        base += "a" * (4090 - len(base))
        edge = self.start_edge(live_config(base))
        r = self.get(edge, "/flv/s.flv")
        self.assertStatus(r, 500)
        self.assertEqual(r.body, b"500 origin URL too long\n")
        edge.wait_log("resource", "origin 1 with the stream name is longer than 4095 bytes")
        self.assertEqual(len(self.origin.requests), 0, "a URL cut short reached the origin")

    def test_silent_origin_is_504_after_the_timeouts(self):
        self.origin.route("/live/silent.flv", silent=True)
        t0 = time.monotonic()
        r = self.get(self.edge, "/flv/silent.flv", timeout=T(20))
        elapsed = time.monotonic() - t0
        self.assertStatus(r, 504)
        self.assertGreater(elapsed, 0.8, "504 before any timeout could expire")
        self.assertLess(elapsed, 2 + T(3), "504 came late (timeouts are 1 s)")

    def test_origin_closes_without_answering_is_502(self):
        self.origin.route("/live/mute.flv", raw_response=b"")
        self.assertStatus(self.get(self.edge, "/flv/mute.flv"), 502)

    def test_origin_answers_garbage_is_502(self):
        self.origin.route("/live/junk.flv", raw_response=b"SPAM SPAM SPAM\r\n\r\nmore spam")
        self.assertStatus(self.get(self.edge, "/flv/junk.flv"), 502)

    def test_origin_cut_inside_the_head_is_502(self):
        self.origin.route("/live/half.flv", raw_response=b"HTTP/1.1 200 OK\r\nContent-Ty")
        self.assertStatus(self.get(self.edge, "/flv/half.flv"), 502)

    def test_informational_answers_are_skipped_for_the_final_one(self):
        # A 103 Early Hints (with a Content-Type of its own) or a 100 Continue is not the answer:
        # viewers get the 200 stream that follows, as FLV.
        for name, interim in (("hints", b"HTTP/1.1 103 Early Hints\r\nLink: </p.css>; rel=preload\r\n"
                                        b"Content-Type: text/css\r\n\r\n"),
                              ("cont", b"HTTP/1.1 100 Continue\r\n\r\n")):
            with self.subTest(interim=name):
                self.origin.route("/live/%s.flv" % name, Synth(), interim=interim)
                v = self.viewer(self.edge, "/flv/%s.flv" % name)
                self.assertEqual(v.status, 200, v.response)
                self.assertEqual(v.response.header("Content-Type"), "video/x-flv")
                v.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
                check_join_sequence(v.tags, v.flv.flags)

    def test_switching_protocols_is_502(self):
        stream = Synth(duration_ms=1000).to_bytes()
        self.origin.route("/live/sw.flv", raw_response=b"HTTP/1.1 101 Switching Protocols\r\n"
                          b"Upgrade: flv\r\nConnection: Upgrade\r\n\r\n" + stream)
        self.assertStatus(self.get(self.edge, "/flv/sw.flv"), 502)

    def test_only_an_informational_answer_is_502(self):
        self.origin.route("/live/early.flv", raw_response=b"HTTP/1.1 103 Early Hints\r\n\r\n")
        self.assertStatus(self.get(self.edge, "/flv/early.flv"), 502)

    def test_viewers_waiting_on_a_silent_origin_all_get_504(self):
        path = "/live/silent2.flv"
        self.origin.route(path, silent=True)
        viewers = [self.viewer(self.edge, "/flv/silent2.flv", open=False) for _ in range(5)]
        for v in viewers:
            self.assertEqual(v.open(T(20)).status, 504, v.response)
        self.assertEqual(self.origin.connections(path), 1,
                         "viewers waiting together each pulled the origin")

    def test_viewer_leaving_while_the_origin_is_pending(self):
        path = "/live/pend.flv"
        self.origin.route(path, Synth(), header_delay=0.7)
        gone = self.viewer(self.edge, "/flv/pend.flv", open=False)
        wait_until(lambda: self.origin.connections(path) == 1, T(5), "the edge to call the origin")
        gone.close()
        stay = self.viewer(self.edge, "/flv/pend.flv")
        self.assertEqual(stay.status, 200, stay.response)
        stay.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
        check_join_sequence(stay.tags, stay.flv.flags)
        self.assertTrue(self.edge.alive())


class OriginEndTest(EdgeTestCase):
    def setUp(self):
        self.origin = self.start_origin()
        self.edge = self.start_edge(live_config(self.origin.url("/live/"),
                                                origin_connect_timeout=1, origin_read_timeout=1))

    def test_origin_end_ends_viewers_and_next_request_reconnects(self):
        path = "/live/ending.flv"
        self.origin.route(path, Synth())
        v1 = self.viewer(self.edge, "/flv/ending.flv")
        v2 = self.viewer(self.edge, "/flv/ending.flv")
        v1.read_media_ms(500)
        v2.read_tags(5)
        self.origin.end(path)
        for v in (v1, v2):
            self.assertTrue(v.read_to_end(T(10)), "%s: no clean end of the chunked body" % v.path)
            self.assertTrue(v.flv.at_boundary(), "body ended inside a tag")
        self.assertEqual(self.origin.connections(path), 1)
        v3 = self.viewer(self.edge, "/flv/ending.flv")
        self.assertEqual(v3.status, 200, v3.response)
        v3.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
        check_join_sequence(v3.tags, v3.flv.flags)
        self.assertEqual(self.origin.connections(path), 2, "an ended stream was reused")

    def test_origin_stall_ends_viewers_after_read_timeout(self):
        path = "/live/stall.flv"
        self.origin.route(path, Synth(), stall_after_ms=1000)
        v = self.viewer(self.edge, "/flv/stall.flv")
        v.read_media_ms(900, T(10))
        v.read_to_end(1 + T(6))
        quiet = time.monotonic() - v.tags[-1].recv_time
        self.assertGreater(quiet, 0.7, "the body ended %.2f s after the last data: before "
                           "origin_read_timeout (1 s)" % quiet)
        self.assertTrue(v.clean_end, "after an origin stall the chunked body was cut, not ended")
        self.assertTrue(v.flv.at_boundary(), "body ended inside a tag")
        wait_until(lambda: self.origin.active(path) == 0, T(5), "the edge to drop the stalled origin")


class MalformedTest(EdgeTestCase):
    """Each fault ends that stream cleanly, is logged with the stream, and the edge lives on."""

    def setUp(self):
        self.origin = self.start_origin()
        self.origin.route("/live/good.flv", Synth())
        # origin_read_timeout is long: the fault, not a timeout, must end the stream.
        self.edge = self.start_edge(live_config(self.origin.url("/live/"), max_tag_size=1048576,
                                                origin_read_timeout=30, linger=0))

    def _check_edge_still_fine(self):
        self.assertTrue(self.edge.alive(), "flvedge died")
        v = self.viewer(self.edge, "/flv/good.flv")
        self.assertEqual(v.status, 200, v.response)
        v.read_until(lambda v: sum(t.is_keyframe for t in v.tags) >= 2, T(10), "two keyframes")
        check_join_sequence(v.tags, v.flv.flags)

    def _ends_cleanly(self, name, allow_error_status):
        v = self.viewer(self.edge, "/flv/%s.flv" % name, open=False)
        r = v.open(T(15))
        if r.status != 200:
            self.assertIn(r.status, allow_error_status, r)
            v.conn.read_body_all(T(5))
            return v
        self.assertTrue(v.read_to_end(T(8)), "%s: body not ended cleanly" % name)
        self.assertTrue(v.flv.flags is None or v.flv.at_boundary(),
                        "%s: the edge sent part of a tag" % name)
        return v

    def test_bad_signature(self):
        name = "alpha"
        self.origin.route("/live/%s.flv" % name,
                          raw_source(b"XLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00" + b"\x00" * 200),
                          then="hold")
        # Nothing valid arrived yet, so an error status is as good as an empty 200 stream.
        self._ends_cleanly(name, allow_error_status=(502,))
        self.edge.wait_log(name, r"signature|not an? flv|flv header")
        wait_until(lambda: self.origin.active("/live/%s.flv" % name) == 0, T(5),
                   "the edge to close the bad origin connection")
        self._check_edge_still_fine()

    def test_tag_beyond_max_tag_size(self):
        name = "bravo"
        bad = tag_header_only(VIDEO, 1100, 0xFFFFF0) + b"\x27\x01" + b"\x00" * 1000
        self.origin.route("/live/%s.flv" % name,
                          chain(Synth(duration_ms=1000), raw_source(bad)), then="hold")
        v = self._ends_cleanly(name, allow_error_status=())
        self.assertGreater(len(v.tags), 20, "the good part of the stream before the fault")
        check_join_sequence(v.tags, v.flv.flags)
        self.edge.wait_log(name, r"too (big|large)|larger|max_tag_size|exceed|oversize|limit")
        wait_until(lambda: self.origin.active("/live/%s.flv" % name) == 0, T(5),
                   "the edge to close the bad origin connection")
        self._check_edge_still_fine()

    def test_truncated_stream(self):
        name = "charlie"
        cut = flv_tag(VIDEO, 1000, b"\x27\x01\x00\x00\x00" + b"\x00" * 500)[:200]
        self.origin.route("/live/%s.flv" % name, chain(Synth(duration_ms=1000), raw_source(cut)),
                          mode="close")
        v = self._ends_cleanly(name, allow_error_status=())
        self.assertGreater(len(v.tags), 20, "the good part of the stream before the fault")
        self.edge.wait_log(name, r"truncat|incomplete|inside a tag|unexpected end|cut short")
        self._check_edge_still_fine()

    def test_garbage_after_good_tags(self):
        name = "delta"
        # A tag type that is neither audio, video nor script.
        bad = tag_header_only(7, 1100, 10) + b"\x00" * 10 + (21).to_bytes(4, "big")
        self.origin.route("/live/%s.flv" % name,
                          chain(Synth(duration_ms=1000), raw_source(bad)), then="hold")
        v = self._ends_cleanly(name, allow_error_status=())
        self.assertGreater(len(v.tags), 20)
        self.edge.wait_log(name, r"tag type|bad type|unknown type")
        self._check_edge_still_fine()


if __name__ == "__main__":
    unittest.main()
