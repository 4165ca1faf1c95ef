"""
Live origin failover that viewers do not notice: an origin group (`origin = {primary, backup}`,
or quick mode's repeated --origin) whose primary dies, stalls or ends in the middle of the stream.
Viewers already watching keep their response; the backup's tags are joined at a keyframe with
timestamps that go on from the last ones plus one frame; its sequence headers and metadata are sent
again when they differ. Health marks spare a dead origin from other streams; the stream returns to
the primary once it is healthy again; a slate stands in when every origin is down.

Which origin a tag came from shows in its Synth serial: the primary's count from 0, the backup's
from BACKUP, the slate's from SLATE.
"""

import os
import re
import sys
import time
import unittest
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (T, EdgeTestCase, Synth, check_monotonic, free_port, live_config,
                        wait_until)

BACKUP = 1_000_000
SLATE = 5_000_000
READ_TIMEOUT = 1.0
# One frame at 25 fps: the gap the edge leaves between the last old tag and the first new one.
FRAME_MS = 40


def from_origin(tag, base):
    s = tag.serial
    return s is not None and base <= s < base + BACKUP


def timeouts(**kw):
    d = {"origin_connect_timeout": 1, "origin_read_timeout": READ_TIMEOUT}
    d.update(kw)
    return d


class FailoverTest(EdgeTestCase):
    def setUp(self):
        self.a = self.start_origin()
        self.b = self.start_origin()

    def group_edge(self, path="/live/", **kw):
        return self.start_edge(live_config([self.a.url(path), self.b.url(path)], **timeouts(**kw)))

    def check_switch(self, v, new_base=BACKUP, old_base=0, start=0, end=None):
        """The viewer's stream across a switch (the first to new_base from `start`, looking at tags
        up to `end`): monotonic timestamps, no large jump, the first new video tag a keyframe,
        nothing of the old origin after the new one started."""
        tags = v.tags[:end]
        check_monotonic(tags)
        first_new = next(i for i, t in enumerate(tags) if i >= start and from_origin(t, new_base))
        media_before = [t for t in tags[:first_new] if t.is_media]
        self.assertTrue(media_before, "no media before the switch")
        last_old = max(t.ts for t in media_before)
        first_video = next(t for t in tags[first_new:] if t.is_video and not t.is_seq_header)
        self.assertTrue(first_video.is_keyframe, "the new origin was not joined at a keyframe: %r"
                        % first_video)
        jump = tags[first_new].ts - last_old
        self.assertGreater(jump, 0, "no gap between the old origin's last tag and the new one's")
        self.assertLessEqual(jump, 2 * FRAME_MS, "timestamps jumped %d ms at the switch" % jump)
        late = [t for t in tags[first_new:] if from_origin(t, old_base)]
        self.assertEqual(late, [], "tags of the old origin after the switch")
        return first_new

    def test_primary_killed_viewers_keep_watching(self):
        self.a.route("/live/s.flv", Synth())
        self.b.route("/live/s.flv", Synth(serial_base=BACKUP))
        edge = self.group_edge()
        v1 = self.viewer(edge, "/flv/s.flv")
        v2 = self.viewer(edge, "/flv/s.flv")
        for v in (v1, v2):
            v.read_media_ms(1000, T(10))
        killed = self.a.kill()
        for v in (v1, v2):
            v.read_until(lambda v: sum(from_origin(t, BACKUP) for t in v.tags) > 50, T(10),
                         "the backup's tags")
            self.assertFalse(v.ended, "the viewer's response ended")
            i = self.check_switch(v)
            # Same codec configuration: no header sent again.
            self.assertEqual(sum(t.is_seq_header for t in v.tags), 2, "sequence headers re-sent")
            self.assertEqual(sum(t.is_metadata for t in v.tags), 1, "metadata re-sent")
            gap = v.tags[i].recv_time - killed
            self.assertLess(gap, 1.0, "failover took %.2f s after a kill" % gap)
        self.assertEqual(self.b.connections("/live/s.flv"), 1, "one pull for both viewers")
        self.assertEqual(edge.metric("flvedge_origin_failovers_total"), 1)
        self.assertTrue(edge.log_lines("now from %s" % self.b.url("/live/s.flv")))

    def test_backup_with_other_codec_config_sends_new_headers(self):
        self.a.route("/live/s.flv", Synth())
        self.b.route("/live/s.flv", Synth(serial_base=BACKUP, variant=1))
        edge = self.group_edge()
        v = self.viewer(edge, "/flv/s.flv")
        v.read_media_ms(800, T(10))
        self.a.kill()
        v.read_until(lambda v: sum(from_origin(t, BACKUP) for t in v.tags) > 20, T(10), "backup")
        i = self.check_switch(v)
        # Just before the backup's keyframe: its metadata and both sequence headers, at one time.
        head = v.tags[i - 3:i] if v.tags[i].is_keyframe else None
        inserted = [t for t in v.tags if t.is_seq_header or t.is_metadata]
        self.assertEqual(len(inserted), 6, "want meta + 2 headers twice: %r" % inserted)
        new = inserted[3:]
        self.assertTrue(new[0].is_metadata and b"variant" not in v.tags[0].head, new)
        self.assertEqual(sorted(t.type for t in new[1:]), [8, 9])
        self.assertTrue(all(t.ts == new[0].ts for t in new), "inserted headers at one time: %r" % new)
        self.assertIsNotNone(head)
        # They are the backup's own: its metadata (1280x720, 48 kHz, variant 1), its SPS, its AAC
        # config, byte for byte (payload size and CRC of what the backup sent).
        want = {}
        for _, raw in Synth(variant=1).header_items():
            if len(raw) > 13:
                payload = raw[11:-4]
                want[raw[0]] = (len(payload), zlib.crc32(payload))
        for t in new:
            self.assertEqual((t.size, t.crc), want[t.type],
                             "the re-sent %r is not the backup's" % t)
        self.assertIn(b"onMetaData", new[0].head)
        vseq = next(t for t in new if t.is_video)
        self.assertEqual(vseq.head[6:9], bytes([0x4D, 0x00, 0x28]), "not the backup's SPS")
        aseq = next(t for t in new if t.is_audio)
        self.assertEqual(aseq.head[:4], bytes([0xAF, 0x00, 0x11, 0x90]), "not the backup's AAC config")
        old = inserted[:3]
        self.assertNotEqual([(t.size, t.crc) for t in old], [(t.size, t.crc) for t in new])
        # A viewer joining now gets the backup's headers in its prefix, and plays.
        w = self.viewer(edge, "/flv/s.flv")
        w.read_until(lambda w: any(t.is_keyframe for t in w.tags), T(10), "a keyframe")
        vseq = next(t for t in w.tags if t.is_seq_header and t.is_video)
        self.assertEqual(vseq.head[6:9], bytes([0x4D, 0x00, 0x28]), "joiner got the old SPS")

    def test_stall_fails_over_after_read_timeout(self):
        self.a.route("/live/s.flv", Synth(), stall_after_ms=1500)
        self.b.route("/live/s.flv", Synth(serial_base=BACKUP))
        edge = self.group_edge()
        v = self.viewer(edge, "/flv/s.flv")
        v.read_until(lambda v: any(from_origin(t, BACKUP) for t in v.tags), T(10), "backup")
        i = self.check_switch(v)
        quiet = v.tags[i].recv_time - v.tags[i - 1].recv_time
        self.assertGreater(quiet, READ_TIMEOUT * 0.8, "switched before the read timeout")
        self.assertLess(quiet, READ_TIMEOUT + 1.0, "a stall took %.2f s to fail over" % quiet)

    def test_connect_timeout_fails_over_before_the_start(self):
        # The primary never completes the TCP handshake: after origin_connect_timeout the group's
        # next origin serves, and the viewer gets a 200 with the backup's stream.
        dead = self.start_syn_dropper()
        self.b.route("/live/s.flv", Synth(serial_base=BACKUP))
        edge = self.start_edge(live_config([dead.url("/live/"), self.b.url("/live/")],
                                           **timeouts(origin_connect_timeout=0.5)))
        t0 = time.monotonic()
        v = self.viewer(edge, "/flv/s.flv")
        self.assertEqual(v.status, 200)
        v.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
        took = v.tags[0].recv_time - t0
        self.assertGreater(took, 0.4, "the backup was asked before the connect timeout")
        self.assertLess(took, 0.5 + 1.0, "a connect timeout took %.2f s to fail over" % took)
        self.assertTrue(all(from_origin(t, BACKUP) for t in v.tags if t.is_media))
        self.assertTrue(edge.log_lines(re.escape("origin failed (timeout); trying %s" % self.b.url("/live/"))))

    def test_connect_timeout_mid_stream_moves_to_the_next(self):
        # The primary dies; the next origin of the group never answers the SYN; the one after it
        # serves, origin_connect_timeout after the death, and the viewer's response goes on.
        dead = self.start_syn_dropper()
        c = self.start_origin()
        self.a.route("/live/s.flv", Synth())
        c.route("/live/s.flv", Synth(serial_base=BACKUP))
        edge = self.start_edge(live_config([self.a.url("/live/"), dead.url("/live/"),
                                            c.url("/live/")],
                                           **timeouts(origin_connect_timeout=0.5)))
        v = self.viewer(edge, "/flv/s.flv")
        v.read_media_ms(500, T(10))
        killed = self.a.kill()
        v.read_until(lambda v: sum(from_origin(t, BACKUP) for t in v.tags) > 10, T(10), "backup")
        i = self.check_switch(v)
        gap = v.tags[i].recv_time - killed
        self.assertGreater(gap, 0.4, "the third origin was asked before the connect timeout")
        self.assertLess(gap, 0.5 + 1.0, "a connect timeout took %.2f s to fail over" % gap)
        self.assertTrue(edge.log_lines(re.escape("origin failed mid-stream (timeout); trying %s"
                                                 % c.url("/live/s.flv"))))
        self.assertFalse(v.ended)

    def test_5xx_primary_fails_over_before_the_start(self):
        # No policy: the group's first origin answers 503, the next one serves.
        self.a.route("/live/s.flv", status=503, body=b"busy\n")
        self.b.route("/live/s.flv", Synth(serial_base=BACKUP))
        edge = self.group_edge()
        v = self.viewer(edge, "/flv/s.flv")
        self.assertEqual(v.status, 200)
        v.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
        self.assertTrue(all(from_origin(t, BACKUP) for t in v.tags if t.is_media))
        self.assertEqual(self.a.connections("/live/s.flv"), 1)
        self.assertTrue(edge.log_lines(re.escape("origin failed (status 503); trying")))

    def test_5xx_mid_stream_moves_to_the_next(self):
        # The primary dies mid-stream; the group's second origin answers 503; the third serves.
        c = self.start_origin()
        self.a.route("/live/s.flv", Synth())
        self.b.route("/live/s.flv", status=503, body=b"busy\n")
        c.route("/live/s.flv", Synth(serial_base=BACKUP))
        edge = self.start_edge(live_config([self.a.url("/live/"), self.b.url("/live/"),
                                            c.url("/live/")], **timeouts()))
        v = self.viewer(edge, "/flv/s.flv")
        v.read_media_ms(500, T(10))
        killed = self.a.kill()
        v.read_until(lambda v: sum(from_origin(t, BACKUP) for t in v.tags) > 10, T(10), "backup")
        i = self.check_switch(v)
        self.assertLess(v.tags[i].recv_time - killed, 1.0)
        self.assertEqual(self.b.connections("/live/s.flv"), 1, "the 503 origin was not asked")
        self.assertTrue(edge.log_lines(re.escape("origin failed mid-stream (status 503); trying %s"
                                                 % c.url("/live/s.flv"))))
        self.assertFalse(v.ended)

    def test_health_mark_spares_the_dead_origin(self):
        # The primary stalls for one stream: marked down, the next stream goes to the backup
        # without asking it.
        self.a.route("/live/one.flv", Synth(), stall_after_ms=500)
        self.a.route("/live/two.flv", Synth())
        for p in ("/live/one.flv", "/live/two.flv"):
            self.b.route(p, Synth(serial_base=BACKUP))
        edge = self.group_edge(origin_recheck=0)
        v = self.viewer(edge, "/flv/one.flv")
        v.read_until(lambda v: any(from_origin(t, BACKUP) for t in v.tags), T(10), "backup")
        w = self.viewer(edge, "/flv/two.flv")
        w.read_until(lambda w: any(t.is_keyframe for t in w.tags), T(10), "a keyframe")
        self.assertTrue(all(from_origin(t, BACKUP) for t in w.tags if t.is_media))
        self.assertEqual(self.a.connections("/live/two.flv"), 0, "the dead origin was asked")

    def test_dead_origin_reprobed_with_growing_backoff_one_probe_at_a_time(self):
        # fe_health's rule: a failure marks the origin down for 1 s, doubling with each failed try
        # after a back-off; once a back-off is over, one caller (a probe) tries it while the others
        # still see it down. Three streams on the primary, re-checking it every 0.1 s once on the
        # backup: the primary comes back answering 503. Its connection log shows one probe 1 s
        # after its death, the next one 2 s after that, and nothing in between.
        paths = ["/live/%s.flv" % n for n in ("one", "two", "three")]
        for p in paths:
            self.a.route(p, Synth())
            self.b.route(p, Synth(serial_base=BACKUP))
        edge = self.group_edge(origin_recheck=0.1)
        viewers = [self.viewer(edge, p.replace("/live/", "/flv/")) for p in paths]
        for v in viewers:
            v.read_media_ms(300, T(10))
        for p in paths:
            self.a.route(p, status=503, body=b"down\n")  # for new connections only
        killed = min(self.a.kill(p) for p in paths)
        for v in viewers:
            v.read_until(lambda v: any(from_origin(t, BACKUP) for t in v.tags), T(10), "backup")

        def probes():
            return sorted(c.opened_at for p in paths for c in self.a.conns_for(p)
                          if c.opened_at > killed)
        try:
            wait_until(lambda: len(probes()) >= 2, T(6), "two probes of the dead origin")
        except AssertionError:
            self.fail("probes at %r s after the death" % [t - killed for t in probes()])
        second = probes()[1]
        wait_until(lambda: time.monotonic() > second + 0.5, T(2))  # room for a wrong third
        got = probes()
        self.assertEqual(len(got), 2, "probes at %r s after the death" % [t - killed for t in got])
        first_wait, second_wait = got[0] - killed, got[1] - got[0]
        self.assertGreater(first_wait, 0.9, "probed %.2f s after the death" % first_wait)
        self.assertLess(first_wait, 1.6, "first probe %.2f s after the death" % first_wait)
        self.assertGreater(second_wait, 1.9, "the back-off did not grow: %.2f s" % second_wait)
        self.assertLess(second_wait, 2.6, "second probe %.2f s after the first" % second_wait)
        for v in viewers:
            v.pump(0.2)
            self.assertFalse(v.ended)
            self.check_switch(v)  # the 503 probes never reached the viewers

    def test_returns_to_the_primary_when_healthy(self):
        self.a.route("/live/s.flv", Synth())
        self.b.route("/live/s.flv", Synth(serial_base=BACKUP))
        edge = self.group_edge(origin_recheck=0.5)
        v = self.viewer(edge, "/flv/s.flv")
        v.read_media_ms(500, T(10))
        self.a.kill()
        v.read_until(lambda v: any(from_origin(t, BACKUP) for t in v.tags), T(10), "backup")
        self.a.revive()
        n = len(v.tags)
        v.read_until(lambda v: sum(from_origin(t, 0) for t in v.tags[n:]) > 10, T(10), "the primary")
        self.check_switch(v, end=n)
        self.check_switch(v, new_base=0, old_base=BACKUP, start=n)
        wait_until(lambda: self.b.active("/live/s.flv") == 0, T(5), "the backup's pull to close")
        self.assertFalse(v.ended)

    def test_slate_when_every_origin_is_down_then_back(self):
        slate = os.path.join(self.start_slate_dir(), "slate.flv")
        with open(slate, "wb") as f:
            f.write(Synth(duration_ms=2000, serial_base=SLATE).to_bytes())
        self.a.route("/live/s.flv", Synth())
        edge = self.start_edge(live_config(self.a.url("/live/"), slate="file:" + slate,
                                           **timeouts(origin_recheck=0.5)))
        v = self.viewer(edge, "/flv/s.flv")
        v.read_media_ms(500, T(10))
        self.a.kill()
        v.read_until(lambda v: sum(from_origin(t, SLATE) for t in v.tags) > 10, T(10), "the slate")
        self.check_switch(v, new_base=SLATE)
        self.a.revive()
        n = len(v.tags)
        v.read_until(lambda v: sum(from_origin(t, 0) for t in v.tags[n:]) > 10, T(10),
                     "the origin again")
        self.check_switch(v, new_base=0, old_base=SLATE, start=n)
        self.assertFalse(v.ended)

    def start_slate_dir(self):
        import shutil
        import tempfile
        d = tempfile.mkdtemp(prefix="flvedge-slate-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def test_quick_mode_repeated_origin(self):
        self.a.route("/live/s.flv", Synth())
        self.b.route("/live/s.flv", Synth(serial_base=BACKUP))
        edge = self.start_quick_edge(self.a.url("/live/"),
                                     extra_args=["--origin", self.b.url("/live/")])
        v = self.viewer(edge, "/s.flv")
        v.read_media_ms(500, T(10))
        # The first --origin is the primary: the stream came from it, the backup was not asked.
        self.assertTrue(all(from_origin(t, 0) for t in v.tags if t.is_media))
        self.assertEqual(self.b.connections("/live/s.flv"), 0, "the backup was asked first")
        self.assertEqual(self.a.connections("/live/s.flv"), 1)
        self.a.kill()
        v.read_until(lambda v: any(from_origin(t, BACKUP) for t in v.tags), T(15), "backup")
        self.check_switch(v)
        self.assertEqual(self.b.connections("/live/s.flv"), 1)

    def test_clean_end_ends_the_stream_unless_failover_on_end(self):
        self.a.route("/live/s.flv", Synth(duration_ms=1000))
        self.b.route("/live/s.flv", Synth(serial_base=BACKUP))
        edge = self.group_edge()
        v = self.viewer(edge, "/flv/s.flv")
        self.assertTrue(v.read_to_end(T(10)), "the stream did not end cleanly")
        self.assertEqual(self.b.connections("/live/s.flv"), 0)
        edge2 = self.group_edge(failover_on_end=True)
        w = self.viewer(edge2, "/flv/s.flv")
        w.read_until(lambda w: any(from_origin(t, BACKUP) for t in w.tags), T(10), "backup")
        self.check_switch(w)

    def test_policy_hook_sees_mid_stream_attempts(self):
        self.a.route("/live/s.flv", Synth(), stall_after_ms=500)
        self.b.route("/live/s.flv", Synth(serial_base=BACKUP))
        policy = """
local a, b = %r, %r
return { origin = function(req, attempt, last_error)
  if attempt == 1 then return a end
  if attempt == 2 then return b .. "?attempt=2&error=" .. tostring(last_error) end
end }
""" % (self.a.url("/live/s.flv"), self.b.url("/live/s.flv"))
        edge = self.start_edge(live_config(self.a.url("/live/"), policy="failover_policy.lua",
                                           **timeouts()),
                               files={"failover_policy.lua": policy})
        v = self.viewer(edge, "/flv/s.flv")
        v.read_until(lambda v: any(from_origin(t, BACKUP) for t in v.tags), T(10), "backup")
        self.check_switch(v)
        targets = [r["target"] for r in self.b.requests_for("/live/s.flv")]
        self.assertEqual(targets, ["/live/s.flv?attempt=2&error=stall"])

    def test_policy_hook_sees_every_mid_stream_attempt_and_error(self):
        # Each call's (attempt, last_error) goes into the URL the hook returns, accumulated, so
        # the last origin's request shows every call: the primary killed (its listener gone too),
        # the next one refused, the one after stalls, the last one serves.
        c = self.start_origin()
        refused = "http://127.0.0.1:%d/live/s.flv" % free_port()
        self.a.route("/live/s.flv", Synth())
        self.b.route("/live/s.flv", Synth(serial_base=BACKUP), stall_after_ms=1000)
        c.route("/live/s.flv", Synth(serial_base=2 * BACKUP))
        policy = """
local urls = { %r, %r, %r, %r }
local seen = ""
return { origin = function(req, attempt, last_error)
  seen = seen .. attempt .. ":" .. tostring(last_error) .. ","
  if urls[attempt] then return urls[attempt] .. "?seen=" .. seen end
end }
""" % (self.a.url("/live/s.flv"), refused, self.b.url("/live/s.flv"), c.url("/live/s.flv"))
        edge = self.start_edge(live_config(self.a.url("/live/"), policy="hook_policy.lua",
                                           **timeouts(origin_recheck=0)),
                               files={"hook_policy.lua": policy})
        v = self.viewer(edge, "/flv/s.flv")
        v.read_media_ms(500, T(10))
        self.a.kill()
        v.read_until(lambda v: any(from_origin(t, BACKUP) for t in v.tags), T(10), "the backup")
        v.read_until(lambda v: any(from_origin(t, 2 * BACKUP) for t in v.tags), T(10), "the third")
        self.check_switch(v)
        self.check_switch(v, new_base=2 * BACKUP, old_base=BACKUP,
                          start=next(i for i, t in enumerate(v.tags) if from_origin(t, BACKUP)))
        self.assertFalse(v.ended)
        targets = [r["target"] for r in c.requests_for("/live/s.flv")]
        self.assertEqual(targets, ["/live/s.flv?seen=1:nil,2:broken,3:unreachable,4:stall,"])

    def test_policy_hook_giving_up_mid_stream_ends_the_stream_cleanly(self):
        # The hook has nothing after the primary (nil): asked once more from attempt 1 (the
        # primary that just failed is not used again), then the stream ends for the viewers as
        # on a clean end (docs/live.md), promptly, with one log line naming the fault.
        self.a.route("/live/s.flv", Synth())
        policy = """
local a = %r
return { origin = function(req, attempt, last_error)
  if attempt == 1 then return a end
end }
""" % self.a.url("/live/s.flv")
        edge = self.start_edge(live_config(self.a.url("/live/"), policy="giveup_policy.lua",
                                           **timeouts()),
                               files={"giveup_policy.lua": policy})
        v = self.viewer(edge, "/flv/s.flv")
        v.read_media_ms(500, T(10))
        killed = self.a.kill()
        self.assertTrue(v.read_to_end(T(5)), "the viewer's response did not end cleanly")
        self.assertLess(time.monotonic() - killed, 1.0, "the stream took long to end")
        check_monotonic(v.tags)
        self.assertTrue(edge.log_lines("stream .*no origin left \\(broken\\); ending the stream"))
        self.assertEqual(self.a.connections("/live/s.flv"), 1, "the failed primary asked again")
        self.assertEqual(edge.metric("flvedge_origin_failovers_total"), 0)

    def test_policy_hook_giving_up_mid_stream_goes_to_the_slate(self):
        slate = os.path.join(self.start_slate_dir(), "slate.flv")
        with open(slate, "wb") as f:
            f.write(Synth(duration_ms=2000, serial_base=SLATE).to_bytes())
        self.a.route("/live/s.flv", Synth())
        policy = """
local a = %r
return { origin = function(req, attempt, last_error)
  if attempt == 1 and last_error ~= "recheck" then return a end
end }
""" % self.a.url("/live/s.flv")
        edge = self.start_edge(live_config(self.a.url("/live/"), policy="giveup_policy.lua",
                                           slate="file:" + slate, **timeouts()),
                               files={"giveup_policy.lua": policy})
        v = self.viewer(edge, "/flv/s.flv")
        v.read_media_ms(500, T(10))
        self.a.kill()
        v.read_until(lambda v: sum(from_origin(t, SLATE) for t in v.tags) > 10, T(10), "the slate")
        self.check_switch(v, new_base=SLATE)
        self.assertFalse(v.ended)

    def test_relayed_loops_get_the_switch(self):
        self.a.route("/live/s.flv", Synth())
        self.b.route("/live/s.flv", Synth(serial_base=BACKUP, variant=1))
        edge = self.start_edge(live_config([self.a.url("/live/"), self.b.url("/live/")],
                                           top={"workers": 3}, **timeouts()))
        viewers = [self.viewer(edge, "/flv/s.flv") for _ in range(6)]
        for v in viewers:
            v.read_media_ms(600, T(10))
        self.a.kill()
        for v in viewers:
            v.read_until(lambda v: sum(from_origin(t, BACKUP) for t in v.tags) > 20, T(10), "backup")
            self.check_switch(v)
            self.assertGreaterEqual(sum(t.is_seq_header for t in v.tags), 4,
                                    "the new headers did not reach this loop")
        self.assertEqual(self.b.connections("/live/s.flv"), 1, "one pull for every loop")


if __name__ == "__main__":
    unittest.main(verbosity=2)
