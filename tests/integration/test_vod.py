"""
FLV VOD (issue 9) end to end: the edge with a vod resource in front of VodOrigin, a file server that
logs every request. Ranges and conditionals compared byte for byte with the origin's file, cache
states (MISS, HIT, EXPIRED, BYPASS), slices in the origin's log, one origin fetch for concurrent
misses, a restart keeping HITs, purge and prefetch on the admin listener, seeking (?start=, ?t=),
ffprobe/ffmpeg through the edge, the cache hook, and the faults: path traversal, an origin that
closes or sends less than announced, a full disk, a cache file changed behind the edge's back.

Exits 77 (ctest: skipped) when the binary has no vod resource yet (`flvedge -t` refuses the type).
"""

import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (T, EdgeTestCase, HttpConn, admin_request, ensure_vod_media,
                        exit_skip_unless_vod, have_ffmpeg, http_request, parse_flv_bytes,
                        parse_multipart_byteranges, raw_exchange, run, status_of, vod_supported,
                        wait_until)

VOD, WHY = vod_supported()
SLICE = 64 * 1024   # the smallest slice_size: many slices in a small file
GOP_S = 2.0         # make_vod_media.sh: a keyframe every 50 frames at 25 fps

# The cache hook of the hook tests: ttl 1 s under /videos/short/, bypass under /videos/nocache/,
# under /videos/q/ the query kept (sent to the origin, part of the key) minus `token`, and under
# /videos/neg/ error answers cached for 2 s.
HOOKS = r"""
return {
  cache = function(req, res)
    local p = req.path
    if res == nil then
      if p:find("^/videos/nocache/") then return { bypass = true } end
      if p:find("^/videos/q/") then
        local kept = {}
        for k, v in (req.query or ""):gmatch("([^&=]+)=?([^&]*)") do
          if k ~= "token" then kept[#kept + 1] = k .. "=" .. v end
        end
        table.sort(kept)
        return { keep_query = true, key = p .. "?" .. table.concat(kept, "&") }
      end
      return nil
    end
    if p:find("^/videos/short/") then return { ttl = 1 } end
    if p:find("^/videos/neg/") and res.status >= 400 then return { cacheable = true, ttl = 2 } end
    return nil
  end,
}
"""


def flv_tags(data):
    """[(offset, type, ts_ms, keyframe)] of every tag of an FLV file."""
    out = []
    pos = 13
    while pos + 11 <= len(data):
        t = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | (data[pos + 7] << 24)
        key = t == 9 and (data[pos + 11] >> 4) == 1 and data[pos + 12] == 1  # AVC NALU, not seq hdr
        out.append((pos, t, ts, key))
        pos += 11 + size + 4
    return out


def cache_status(r):
    return r.header("X-Cache-Status")


def dir_snapshot(d):
    """{relative path: (size, mtime_ns)} of every file under d."""
    out = {}
    for base, _, files in os.walk(d):
        for f in files:
            p = os.path.join(base, f)
            try:
                st = os.stat(p)
            except OSError:
                continue
            out[os.path.relpath(p, d)] = (st.st_size, st.st_mtime_ns)
    return out


def dir_bytes(d):
    return sum(s for s, _ in dir_snapshot(d).values())


class VodCase(EdgeTestCase):
    """An origin root with a.flv (60 s, ~4.5 MB, a keyframe index), s.flv (its first 200 KB) and
    copies of s.flv under short/, nocache/ and q/ for the hook tests."""

    @classmethod
    def setUpClass(cls):
        cls.media = ensure_vod_media(seconds=60)
        cls.root = tempfile.mkdtemp(prefix="flvedge-vodroot-")
        shutil.copyfile(cls.media, os.path.join(cls.root, "a.flv"))
        with open(cls.media, "rb") as f:
            cls.data = f.read()
        cls.small = cls.data[:200000]
        for sub in ("", "short", "nocache", "q"):
            os.makedirs(os.path.join(cls.root, sub), exist_ok=True)
            with open(os.path.join(cls.root, sub, "s.flv"), "wb") as f:
                f.write(cls.small)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def setUp(self):
        self.origin = self.start_vod_origin(self.root, "/media/")
        self.edge = self.start_vod_edge(self.origin, slice_size=SLICE)

    # -- helpers ------------------------------------------------------------------------------

    def get(self, path, headers=None, method="GET", edge=None):
        return http_request((edge or self.edge).port, method, path, headers=headers, timeout=T(30))

    def get_ok(self, path, want, status=200, headers=None, edge=None):
        r = self.get(path, headers, edge=edge)
        self.assertStatus(r, status)
        self.assertTrue(r.clean_end, "the body ended early: %d of %s bytes"
                        % (len(r.body), r.header("Content-Length")))
        self.assertEqual(len(r.body), len(want))
        self.assertTrue(r.body == want, "the body differs from the origin's bytes")
        return r

    def origin_gets(self, rel="a.flv"):
        return self.origin.requests("/media/" + rel, "GET")

    def wait_cached(self, path, edge=None):
        """Until a HEAD of path says HIT (the store may end just after the body was sent)."""
        wait_until(lambda: cache_status(self.get(path, method="HEAD", edge=edge)) == "HIT",
                   T(10), "%s cached (HEAD -> HIT)" % path)

    def wait_stored(self, size):
        """Until every slice is stored (HIT says only that the object is known: a slice may still
        be on its way to the disk, and a request then takes it from the fetch's memory)."""
        wait_until(lambda: self.edge.metric("flvedge_vod_cache_bytes") == size
                   and self.edge.metric("flvedge_vod_fetches") == 0, T(10), "every slice stored")

    def fetch_whole(self, path="/videos/a.flv", want=None, edge=None):
        r = self.get_ok(path, self.data if want is None else want, edge=edge)
        self.wait_cached(path, edge)
        return r


