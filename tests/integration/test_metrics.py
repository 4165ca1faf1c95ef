"""
/metrics on the admin listener: per-stream series summed over the loops (viewers, bytes, origin
counters, bitrate), the cap on stream series with the rest in stream="_other", per-resource
counters that survive the end of a stream, the first-byte and first-keyframe histograms, the
process series (memory, Lua errors, reloads), and the public /_flvedge/metrics being opt-in.
"""

import re
import signal
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (WORKERS, T, EdgeTestCase, HttpConn, Synth, live_config, media_span_ms,
                        parse_metrics, wait_until)


def stream_labels(resource, stream):
    return '{resource="%s",stream="%s"}' % (resource, stream)


def loop_series(text, name):
    """flvedge_loop_NAME{loop="i"} of one scrape: a list indexed by loop."""
    out = {}
    for m in re.finditer(r'^flvedge_loop_%s\{loop="(\d+)"\} (\S+)$' % re.escape(name), text, re.M):
        out[int(m.group(1))] = float(m.group(2))
    return [out[i] for i in sorted(out)]


class StreamMetricsTest(EdgeTestCase):
    def test_per_stream_series_are_summed_over_loops(self):
        origin = self.start_origin()
        origin.route("/live/a.flv", Synth())
        origin.route("/live/b.flv", Synth())
        edge = self.start_edge(live_config(origin.url("/live/")))
        viewers = [self.viewer(edge, "/flv/a.flv") for _ in range(6)]
        # SO_REUSEPORT spreads connections by a hash: more viewers of live/a until every loop has
        # one (6 land on one loop one time in 32), so its series below is a sum over loops
        for _ in range(100):
            wait_until(lambda: sum(edge.loop_metric("viewers")) == len(viewers), T(10), "the viewers counted")
            if all(n > 0 for n in edge.loop_metric("viewers")):
                break
            viewers.append(self.viewer(edge, "/flv/a.flv"))
        self.assertEqual(sum(1 for n in edge.loop_metric("viewers") if n > 0), WORKERS)
        n_a = len(viewers)
        viewers.append(self.viewer(edge, "/flv/b.flv"))
        for v in viewers:
            v.read_media_ms(1000)
        wait_until(lambda: edge.series("flvedge_stream_viewers").get(stream_labels("live", "a")) == n_a,
                   T(10), "%d viewers of live/a in the stream series" % n_a)
        viewers_series = edge.series("flvedge_stream_viewers")
        self.assertEqual(viewers_series[stream_labels("live", "b")], 1)
        # One origin pull per stream for the whole node, however many loops relay it.
        connects = edge.series("flvedge_stream_origin_connects_total")
        self.assertEqual(connects[stream_labels("live", "a")], 1)
        self.assertEqual(connects[stream_labels("live", "b")], 1)
        self.assertEqual(origin.connections("/live/a.flv"), 1)
        sent = edge.series("flvedge_stream_bytes_sent_total")
        self.assertGreater(sent[stream_labels("live", "a")], sent[stream_labels("live", "b")] * 3,
                           "6 viewers take more bytes than 1 (%r)" % sent)
        self.assertGreater(edge.series("flvedge_stream_origin_bytes_total")[stream_labels("live", "a")], 10000)
        # Synth: 25 fps of 1200-byte frames plus audio, about 0.3 Mbit/s.
        rate = edge.series("flvedge_stream_bitrate_bps")[stream_labels("live", "a")]
        self.assertTrue(100e3 < rate < 1e6, rate)
        self.assertEqual(edge.metric("flvedge_stream_series_capped"), 0)
        for v in viewers:
            v.close()

    def test_stream_series_are_capped_and_the_rest_is_other(self):
        origin = self.start_origin()
        for name in "abcd":
            origin.route("/live/%s.flv" % name, Synth())
        edge = self.start_edge(live_config(origin.url("/live/"), top={"metrics": {"max_stream_series": 2}}))
        counts = {"a": 4, "b": 3, "c": 2, "d": 1}
        viewers = []
        for name, n in counts.items():
            for _ in range(n):
                viewers.append(self.viewer(edge, "/flv/%s.flv" % name))
        for v in viewers:
            v.read_media_ms(500)
        wait_until(lambda: edge.metric("flvedge_viewers") == 10, T(10), "10 viewers")
        series = edge.series("flvedge_stream_viewers")
        # The two busiest keep their own series; c and d are summed into _other.
        self.assertEqual(series, {stream_labels("live", "a"): 4, stream_labels("live", "b"): 3,
                                  stream_labels("_other", "_other"): 3}, series)
        self.assertEqual(edge.metric("flvedge_stream_series_capped"), 2)
        connects = edge.series("flvedge_stream_origin_connects_total")
        self.assertEqual(connects[stream_labels("_other", "_other")], 2)
        for v in viewers:
            v.close()

    def test_resource_counters_outlive_their_streams(self):
        origin = self.start_origin()
        origin.route("/live/a.flv", Synth())
        edge = self.start_edge(live_config(origin.url("/live/"), linger=0))
        v = self.viewer(edge, "/flv/a.flv")
        v.read_media_ms(500)
        v.close()
        wait_until(lambda: edge.metric("flvedge_streams") == 0, T(10), "the stream closed")
        self.assertEqual(edge.series("flvedge_stream_viewers"), {})
        res = '{resource="live"}'
        self.assertEqual(edge.series("flvedge_resource_origin_connects_total")[res], 1)
        self.assertGreater(edge.series("flvedge_resource_origin_bytes_total")[res], 1000)
        self.assertEqual(edge.series("flvedge_resource_joins_total")[res], 1)
        self.assertGreater(edge.series("flvedge_resource_bytes_sent_total")[res], 1000)
        # The viewer's request is counted when it ends: one 2xx, a MISS (it opened the stream).
        wait_until(lambda: edge.series("flvedge_resource_requests_total").get(
            '{resource="live",status="2xx"}') == 1, T(5), "the viewer's request counted")
        self.assertEqual(edge.series("flvedge_resource_cache_total")['{resource="live",cache_status="miss"}'], 1)

    def test_origin_errors_and_failovers_per_stream(self):
        origin = self.start_origin()
        origin.route("/live/a.flv", Synth())
        policy = ('return { origin = function(req, attempt)\n'
                  '  if attempt == 1 then return "http://127.0.0.1:1/dead/a.flv" end\n'
                  '  return "%s" end }\n' % origin.url("/live/a.flv"))
        edge = self.start_edge(live_config(origin.url("/live/"), policy="p.lua"), files={"p.lua": policy})
        v = self.viewer(edge, "/flv/a.flv")
        v.read_media_ms(500)
        s = stream_labels("live", "a")
        self.assertEqual(edge.series("flvedge_stream_origin_connects_total")[s], 2)
        self.assertEqual(edge.series("flvedge_stream_origin_failovers_total")[s], 1)
        # the refused connect is an origin error of this stream, and of the node
        self.assertEqual(edge.series("flvedge_stream_origin_errors_total")[s], 1)
        self.assertEqual(edge.metric("flvedge_origin_failures_total"), 1)
        v.close()

    def test_an_origin_error_mid_stream_is_counted_per_stream_and_the_stream_fails_over(self):
        primary, backup = self.start_origin(), self.start_origin()
        for o in (primary, backup):
            o.route("/live/a.flv", Synth())
            o.route("/live/b.flv", Synth())
        edge = self.start_edge(live_config([primary.url("/live/"), backup.url("/live/")]))
        va, vb = self.viewer(edge, "/flv/a.flv"), self.viewer(edge, "/flv/b.flv")
        for v in (va, vb):
            v.read_media_ms(500)
        a, b = stream_labels("live", "a"), stream_labels("live", "b")
        self.assertEqual(edge.series("flvedge_stream_origin_errors_total"), {a: 0, b: 0})
        primary.kill("/live/a.flv")  # a's pull dies mid-tag, without an end of body
        wait_until(lambda: backup.connections("/live/a.flv") == 1, T(10), "a's pull fails over")
        start = media_span_ms(va.tags)
        va.read_until(lambda v: media_span_ms(v.tags) >= start + 500, T(10), "a plays on")
        self.assertFalse(va.ended)
        self.assertEqual(edge.series("flvedge_stream_origin_errors_total"), {a: 1, b: 0},
                         "only the stream whose origin failed counts it")
        self.assertEqual(edge.series("flvedge_stream_origin_failovers_total"), {a: 1, b: 0})
        self.assertEqual(edge.series("flvedge_stream_origin_connects_total"), {a: 2, b: 1})
        self.assertEqual(edge.metric("flvedge_origin_failures_total"), 1)

    def test_slow_viewers_are_counted_per_stream_as_jumps_dropped_frames_and_kicks(self):
        # One loop: a stream's counters are those of its copies on the loops where it is still
        # open, so every viewer of it shares the loop the normal viewer keeps it open on.
        origin = self.start_origin()
        # About 2.8 MB/s against a 1 MiB window: a viewer that stops for a second falls out of it.
        origin.route("/live/big.flv", Synth(fps=25, gop=25, vsize=100_000, ksize=300_000, asize=400))
        origin.route("/live/calm.flv", Synth())
        edge = self.start_edge(live_config(origin.url("/live/"), slow_viewer_timeout=2,
                                           window_bytes=1 << 20, send_buffer=65536,
                                           top={"workers": 1}))
        normal = self.viewer(edge, "/flv/big.flv", digest=False)
        calm = self.viewer(edge, "/flv/calm.flv")
        stuck = self.viewer(edge, "/flv/big.flv", rcvbuf=4096, digest=False)     # never reads
        jumper = self.viewer(edge, "/flv/big.flv", rcvbuf=4096, digest=False)    # stops, then reads
        s, c = stream_labels("live", "big"), stream_labels("live", "calm")

        def keep_reading(*viewers):
            for v in viewers:
                try:
                    v.pump(0.02)
                except TimeoutError:
                    pass
                self.assertFalse(v.ended, "a viewer that keeps up was cut: %s" % v.path)

        def until(cond, what, *readers):
            deadline = time.monotonic() + T(10)
            while not cond():
                self.assertLess(time.monotonic(), deadline, what)
                keep_reading(normal, calm, *readers)

        # the jumper and the stuck viewer take nothing while 1.2 s of media goes by
        start = media_span_ms(normal.tags)
        until(lambda: media_span_ms(normal.tags) >= start + 1200, "1.2 s more media")
        self.assertEqual(edge.series("flvedge_stream_viewer_jumps_total")[s], 0)
        # the jumper reads again: what it stopped at has left the window, it is moved forward
        until(lambda: edge.series("flvedge_stream_viewer_jumps_total")[s] >= 1,
              "the jumper moved forward", jumper)
        # the stuck one stays stuck past slow_viewer_timeout (2 s): cut off
        until(lambda: edge.series("flvedge_stream_viewers_kicked_total")[s] >= 1,
              "the stuck viewer cut off", jumper)
        self.assertTrue(stuck.conn.wait_closed(T(5)), "the stuck viewer was left open")
        m = edge.metrics()
        big = {name: edge.series("flvedge_stream_" + name)[s]
               for name in ("viewer_jumps_total", "frames_dropped_total", "viewers_kicked_total")}
        self.assertGreater(big["frames_dropped_total"], 0)
        self.assertEqual(big["viewers_kicked_total"], 1)
        # The stream's series are the node's (only this stream had slow viewers)...
        self.assertEqual(big["viewer_jumps_total"], m["flvedge_viewer_jumps_total"])
        self.assertEqual(big["frames_dropped_total"], m["flvedge_frames_dropped_total"])
        self.assertEqual(big["viewers_kicked_total"], m["flvedge_viewers_kicked_total"])
        # ...and the calm stream, read all along, counts none of it.
        for name in ("viewer_jumps_total", "frames_dropped_total", "viewers_kicked_total"):
            self.assertEqual(edge.series("flvedge_stream_" + name)[c], 0, name)
        self.assertEqual(edge.series("flvedge_stream_viewers")[s], 2)

    def test_loop_connections_sum_to_the_open_connections_and_loop_lag_is_plausible(self):
        origin = self.start_origin()
        origin.route("/live/a.flv", Synth())
        edge = self.start_edge(live_config(origin.url("/live/")))
        viewers = [self.viewer(edge, "/flv/a.flv") for _ in range(2 * WORKERS + 1)]
        idle = [HttpConn(edge.port, "/nothing") for _ in range(3)]   # answered 404, kept alive
        for c in idle:
            self.addCleanup(c.close)
            self.assertEqual(c.read_head(T(5)).status, 404)
        for v in viewers:
            v.read_media_ms(200)
        open_now = len(viewers) + len(idle) + 1   # and the metrics request itself
        wait_until(lambda: edge.metric("flvedge_connections") == open_now, T(10),
                   "%d connections open" % open_now)
        text = edge.metrics_text()
        m = parse_metrics(text)
        per_loop = loop_series(text, "connections")
        self.assertEqual(len(per_loop), WORKERS)
        self.assertEqual(sum(per_loop), m["flvedge_connections"])
        self.assertEqual(sum(loop_series(text, "viewers")), len(viewers))
        if WORKERS > 1:
            self.assertTrue(all(n > 0 for n in per_loop), "SO_REUSEPORT spreads them: %r" % per_loop)
        # The lag histogram: a 50 ms timer on each loop, how late it fires; an idle test loop is
        # late by well under 50 ms on average, and every loop keeps counting.
        count0 = loop_series(text, "lag_seconds_count")
        self.assertEqual(len(count0), WORKERS)
        wait_until(lambda: all(b > a + 5 for a, b in zip(count0, edge.loop_metric("lag_seconds_count"))),
                   T(10), "every loop's lag timer fires")
        text = edge.metrics_text()
        counts, sums = loop_series(text, "lag_seconds_count"), loop_series(text, "lag_seconds_sum")
        for i, (n, total) in enumerate(zip(counts, sums)):
            self.assertTrue(0 <= total / n < 0.05, "loop %d: mean lag %.4f s" % (i, total / n))
            inf = float(re.search(r'(?m)^flvedge_loop_lag_seconds_bucket\{loop="%d",le="\+Inf"\} (\S+)$'
                                  % i, text).group(1))
            self.assertEqual(inf, n)
        for v in viewers:
            v.close()
        for c in idle:
            c.close()
        wait_until(lambda: edge.metric("flvedge_connections") == 1, T(10), "only the scrape left")
        self.assertEqual(edge.loop_metric("connections").count(0), WORKERS - 1)