@unittest.skipUnless(VOD, WHY)
class VodBasicsTest(VodCase):
    def test_miss_then_hit_with_validators_and_headers(self):
        r = self.get_ok("/videos/a.flv", self.data)
        self.assertEqual(cache_status(r), "MISS")
        self.assertEqual(r.header("Accept-Ranges"), "bytes")
        self.assertEqual(r.header("Content-Type"), "video/x-flv")
        first = self.origin.requests("/media/a.flv")[0]
        st = os.stat(os.path.join(self.root, "a.flv"))
        self.assertEqual(r.header("ETag"), '"%x-%x"' % (st.st_size, st.st_mtime_ns))
        self.assertIsNotNone(r.header("Last-Modified"))
        self.assertIn("X-Cache-Status", r.header("Access-Control-Expose-Headers") or "")
        self.assertIsNone(first["target"].partition("?")[2] or None)
        self.wait_cached("/videos/a.flv")
        n = len(self.origin_gets())
        r2 = self.get_ok("/videos/a.flv", self.data)
        self.assertEqual(cache_status(r2), "HIT")
        self.assertEqual(r2.header("ETag"), r.header("ETag"))
        self.assertEqual(len(self.origin_gets()), n, "a HIT asked the origin")

    def test_origin_sees_only_aligned_slice_ranges(self):
        self.fetch_whole()
        size = len(self.data)
        seen = set()
        for rng in self.origin.ranges("/media/a.flv"):
            m = re.match(r"^bytes=(\d+)-(\d+)$", rng or "")
            self.assertTrue(m, "an origin request without an aligned slice range: %r" % rng)
            a, b = int(m.group(1)), int(m.group(2))
            self.assertEqual(a % SLICE, 0, rng)
            self.assertIn(b, (a + SLICE - 1, size - 1), rng)
            seen.add(a // SLICE)
        self.assertEqual(seen, set(range((size + SLICE - 1) // SLICE)), "every slice once at least")

    def test_range_inside_slice_11_fetches_slice_11_only(self):
        a = 11 * SLICE + 1000
        r = self.get_ok("/videos/a.flv", self.data[a:a + 5000], 206,
                        {"Range": "bytes=%d-%d" % (a, a + 4999)})
        self.assertEqual(r.header("Content-Range"), "bytes %d-%d/%d" % (a, a + 4999, len(self.data)))
        reqs = self.origin.requests("/media/a.flv")
        self.assertEqual([(q["method"], q["range"]) for q in reqs],
                         [("GET", "bytes=%d-%d" % (11 * SLICE, 12 * SLICE - 1))])

    def test_query_string_is_ignored_without_a_hook(self):
        """No cache hook: the query is not sent to the origin and not part of the key, so
        ?x=1 fills the object the bare path (and any other query) then hits."""
        r = self.get_ok("/videos/s.flv?x=1", self.small)
        self.assertEqual(cache_status(r), "MISS")
        self.assertEqual([q["target"] for q in self.origin_gets("s.flv")], ["/media/s.flv"] * 4,
                         "the origin was asked with the query or not in slices")
        self.wait_cached("/videos/s.flv")
        n = len(self.origin.requests())
        for path in ("/videos/s.flv", "/videos/s.flv?y=2&x=1"):
            with self.subTest(path=path):
                self.assertEqual(cache_status(self.get_ok(path, self.small)), "HIT")
        self.assertEqual(len(self.origin.requests()), n, "a request with another query went to the origin")

    def test_long_paths_are_whole_objects_up_to_3072_bytes_then_414(self):
        # The origin URL, the cache key and the client path are never cut (a key cut short would
        # be another object's): two paths sharing their first 1700 bytes are two objects, kept
        # across a restart (their .meta records hold both whole) and purged by their own path;
        # a path past FE_VOD_PATH_MAX (3072) gets 414, as does its prefetch.
        deep = "/".join(["d" * 200] * 8)
        os.makedirs(os.path.join(self.root, deep), exist_ok=True)
        bodies = {"x1.flv": self.small[:100000], "x2.flv": self.small[100000:]}
        for name, body in bodies.items():
            with open(os.path.join(self.root, deep, name), "wb") as f:
                f.write(body)
        paths = {"/videos/%s/%s" % (deep, name): body for name, body in bodies.items()}
        for path, body in paths.items():
            self.assertEqual(cache_status(self.get_ok(path, body)), "MISS")
            self.wait_cached(path)
        self.wait_stored(len(self.small))
        cache_dir = self.edge.cache_dir
        self.edge.finish()
        self.origin.clear_log()
        self.edge = self.start_vod_edge(self.origin, cache_dir=cache_dir, slice_size=SLICE)
        for path, body in paths.items():
            with self.subTest(path=path[-6:]):
                self.assertEqual(cache_status(self.get_ok(path, body)), "HIT")
        self.assertEqual(self.origin.requests(), [], "the origin was asked after the restart")
        first = next(iter(paths))
        r = admin_request(self.edge, "POST", "/vod/purge", {"urls": [first]})
        self.assertEqual(r.json, {"purged": 1})
        self.assertEqual([cache_status(self.get(p, method="HEAD")) for p in paths], ["MISS", "HIT"])
        too_long = "/videos/" + "/".join(["e" * 200] * 16) + "/x.flv"
        self.assertStatus(self.get(too_long), 414)
        self.assertFalse([q for q in self.origin.requests() if "eeee" in q["target"]],
                         "a path past the limit went to the origin")
        r = admin_request(self.edge, "POST", "/vod/prefetch", {"urls": [too_long]})
        self.assertEqual(r.json.get("queued"), 0, r.json)

    def test_head(self):
        r = self.get("/videos/a.flv", method="HEAD")
        self.assertStatus(r, 200)
        self.assertEqual(r.header("Content-Length"), str(len(self.data)))
        self.assertEqual(r.body, b"")

    def test_missing_file_is_404_from_the_origin(self):
        r = self.get("/videos/none.flv")
        self.assertStatus(r, 404)
        self.assertEqual(len(self.origin.requests("/media/none.flv")), 1)
        r = self.get("/videos/none.flv")
        self.assertStatus(r, 404)
        self.assertEqual(len(self.origin.requests("/media/none.flv")), 2, "a 404 was cached")


@unittest.skipUnless(VOD, WHY)
class VodCorsTest(VodCase):
    """A player on another site (mpegts.js) reads Content-Length and Content-Range and sends
    Range: VOD answers carry the CORS headers and a preflight on the prefix allows Range."""

    def check_cors(self, r, allow="*"):
        self.assertEqual(r.header("Access-Control-Allow-Origin"), allow)
        exposed = [h.strip().lower() for h in (r.header("Access-Control-Expose-Headers") or "").split(",")]
        for h in ("content-length", "content-range", "x-cache-status"):
            self.assertIn(h, exposed)

    def test_answers_carry_cors_headers(self):
        o = {"Origin": "https://player.example"}
        for cached in (False, True):
            with self.subTest(cached=cached):
                self.check_cors(self.get_ok("/videos/s.flv", self.small, 200, o))
                self.check_cors(self.get_ok("/videos/s.flv", self.small[10:20], 206,
                                            dict(o, Range="bytes=10-19")))
                self.check_cors(self.get("/videos/s.flv", dict(o, Range="bytes=900000-")))  # 416
                self.check_cors(self.get("/videos/s.flv", o, method="HEAD"))
            if not cached:
                self.wait_cached("/videos/s.flv")

    def test_cors_origin_setting_is_used(self):
        edge = self.start_vod_edge(self.origin, slice_size=SLICE, top={"cors_origin": "https://p.example"})
        self.check_cors(self.get_ok("/videos/s.flv", self.small, edge=edge), "https://p.example")

    def test_preflight_allows_range(self):
        n = len(self.origin.requests())
        r = self.get("/videos/a.flv", {"Origin": "https://player.example",
                                       "Access-Control-Request-Method": "GET",
                                       "Access-Control-Request-Headers": "range"}, method="OPTIONS")
        self.assertIn(r.status, (200, 204))
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "*")
        methods = [m.strip() for m in (r.header("Access-Control-Allow-Methods") or "").split(",")]
        self.assertIn("GET", methods)
        allowed = [h.strip().lower() for h in (r.header("Access-Control-Allow-Headers") or "").split(",")]
        self.assertIn("range", allowed)
        self.assertEqual(len(self.origin.requests()), n, "a preflight went to the origin")


@unittest.skipUnless(VOD, WHY)
class VodRangeTest(VodCase):
    def ranges(self):
        size = len(self.data)
        return [("bytes=0-99", 0, 99), ("bytes=100000-299999", 100000, 299999),
                ("bytes=%d-%d" % (SLICE - 10, 3 * SLICE + 10), SLICE - 10, 3 * SLICE + 10),
                ("bytes=4000000-", 4000000, size - 1), ("bytes=-5000", size - 5000, size - 1),
                ("bytes=-%d" % (size * 2), 0, size - 1),
                ("bytes=%d-%d" % (size - 10, size * 3), size - 10, size - 1)]

    def check_ranges(self):
        size = len(self.data)
        for spec, a, b in self.ranges():
            with self.subTest(range=spec):
                r = self.get_ok("/videos/a.flv", self.data[a:b + 1], 206, {"Range": spec})
                self.assertEqual(r.header("Content-Range"), "bytes %d-%d/%d" % (a, b, size))

    def test_ranges_uncached_then_cached(self):
        self.check_ranges()
        self.fetch_whole()
        n = len(self.origin_gets())
        self.check_ranges()
        self.assertEqual(len(self.origin_gets()), n, "cached ranges asked the origin")

    def test_unsatisfiable_is_416(self):
        size = len(self.data)
        for spec in ("bytes=%d-" % size, "bytes=%d-%d" % (size + 5, size + 10)):
            with self.subTest(range=spec):
                r = self.get("/videos/a.flv", {"Range": spec})
                self.assertStatus(r, 416)
                self.assertEqual(r.header("Content-Range"), "bytes */%d" % size)

    def test_multi_range_is_multipart(self):
        size = len(self.data)
        want = [(0, 9), (200000, 200099), (size - 10, size - 1)]
        r = self.get("/videos/a.flv", {"Range": "bytes=0-9,200000-200099,-10"})
        self.assertStatus(r, 206)
        self.assertTrue(r.clean_end)
        parts = parse_multipart_byteranges(r.header("Content-Type"), r.body)
        self.assertEqual([(a, b, s) for a, b, s, _, _ in parts], [(a, b, size) for a, b in want])
        for a, b, _, ctype, body in parts:
            self.assertEqual(body, self.data[a:b + 1], "part %d-%d" % (a, b))
            self.assertEqual(ctype, "video/x-flv")

    def test_if_range(self):
        etag = self.get("/videos/a.flv", method="HEAD").header("ETag")
        self.get_ok("/videos/a.flv", self.data[1000:2000], 206,
                    {"Range": "bytes=1000-1999", "If-Range": etag})
        self.get_ok("/videos/a.flv", self.data, 200,
                    {"Range": "bytes=1000-1999", "If-Range": '"stale-etag"'})

    def test_if_range_with_a_date(self):
        """If-Range with an HTTP date: the object's Last-Modified -> the range (206); an older
        date -> the whole file (200), for an uncached and a cached object."""
        for cached in (False, True):
            lm = self.get("/videos/a.flv", method="HEAD").header("Last-Modified")
            self.assertIsNotNone(lm)
            with self.subTest(cached=cached):
                r = self.get_ok("/videos/a.flv", self.data[1000:2000], 206,
                                {"Range": "bytes=1000-1999", "If-Range": lm})
                self.assertEqual(r.header("Content-Range"), "bytes 1000-1999/%d" % len(self.data))
                self.get_ok("/videos/a.flv", self.data, 200,
                            {"Range": "bytes=1000-1999", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"})
            if not cached:
                self.fetch_whole()

    def test_if_none_match_takes_precedence_over_if_modified_since(self):
        """RFC 9110 13.2.2: with If-None-Match, If-Modified-Since is not looked at."""
        self.fetch_whole()
        head = self.get("/videos/a.flv", method="HEAD")
        etag, lm = head.header("ETag"), head.header("Last-Modified")
        # If-Modified-Since alone would say 304; the ETag does not match: 200 whole.
        self.get_ok("/videos/a.flv", self.data, 200, {"If-None-Match": '"other"', "If-Modified-Since": lm})
        # If-Modified-Since alone would say 200; the ETag matches: 304.
        r = self.get("/videos/a.flv", {"If-None-Match": etag,
                                       "If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
        self.assertStatus(r, 304)
        self.assertEqual(r.body, b"")

    def test_if_none_match_and_if_modified_since(self):
        for cached in (False, True):
            head = self.get("/videos/a.flv", method="HEAD")
            etag, lm = head.header("ETag"), head.header("Last-Modified")
            with self.subTest(cached=cached):
                r = self.get("/videos/a.flv", {"If-None-Match": etag})
                self.assertStatus(r, 304)
                self.assertEqual(r.body, b"")
                self.assertEqual(r.header("ETag"), etag)
                r = self.get("/videos/a.flv", {"If-None-Match": '"other"'})
                self.assertStatus(r, 200)
                self.assertEqual(r.body, self.data)
                self.assertStatus(self.get("/videos/a.flv", {"If-Modified-Since": lm}), 304)
                self.get_ok("/videos/a.flv", self.data, 200,
                            {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
            if not cached:
                self.fetch_whole()


@unittest.skipUnless(VOD, WHY)
class VodSharingTest(VodCase):
    def test_concurrent_misses_make_one_origin_request_and_are_fed_as_it_arrives(self):
        # The origin sends the head and 2000 bytes of slice 5, then stalls: 8 viewers asking for
        # bytes inside those 2000 each get a whole answer while that one request is all there is.
        a = 5 * SLICE
        self.origin.set_fault("stall", path="/media/a.flv", after=2000)
        results = [None] * 8

        def one(i):
            try:
                results[i] = self.get("/videos/a.flv", {"Range": "bytes=%d-%d" % (a + 100, a + 1099)})
            except BaseException as e:  # reported below
                results[i] = e

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T(30))
        for r in results:
            self.assertNotIsInstance(r, BaseException, r)
            self.assertStatus(r, 206)
            self.assertEqual(r.body, self.data[a + 100:a + 1100])
        gets = self.origin_gets()
        self.assertEqual(len(gets), 1, [g["range"] for g in gets])
        self.assertEqual(gets[0]["range"], "bytes=%d-%d" % (a, a + SLICE - 1))
        self.origin.clear_fault()

    def test_restart_keeps_hits(self):
        self.fetch_whole()
        cache_dir = self.edge.cache_dir
        self.edge.finish()
        self.origin.clear_log()
        edge2 = self.start_vod_edge(self.origin, cache_dir=cache_dir, slice_size=SLICE)
        r = self.get_ok("/videos/a.flv", self.data, edge=edge2)
        self.assertEqual(cache_status(r), "HIT")
        self.get_ok("/videos/a.flv", self.data[SLICE * 3:SLICE * 4], 206,
                    {"Range": "bytes=%d-%d" % (SLICE * 3, SLICE * 4 - 1)}, edge=edge2)
        self.assertEqual(self.origin.requests(), [], "the origin was asked after the restart")


@unittest.skipUnless(VOD, WHY)
class VodMultiLoopTest(VodCase):
    """Two loops: misses for one slice from clients on both loops make one origin request, and
    every client is fed from it. Which loop holds a connection is read from the per-loop
    connections gauge as each connection is opened."""

    LOOPS = 2

    def setUp(self):
        self.origin = self.start_vod_origin(self.root, "/media/")
        self.edge = self.start_vod_edge(self.origin, slice_size=SLICE, top={"workers": self.LOOPS})

    def open_on_loops(self, per_loop, limit=200):
        """Idle connections until each loop holds per_loop of them: {loop: [HttpConn]}."""
        by_loop = {}
        for _ in range(limit):
            before = self.edge.loop_metric("connections")
            c = HttpConn(self.edge.port, raw=b"")
            self.addCleanup(c.close)
            after = wait_until(lambda: (lambda a: a if sum(a) == sum(before) + 1 else None)(
                self.edge.loop_metric("connections")), T(10), "the new connection in the gauge")
            loop = next(i for i in range(len(after)) if after[i] == before[i] + 1)
            if len(by_loop.get(loop, [])) < per_loop:
                by_loop.setdefault(loop, []).append(c)
            else:
                c.close()
                wait_until(lambda: sum(self.edge.loop_metric("connections")) == sum(before), T(10),
                           "a spare connection gone")
            if len(by_loop) == self.LOOPS and all(len(v) == per_loop for v in by_loop.values()):
                return by_loop
        self.fail("connections never spread over %d loops: %r"
                  % (self.LOOPS, {k: len(v) for k, v in by_loop.items()}))

    def test_misses_on_different_loops_make_one_origin_request(self):
        by_loop = self.open_on_loops(3)
        a = 2 * SLICE
        # The origin sends the head and 2000 bytes of the slice, then stalls: every client asks
        # for bytes inside those, so all complete while that one request is all there is.
        self.origin.set_fault("stall", path="/media/a.flv", after=2000)
        req = ("GET /videos/a.flv HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-%d\r\n\r\n"
               % (a + 100, a + 1099)).encode()
        conns = [c for cs in by_loop.values() for c in cs]
        for c in conns:
            c.send(req)
        for c in conns:
            r = c.read_head(T(10))
            self.assertEqual(r.status, 206)
            self.assertEqual(c.read_body_all(T(10)), self.data[a + 100:a + 1100])
        gets = self.origin_gets()
        self.assertEqual([g["range"] for g in gets], ["bytes=%d-%d" % (a, a + SLICE - 1)])
        self.assertEqual(sorted(by_loop), list(range(self.LOOPS)))
        self.origin.clear_fault()


@unittest.skipUnless(VOD, WHY)
class VodAdminTest(VodCase):
    def test_admin_needs_the_token(self):
        self.assertStatus(admin_request(self.edge, "POST", "/vod/purge", {"urls": ["/videos/a.flv"]},
                                        token=None), 401)
        self.assertStatus(admin_request(self.edge, "POST", "/vod/purge", {"urls": ["/videos/a.flv"]},
                                        token="wrong"), 401)
        r = admin_request(self.edge, "POST", "/vod/purge", b"{not json")
        self.assertStatus(r, 400)

    def test_purge_exact_then_pattern(self):
        self.fetch_whole()
        self.fetch_whole("/videos/s.flv", self.small)
        r = admin_request(self.edge, "POST", "/vod/purge", {"urls": ["/videos/a.flv?x=1"]})
        self.assertStatus(r, 200)
        self.assertEqual(r.json, {"purged": 1})
        self.assertEqual(cache_status(self.get_ok("/videos/a.flv", self.data)), "MISS")
        self.assertEqual(cache_status(self.get_ok("/videos/s.flv", self.small)), "HIT")
        self.wait_cached("/videos/a.flv")
        r = admin_request(self.edge, "POST", "/vod/purge", {"pattern": "/videos/*"})
        self.assertStatus(r, 200)
        self.assertGreaterEqual(r.json["purged"], 2, r.json)
        n = len(self.origin_gets("s.flv"))
        self.assertEqual(cache_status(self.get_ok("/videos/s.flv", self.small)), "MISS")
        self.assertEqual(cache_status(self.get_ok("/videos/a.flv", self.data)), "MISS")
        self.assertGreater(len(self.origin_gets("s.flv")), n)

    def test_prefetch_then_hit_without_the_origin(self):
        r = admin_request(self.edge, "POST", "/vod/prefetch", {"urls": ["/videos/a.flv"]})
        self.assertStatus(r, 202)
        self.assertEqual(r.json, {"queued": 1})
        size = len(self.data)
        wait_until(lambda: self.origin.bytes_by_path.get("/media/a.flv", 0) >= size, T(30),
                   "the prefetch to fetch the whole file")
        self.wait_cached("/videos/a.flv")
        self.origin.clear_log()
        r = self.get_ok("/videos/a.flv", self.data)
        self.assertEqual(cache_status(r), "HIT")
        self.assertEqual(self.origin.requests(), [])


@unittest.skipUnless(VOD, WHY)
class VodEvictionTest(VodCase):
    """cache_max_size reached: the least recently used object goes, a recently used one stays."""

    SLICE = 400000    # one slice a file
    FILE = 350000
    MAX = 1100000     # three files fit, a fourth goes over (the smallest limit is 1 MiB)

    def setUp(self):
        self.root2 = tempfile.mkdtemp(prefix="flvedge-vodlru-")
        self.addCleanup(shutil.rmtree, self.root2, True)
        self.files = {}
        for name in "abcd":
            self.files[name] = (self.data[:self.FILE - 1] + name.encode())
            with open(os.path.join(self.root2, name + ".flv"), "wb") as f:
                f.write(self.files[name])
        self.origin = self.start_vod_origin(self.root2, "/media/")

    def fill(self, edge, prefix, name):
        path = "%s%s.flv" % (prefix, name)
        r = self.get_ok(path, self.files[name], edge=edge)
        self.wait_cached(path, edge)
        return r

    def check_lru(self, edge, pa, pb, cache_dir):
        """a, b, c stored (through prefixes pa/pb alternately), a used again, d stored: b goes."""
        self.fill(edge, pa, "a")
        self.fill(edge, pb, "b")
        self.fill(edge, pa, "c")
        self.assertEqual(cache_status(self.get_ok(pb + "a.flv", self.files["a"], edge=edge)), "HIT")
        self.fill(edge, pb, "d")
        wait_until(lambda: edge.metric("flvedge_vod_cache_objects") == 3, T(10),
                   "one object evicted (objects: %s)" % edge.metric("flvedge_vod_cache_objects"))
        wait_until(lambda: dir_bytes(cache_dir) - sum(
            s for rel, (s, _) in dir_snapshot(cache_dir).items() if rel.endswith(".meta")) <= self.MAX,
                   T(10), "the slice files under cache_max_size")
        self.assertEqual(edge.metric("flvedge_vod_cache_bytes"), 3 * self.FILE)
        n = len(self.origin.requests())
        for name in "acd":
            with self.subTest(kept=name):
                self.assertEqual(cache_status(self.get_ok(pa + name + ".flv", self.files[name],
                                                          edge=edge)), "HIT")
        self.assertEqual(len(self.origin.requests()), n, "a kept object was fetched again")
        r = self.get_ok(pb + "b.flv", self.files["b"], edge=edge)
        self.assertEqual(cache_status(r), "MISS", "the least recently used object was not evicted")
        self.assertEqual(len(self.origin.requests("/media/b.flv", "GET")), 2)

    def test_least_recently_used_goes_first(self):
        edge = self.start_vod_edge(self.origin, slice_size=self.SLICE, cache_max_size=self.MAX)
        self.check_lru(edge, "/videos/", "/videos/", edge.cache_dir)

    def test_two_resources_share_one_cache_directory(self):
        """Two vod resources, one directory: one object per origin URL whichever prefix asked,
        and one size limit over both, the largest (/clips/' 1 MiB alone would hold two files)."""
        cache_dir = tempfile.mkdtemp(prefix="flvedge-vodshared-")
        self.addCleanup(shutil.rmtree, cache_dir, True)
        clips = {"name": "clips", "prefix": "/clips/", "type": "vod", "origin": self.origin.url(),
                 "cache_dir": cache_dir, "slice_size": self.SLICE, "cache_max_size": 2 ** 20}
        edge = self.start_vod_edge(self.origin, cache_dir=cache_dir, slice_size=self.SLICE,
                                   cache_max_size=self.MAX, extra_resources=[clips])
        self.check_lru(edge, "/videos/", "/clips/", cache_dir)


@unittest.skipUnless(VOD, WHY)
class VodPrefetchListTest(VodCase):
    """A prefetch of several paths: at most 4 files fetched at a time (docs/vod.md), and each
    becomes a HIT with no viewer request reaching the origin."""

    N = 9

    def setUp(self):
        self.root2 = tempfile.mkdtemp(prefix="flvedge-vodpf-")
        self.addCleanup(shutil.rmtree, self.root2, True)
        self.files = {}
        for i in range(self.N):
            self.files[i] = self.small[:100000] + bytes([i])  # two slices each
            with open(os.path.join(self.root2, "p%d.flv" % i), "wb") as f:
                f.write(self.files[i])
        self.origin = self.start_vod_origin(self.root2, "/media/")
        self.edge = self.start_vod_edge(self.origin, slice_size=SLICE)

    def test_prefetch_of_a_list_is_bounded_and_fills_the_cache(self):
        self.origin.set_fault("delay", after=0.3)  # every origin answer held: overlaps show
        urls = ["/videos/p%d.flv" % i for i in range(self.N)]
        r = admin_request(self.edge, "POST", "/vod/prefetch", {"urls": urls})
        self.assertStatus(r, 202)
        self.assertEqual(r.json, {"queued": self.N})
        total = sum(len(b) for b in self.files.values())
        wait_until(lambda: self.edge.metric("flvedge_vod_cache_bytes") == total
                   and self.edge.metric("flvedge_vod_fetches") == 0, T(30),
                   "every prefetched file stored (%s of %d bytes)"
                   % (self.edge.metric("flvedge_vod_cache_bytes"), total))
        self.origin.clear_fault()
        self.assertLessEqual(self.origin.max_active, 4, "more than 4 prefetch fetches at once")
        self.assertGreaterEqual(self.origin.max_active, 2, "the prefetches ran one by one")
        self.assertEqual(len(self.origin.requests(method="GET")), 2 * self.N, "a slice fetched twice")
        self.origin.clear_log()
        for i in range(self.N):
            with self.subTest(path=urls[i]):
                self.assertEqual(cache_status(self.get_ok(urls[i], self.files[i])), "HIT")
        self.assertEqual(self.origin.requests(), [], "a viewer went to the origin after the prefetch")


@unittest.skipUnless(VOD, WHY)
class VodSeekTest(VodCase):
    def test_start_bytes(self):
        tags = flv_tags(self.data)
        off = [o for o, t, ts, k in tags if k and ts >= 20000][0]
        r = self.get_ok("/videos/a.flv?start=%d" % off, self.data[:13] + self.data[off:])
        self.assertEqual(r.header("Content-Length"), str(13 + len(self.data) - off))

    @unittest.skipUnless(have_ffmpeg(), "ffmpeg/ffprobe not installed")
    def test_t_seconds_starts_at_the_keyframe_before(self):
        self.check_time_seek("/videos/a.flv?t=%g", 29.5)

    @unittest.skipUnless(have_ffmpeg(), "ffmpeg/ffprobe not installed")
    def test_start_seconds_with_start_unit_seconds(self):
        """start_unit = "seconds": ?start=S is a time, as ?t=S (not a byte offset)."""
        self.edge = self.start_vod_edge(self.origin, slice_size=SLICE, start_unit="seconds")
        self.check_time_seek("/videos/a.flv?start=%g", 41.3)

    def check_time_seek(self, fmt, t):
        tags = flv_tags(self.data)
        key = [(o, ts) for o, ty, ts, k in tags if k and ts <= t * 1000][-1]
        for cached in (False, True):
            with self.subTest(cached=cached):
                r = self.get(fmt % t)
                self.assertStatus(r, 200)
                self.assertTrue(r.clean_end)
                self.assertEqual(r.header("Content-Length"), str(len(r.body)))
                body = r.body
                self.assertEqual(body[:3], b"FLV")
                self.assertTrue(body.endswith(self.data[key[0]:]), "not the file from the keyframe")
                self.assertLess(len(body), len(self.data) - key[0] + 13 + 4096, "a prefix too big")
                parsed = parse_flv_bytes(body).tags
                self.assertTrue(parsed[0].is_metadata, "the answer does not start with onMetaData")
                first = next(i for i, x in enumerate(parsed) if x.is_media and not x.is_seq_header)
                self.assertTrue(any(x.is_video and x.is_seq_header for x in parsed[:first]),
                                "no video sequence header before the first frame")
                self.assertTrue(any(x.is_audio and x.is_seq_header for x in parsed[:first]),
                                "no audio sequence header before the first frame")
                media = [x for x in parsed if x.is_video and not x.is_seq_header]
                self.assertTrue(media[0].is_keyframe, "the first video frame is no keyframe")
                with tempfile.NamedTemporaryFile(suffix=".flv") as f:
                    f.write(body)
                    f.flush()
                    p = run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                             "packet=pts_time", "-read_intervals", "%+#1", "-of", "csv=p=0", f.name],
                            timeout=T(30))
                    self.assertEqual(p.returncode, 0, p.stderr)
                    pts = float(p.stdout.split()[0].strip(","))
                    self.assertLessEqual(pts, t)
                    self.assertGreater(pts, t - GOP_S - 0.001)
                    d = run(["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", f.name,
                             "-f", "null", "-"], timeout=T(60))
                    self.assertEqual(d.returncode, 0, d.stderr[-2000:])
            if not cached:
                self.fetch_whole()


@unittest.skipUnless(VOD, WHY)
@unittest.skipUnless(have_ffmpeg(), "ffmpeg/ffprobe not installed")
class VodFfmpegTest(VodCase):
    def test_ffprobe_and_ffmpeg_uncached_then_cached(self):
        url = self.edge.url("/videos/a.flv")
        for cached in (False, True):
            with self.subTest(cached=cached):
                n = len(self.origin_gets())
                p = run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                         "-of", "csv=p=0", url], timeout=T(60))
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(sorted(p.stdout.split()), ["aac", "h264"])
                d = run(["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", url, "-f", "null", "-"],
                        timeout=T(120))
                self.assertEqual(d.returncode, 0, d.stderr[-2000:])
                self.assertEqual(d.stderr.strip(), "")
                if cached:
                    self.assertEqual(len(self.origin_gets()), n, "a cached run asked the origin")
                else:
                    self.assertGreater(len(self.origin_gets()), n)
            self.wait_cached("/videos/a.flv")


@unittest.skipUnless(VOD, WHY)
class VodBadInputTest(VodCase):
    def test_path_traversal_is_400_and_fetches_nothing(self):
        before = dir_snapshot(self.edge.cache_dir)
        for path in ("/videos/../x", "/videos/../videos/a.flv", "/videos/%2e%2e/x",
                     "/videos/%2E%2E/a.flv", "/videos/.%2e/a.flv", "/videos/a%2fb.flv",
                     "/videos/..%2fa.flv", "/videos/a%5cb.flv", "/videos/a\\..\\b.flv",
                     "/videos/a%00.flv"):
            with self.subTest(path=path):
                raw, _ = raw_exchange(self.edge.port, ("GET %s HTTP/1.1\r\nHost: x\r\n"
                                                       "Connection: close\r\n\r\n" % path).encode())
                self.assertEqual(status_of(raw), 400, raw[:200])
        self.assertEqual(self.origin.requests(), [])
        self.assertEqual(dir_snapshot(self.edge.cache_dir), before)

    def check_fault_then_clean(self, kind, **fault):
        self.origin.set_fault(kind, path="/media/a.flv", **fault)
        c = HttpConn(self.edge.port, "/videos/a.flv", headers={"Connection": "close"})
        self.addCleanup(c.close)
        r = c.read_head(T(10))
        if r.status == 200:
            body = c.read_body_all(T(30))
            self.assertLess(len(body), len(self.data))
            self.assertFalse(c.clean_end, "a short body ended as if complete")
            self.assertTrue(c.eof, "the connection was not closed")
            self.assertEqual(body, self.data[:len(body)], "the bytes that came are wrong")
        else:  # the fault came before the edge answered: an error status is fine too
            self.assertGreaterEqual(r.status, 500)
        self.origin.clear_fault()
        r = self.get_ok("/videos/a.flv", self.data)
        self.assertEqual(cache_status(r), "MISS", "a broken fetch was stored")
        self.wait_cached("/videos/a.flv")
        self.get_ok("/videos/a.flv", self.data)

    def test_origin_closing_mid_file_stores_nothing(self):
        self.check_fault_then_clean("close", after=30000, times=1)

    def test_origin_sending_less_than_announced_stores_nothing(self):
        self.check_fault_then_clean("short", missing=1, times=1)

    def test_origin_5xx_is_passed_on_and_not_cached(self):
        self.origin.set_fault("status", path="/media/a.flv", status=503)
        self.assertStatus(self.get("/videos/a.flv"), 503)
        self.origin.clear_fault()
        self.assertEqual(cache_status(self.get_ok("/videos/a.flv", self.data)), "MISS")

    def test_origin_without_ranges_is_served_right(self):
        self.origin.set_fault("no_ranges", path="/media/a.flv")
        a = 7 * SLICE + 123
        self.get_ok("/videos/a.flv", self.data[a:a + 1000], 206,
                    {"Range": "bytes=%d-%d" % (a, a + 999)})
        self.get_ok("/videos/a.flv", self.data)

    def test_origin_without_ranges_is_cached_from_few_whole_answers(self):
        """Every 200 answer's passing slices are stored: the whole file is in the cache after a
        few origin requests, not one whole-file request per slice."""
        self.origin.set_fault("no_ranges", path="/media/a.flv")
        nslices = (len(self.data) + SLICE - 1) // SLICE
        self.get_ok("/videos/a.flv", self.data[:1000], 206, {"Range": "bytes=0-999"})
        # The first answer's tail is read on and stored slice by slice.
        wait_until(lambda: self.origin.bytes_by_path.get("/media/a.flv", 0) >= len(self.data),
                   T(10), "the origin sending the whole file once")
        for _ in range(3):
            self.get_ok("/videos/a.flv", self.data)
        n = len(self.origin_gets())
        self.assertEqual(n, 1, "%d whole-file requests for %d slices\n%s" % (n, nslices, self.edge.stderr_tail()))
        self.wait_cached("/videos/a.flv")
        r = self.get_ok("/videos/a.flv", self.data)
        self.assertEqual(cache_status(r), "HIT")
        r = self.get_ok("/videos/a.flv", self.data)
        self.assertEqual(len(self.origin_gets()), n, "a hit of the whole file asked the origin")

    def corrupt_largest_cache_file(self, how):
        # Every slice stored first: a slice still being written is a .tmp, and corrupting that
        # one corrupts nothing the index knows.
        self.wait_stored(len(self.data))
        files = sorted(((rel, v) for rel, v in dir_snapshot(self.edge.cache_dir).items()
                        if not rel.endswith(".tmp")), key=lambda kv: -kv[1][0])
        self.assertTrue(files, "nothing in the cache directory")
        p = os.path.join(self.edge.cache_dir, files[0][0])
        size = files[0][1][0]
        if how == "truncate":
            os.truncate(p, size // 2)
        else:  # the same size, other bytes, a later mtime
            with open(p, "r+b") as f:
                f.write(b"\xAA" * size)
            st = os.stat(p)
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))

    def test_truncated_cache_file_is_refetched(self):
        self.fetch_whole()
        n = len(self.origin_gets())
        self.corrupt_largest_cache_file("truncate")
        self.get_ok("/videos/a.flv", self.data)
        self.assertGreater(len(self.origin_gets()), n, "nothing was refetched")

    def test_overwritten_cache_file_is_refetched(self):
        self.fetch_whole()
        n = len(self.origin_gets())
        self.corrupt_largest_cache_file("overwrite")
        self.get_ok("/videos/a.flv", self.data)
        self.assertGreater(len(self.origin_gets()), n, "nothing was refetched")

    def test_full_disk_stops_caching_not_serving(self):
        d = tempfile.mkdtemp(prefix="flvedge-vodtmpfs-")
        self.addCleanup(shutil.rmtree, d, True)
        m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", d],
                           capture_output=True, text=True)
        if m.returncode != 0:
            self.skipTest("cannot mount a 2 MiB tmpfs for the cache (%s)" % m.stderr.strip())
        self.addCleanup(subprocess.run, ["umount", "-l", d], capture_output=True)
        edge = self.start_vod_edge(self.origin, cache_dir=d, slice_size=SLICE)
        for _ in range(2):
            self.get_ok("/videos/a.flv", self.data, edge=edge)  # 4.5 MB through a 2 MiB cache
        st = os.statvfs(d)
        self.assertLessEqual((st.f_blocks - st.f_bfree) * st.f_frsize, 2 * 2**20)
        self.get_ok("/videos/s.flv", self.small, edge=edge)
        self.assertTrue(edge.alive())


@unittest.skipUnless(VOD, WHY)
class VodFetchSlotsTest(VodCase):
    """More cold misses at once than the node's fetch slots (64): the rest queue for a slot and
    every request is answered whole; the origin never sees more than 64 at once."""

    N = 90

    def setUp(self):
        self.root2 = tempfile.mkdtemp(prefix="flvedge-vodmany-")
        self.addCleanup(shutil.rmtree, self.root2, True)
        for i in range(self.N):
            with open(os.path.join(self.root2, "f%d.flv" % i), "wb") as f:
                f.write(self.small[:20000] + bytes([i]))
        self.origin = self.start_vod_origin(self.root2, "/media/")
        self.edge = self.start_vod_edge(self.origin, slice_size=SLICE)

    def test_misses_beyond_the_slots_queue_and_all_complete(self):
        self.origin.set_fault("delay", after=0.5)
        results = [None] * self.N

        def one(i):
            results[i] = self.get("/videos/f%d.flv" % i)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(self.N)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T(60))
        for i, r in enumerate(results):
            self.assertIsNotNone(r, "request %d never answered" % i)
            self.assertStatus(r, 200)
            self.assertEqual(r.body, self.small[:20000] + bytes([i]))
        self.assertLessEqual(self.origin.max_active, 64)
        self.assertGreater(self.origin.max_active, 32, "the test did not fill the slots")


@unittest.skipUnless(VOD, WHY)
class VodSlowClientTest(VodCase):
    """Hits go out with sendfile from the thread pool; a full socket is waited for with a poll.
    A client that stops reading is cut after send_timeout; a slow steady one gets everything."""

    def setUp(self):
        self.origin = self.start_vod_origin(self.root, "/media/")
        self.edge = self.start_vod_edge(self.origin, slice_size=SLICE,
                                        top={"limits": {"request_timeout": 1, "send_timeout": 1}})
        self.fetch_whole()

    def test_a_slow_steady_reader_gets_the_hit_whole(self):
        c = HttpConn(self.edge.port, "/videos/a.flv", rcvbuf=65536)
        self.addCleanup(c.close)
        self.assertEqual(c.read_head(T(10)).status, 200)
        rate = 2 * 1024 * 1024  # bytes per second: about 2 s, past request_timeout
        body, t0 = bytearray(), time.monotonic()
        while True:
            data = c.read_body_some(T(10), max_recv=65536)
            if not data:
                break
            body += data
            ahead = len(body) / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        self.assertTrue(c.clean_end, "cut at %d bytes" % len(body))
        self.assertTrue(bytes(body) == self.data, "the body differs from the origin's bytes")
        self.assertGreater(time.monotonic() - t0, 1.5)

    def test_a_reader_that_stops_is_cut_after_send_timeout(self):
        c = HttpConn(self.edge.port, "/videos/a.flv", rcvbuf=65536)
        self.addCleanup(c.close)
        self.assertEqual(c.read_head(T(10)).status, 200)
        got = 0
        while got < 256 * 1024:
            got += len(c.read_body_some(T(10)))
        t0 = time.monotonic()
        self.assertTrue(c.wait_closed(1 + T(5)), "the stuck reader is still connected")
        self.assertGreater(time.monotonic() - t0, 0.7, "cut before send_timeout")
        # The edge still serves others, and the hit is whole.
        self.get_ok("/videos/a.flv", self.data)


@unittest.skipUnless(VOD, WHY)
@unittest.skipUnless(shutil.which("strace"), "strace not installed")
class VodSendfileTest(VodCase):
    """A HIT over plain TCP goes out with sendfile(2), called from the thread pool: strace on the
    running edge sees sendfile calls carrying the body, none of them on a thread that polls (a
    loop: epoll_wait/epoll_pwait). The answer's last 256 KiB or less are read on the loop from
    the page cache instead (preadv2 RWF_NOWAIT, docs/vod.md), so not every byte is sendfile's."""

    READ_ON_LOOP = 256 * 1024

    def test_hit_is_sent_with_sendfile_off_the_loops(self):
        self.fetch_whole()
        self.wait_stored(len(self.data))  # else a slice still being stored comes from memory
        out = os.path.join(self.edge.dir, "strace.txt")
        st = subprocess.Popen(["strace", "-f", "-p", str(self.edge.pid), "-o", out,
                               "-e", "trace=sendfile,epoll_wait,epoll_pwait"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def stop_strace():
            if st.poll() is None:
                st.terminate()
                st.wait(T(10))
        self.addCleanup(stop_strace)
        self.addCleanup(st.stderr.close)
        # "Process N attached with M threads": strace attached every thread (the loops, the
        # pool's) before it says so.
        line = st.stderr.readline()
        if "attached" not in line:
            stop_strace()
            self.skipTest("strace cannot attach here: %s" % line.strip())
        r = self.get_ok("/videos/a.flv", self.data)
        self.assertEqual(cache_status(r), "HIT")

        def parse():
            pollers, sent = set(), {}
            with open(out) as f:
                lines = f.read().splitlines()
            for line in lines:
                # "TID call(...) = N", or a call cut in two by another thread's:
                # "TID call(... <unfinished ...>" then "TID <... call resumed>...) = N".
                m = re.match(r"^(\d+)\s+(?:<\.\.\. )?(\w+)(?:\(| resumed>)", line)
                if not m:
                    continue
                tid, call = int(m.group(1)), m.group(2)
                if call.startswith("epoll"):
                    pollers.add(tid)
                elif call == "sendfile" and not line.endswith("<unfinished ...>"):
                    ret = re.search(r"\)\s*=\s*(-?\d+)", line)
                    if ret and int(ret.group(1)) > 0:
                        sent[tid] = sent.get(tid, 0) + int(ret.group(1))
            return pollers, sent
        # strace writes its lines a little after the calls return.
        try:
            wait_until(lambda: sum(parse()[1].values()) >= len(self.data) - self.READ_ON_LOOP,
                       T(5), "the trace")
        except AssertionError:
            pass  # reported below
        stop_strace()
        pollers, sent = parse()
        self.assertLessEqual(sum(sent.values()), len(self.data))
        self.assertGreaterEqual(sum(sent.values()), len(self.data) - self.READ_ON_LOOP,
                                "the HIT's bytes did not go out with sendfile: %r" % sent)
        self.assertTrue(pollers, "no loop thread seen")
        self.assertFalse(set(sent) & pollers, "sendfile ran on a loop thread")


@unittest.skipUnless(VOD, WHY)
class VodHookTest(VodCase):
    def setUp(self):
        self.origin = self.start_vod_origin(self.root, "/media/")
        self.edge = self.start_vod_edge(self.origin, slice_size=SLICE, policy="vodhooks.lua",
                                        files={"vodhooks.lua": HOOKS})

    def test_ttl_expires_and_revalidates_with_304(self):
        path = "/videos/short/s.flv"
        self.assertEqual(cache_status(self.get_ok(path, self.small)), "MISS")
        self.origin.clear_log()
        r = wait_until(lambda: (lambda r: r if cache_status(r) == "EXPIRED" else None)(
            self.get(path, {"Range": "bytes=0-99"})), T(10), "EXPIRED after the 1 s ttl")
        self.assertStatus(r, 206)
        self.assertEqual(r.body, self.small[:100])
        reval = [q for q in self.origin.requests("/media/short/s.flv")
                 if q["if_none_match"] or q["if_modified_since"]]
        self.assertTrue(reval, "no conditional request at the origin: %r"
                        % [(q["method"], q["range"], q["headers"]) for q in self.origin.requests()])
        self.assertEqual(reval[0]["status"], 304)
        self.get_ok(path, self.small)

    def test_bypass_asks_the_origin_every_time(self):
        path = "/videos/nocache/s.flv"
        for i in range(1, 4):
            r = self.get_ok(path, self.small)
            self.assertEqual(cache_status(r), "BYPASS")
            self.assertGreaterEqual(len(self.origin_gets("nocache/s.flv")), i)
            # the origin counts a write once it returned, which may be just after the edge answered
            wait_until(lambda: self.origin.bytes_by_path["/media/nocache/s.flv"] >= i * len(self.small),
                       T(5), "the origin sending the whole file %d times" % i)
        self.assertEqual(dir_bytes(self.edge.cache_dir) < len(self.small), True,
                         "a bypassed answer was stored")

    def test_error_answers_cached_when_the_hook_says_so(self):
        """A 404 and a 503 the hook calls cacheable: the next request is answered from the cache
        (HIT, same status and body) without the origin; after the ttl, or a purge, it is asked
        again. Without the hook's word they are never kept (test_missing_file_is_404_...)."""
        os.makedirs(os.path.join(self.root, "neg"), exist_ok=True)
        with open(os.path.join(self.root, "neg", "s.flv"), "wb") as f:
            f.write(self.small)
        self.origin.set_fault("status", path="/media/neg/s.flv", status=503)
        for path, status in (("/videos/neg/none.flv", 404), ("/videos/neg/s.flv", 503)):
            with self.subTest(path=path):
                opath = path.replace("/videos/", "/media/")
                r1 = self.get(path)
                self.assertStatus(r1, status)
                self.assertEqual(len(self.origin.requests(opath)), 1)
                r2 = self.get(path)
                self.assertStatus(r2, status)
                self.assertEqual(cache_status(r2), "HIT")
                self.assertEqual(r2.body, r1.body)
                self.assertEqual(len(self.origin.requests(opath)), 1, "a cached error asked the origin")
        self.origin.clear_fault()
        # The 503 expires (2 s): the origin is asked again and the file comes.
        wait_until(lambda: self.get("/videos/neg/s.flv").status == 200, T(10), "the cached 503 expiring")
        self.assertEqual(len(self.origin.requests("/media/neg/s.flv", "GET")), 1 + 4)  # the 503, 4 slices
        # A purge drops a cached error answer.
        self.assertStatus(self.get("/videos/neg/none.flv"), 404)
        n = len(self.origin.requests("/media/neg/none.flv"))
        r = admin_request(self.edge, "POST", "/vod/purge", {"urls": ["/videos/neg/none.flv"]})
        self.assertEqual(r.json, {"purged": 1})
        self.assertStatus(self.get("/videos/neg/none.flv"), 404)
        self.assertEqual(len(self.origin.requests("/media/neg/none.flv")), n + 1)

    def test_key_without_token_args(self):
        r = self.get_ok("/videos/q/s.flv?token=aaa&v=1", self.small)
        self.assertEqual(cache_status(r), "MISS")
        self.wait_cached("/videos/q/s.flv?token=aaa&v=1")
        n = len(self.origin_gets("q/s.flv"))
        self.assertTrue(all("v=1" in q["target"] for q in self.origin_gets("q/s.flv")),
                        "keep_query: the query goes to the origin")
        r = self.get_ok("/videos/q/s.flv?token=bbb&v=1", self.small)
        self.assertEqual(cache_status(r), "HIT", "another token made another key")
        self.assertEqual(len(self.origin_gets("q/s.flv")), n)
        r = self.get_ok("/videos/q/s.flv?token=aaa&v=2", self.small)
        self.assertEqual(cache_status(r), "MISS", "v is part of the hook's key")
        self.assertGreater(len(self.origin_gets("q/s.flv")), n)



def meta_ttls(cache_dir):
    """{client path: expires - stored} of every object's .meta file in cache_dir."""
    out = {}
    for rel in dir_snapshot(cache_dir):
        if not rel.endswith(".meta"):
            continue
        try:
            with open(os.path.join(cache_dir, rel), encoding="latin-1") as f:
                fields = dict(line.partition(" ")[::2] for line in f.read().splitlines()[1:])
        except OSError:
            continue
        out[fields["path"]] = float(fields["expires"]) - float(fields["stored"])
    return out


@unittest.skipUnless(VOD, WHY)
class VodCacheRulesTest(VodCase):
    """policies/cache_rules.lua loaded by the binary: TTL by path prefix and extension (in the
    stored meta, and an expiry seen), bypass by rule, the key without the auth arguments, and a
    404 kept because cache_errors lists it."""

    SETTINGS = {"rules": [{"prefix": "/videos/short/", "ttl": 1},
                          {"match": "%.bin$", "ttl": 120},
                          {"prefix": "/videos/nocache/", "bypass": True}],
                "default_ttl": 600, "keep_query": True, "cache_errors": {404: 30}}

    def setUp(self):
        with open(os.path.join(self.root, "x.bin"), "wb") as f:
            f.write(self.small[:5000])
        self.origin = self.start_vod_origin(self.root, "/media/")
        self.edge = self.start_vod_edge(self.origin, slice_size=SLICE, policy="cache_rules",
                                        policy_settings=self.SETTINGS)

    def test_ttl_by_pattern_and_prefix(self):
        for path, want in (("/videos/s.flv", self.small), ("/videos/x.bin", self.small[:5000]),
                           ("/videos/short/s.flv", self.small)):
            self.get_ok(path, want)
            self.wait_cached(path)
        ttls = meta_ttls(self.edge.cache_dir)
        self.assertAlmostEqual(ttls.get("/videos/s.flv", -1), 600, delta=0.01, msg=ttls)
        self.assertAlmostEqual(ttls.get("/videos/x.bin", -1), 120, delta=0.01, msg=ttls)
        self.assertAlmostEqual(ttls.get("/videos/short/s.flv", -1), 1, delta=0.01, msg=ttls)
        wait_until(lambda: cache_status(self.get("/videos/short/s.flv", method="HEAD")) == "EXPIRED",
                   T(10), "the 1 s rule expiring")
        self.assertEqual(cache_status(self.get_ok("/videos/s.flv", self.small)), "HIT")

    def test_bypass_rule(self):
        for _ in range(2):
            self.assertEqual(cache_status(self.get_ok("/videos/nocache/s.flv", self.small)), "BYPASS")
        self.assertEqual(len(self.origin_gets("nocache/s.flv")), 2 * 4, "a bypassed file was kept")

    def test_key_without_auth_args(self):
        first = "/videos/s.flv?token=aaa&expires=1&v=1"
        r = self.get_ok(first, self.small)
        self.assertEqual(cache_status(r), "MISS")
        self.assertTrue(all("v=1" in q["target"] for q in self.origin_gets("s.flv")),
                        "keep_query: the query goes to the origin")
        self.wait_cached(first)
        n = len(self.origin.requests())
        for path in ("/videos/s.flv?v=1&expires=2&token=bbb", "/videos/s.flv?sign=x&v=1"):
            with self.subTest(path=path):
                self.assertEqual(cache_status(self.get_ok(path, self.small)), "HIT",
                                 "other auth arguments made another key")
        self.assertEqual(len(self.origin.requests()), n)
        self.assertEqual(cache_status(self.get_ok("/videos/s.flv?v=2&token=aaa", self.small)), "MISS",
                         "v is not an auth argument: part of the key")

    def test_cache_errors_keeps_a_404(self):
        self.assertStatus(self.get("/videos/none.flv"), 404)
        r = self.get("/videos/none.flv")
        self.assertStatus(r, 404)
        self.assertEqual(cache_status(r), "HIT")
        self.assertEqual(len(self.origin.requests("/media/none.flv")), 1)


if __name__ == "__main__":
    exit_skip_unless_vod()
    unittest.main(verbosity=2)