class LatencyAndProcessTest(EdgeTestCase):
    def test_first_byte_and_first_keyframe_histograms(self):
        origin = self.start_origin()
        origin.route("/live/a.flv", Synth())
        edge = self.start_edge(live_config(origin.url("/live/")))
        before = edge.metrics()
        v = self.viewer(edge, "/flv/a.flv")
        v.read_until(lambda v: any(t.is_keyframe for t in v.tags), T(10), "a keyframe")
        m = edge.metrics()
        # The viewer and the /metrics request before this one each have a first byte.
        self.assertGreaterEqual(m["flvedge_first_byte_seconds_count"], before["flvedge_first_byte_seconds_count"] + 1)
        self.assertEqual(m["flvedge_first_keyframe_seconds_count"], 1)
        self.assertGreater(m["flvedge_first_keyframe_seconds_sum"], 0)
        self.assertLess(m["flvedge_first_keyframe_seconds_sum"], T(5))
        text = edge.metrics_text()
        self.assertRegex(text, r'(?m)^flvedge_first_keyframe_seconds_bucket\{le="\+Inf"\} 1$')
        v.close()

    def test_process_series_memory_lua_errors_reloads(self):
        origin = self.start_origin()
        origin.route("/live/a.flv", Synth())
        policy = 'return { access = function(req) if req.query == "boom" then error("boom") end end }\n'
        edge = self.start_edge(live_config(origin.url("/live/"), policy="p.lua"), files={"p.lua": policy})
        m = edge.metrics()
        self.assertGreater(m["flvedge_process_resident_memory_bytes"], 1 << 20)
        self.assertLess(abs(m["flvedge_process_resident_memory_bytes"] / 1024 - edge.rss_kb()), 64 * 1024)
        self.assertEqual(m["flvedge_lua_errors_total"], 0)
        self.assertEqual(m["flvedge_reloads_total"], 0)
        self.assertStatus(self.get(edge, "/flv/a.flv?boom"), 500)
        self.assertEqual(edge.metric("flvedge_lua_errors_total"), 1)
        edge.send_signal(signal.SIGHUP)
        wait_until(lambda: edge.metric("flvedge_reloads_total") == 1, T(10), "a reload counted")
        self.assertEqual(edge.metric("flvedge_reload_failures_total"), 0)
        # Counted per loop, not per Lua state: the reloaded states add to the same total, on
        # whichever loop each request lands.
        self.assertEqual(edge.metric("flvedge_lua_errors_total"), 1)
        for _ in range(4):
            self.assertStatus(self.get(edge, "/flv/a.flv?boom"), 500)
        self.assertEqual(edge.metric("flvedge_lua_errors_total"), 5)


class PublicMetricsTest(EdgeTestCase):
    def test_public_metrics_are_off_unless_status_prefix_is_set(self):
        origin = self.start_origin()
        edge = self.start_edge(live_config(origin.url("/live/")))
        self.assertStatus(self.get(edge, "/_flvedge/metrics"), 404)
        on = self.start_edge(live_config(origin.url("/live/"), top={"status_prefix": "/_flvedge/"}))
        r = self.get(on, "/_flvedge/metrics")
        self.assertStatus(r, 200)
        self.assertRegex(r.body.decode(), r"(?m)^flvedge_connections \d+$")


if __name__ == "__main__":
    unittest.main()
