"""
The VOD cache end to end (issue 9): a small file origin with Range and ETag that logs every
request, the real binary in front of it with a small slice_size (64 KiB), and raw clients.
MISS then HIT byte for byte, a range fetching only its slice, collapsed concurrent misses,
restart keeping HITs, a truncated slice file refetched, an origin closing mid-slice, keep-alive
after a VOD answer, and ffprobe on a cached and an uncached FLV.
"""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True
from fe_harness import BIN, SANITIZED, T, EdgeTestCase, HttpConn, ensure_media, http_request, run, to_lua, wait_until

SLICE = 64 * 1024


class FileOrigin:
    """HTTP/1.1 origin serving in-memory files with Range (one range) and ETag; logs requests."""

    def __init__(self):
        self.files = {}
        self.log = []               # (path, range header or None)
        self.lock = threading.Lock()
        self.cut_after = None       # bytes: close the connection after this much body
        self.delay = 0.0            # seconds before answering
        self.no_range = False
        self.claims = {}            # path -> the size claimed, bytes made up (claimed_bytes)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def requests(self, path=None):
        with self.lock:
            return [r for r in self.log if path is None or r[0] == path]

    PATTERN = bytes(range(251))  # a made-up object's byte at offset i: i % 251

    @classmethod
    def claimed_bytes(cls, first, n):
        k = first % 251
        return (cls.PATTERN * (n // 251 + 2))[k:k + n]

    def stop(self):
        self.stopped = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept; close alone would not
        except OSError:
            pass
        self.sock.close()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    return
                data += chunk
            lines = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            hdrs = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            rng = hdrs.get("range")
            with self.lock:
                self.log.append((path, rng))
            if self.delay:
                time.sleep(self.delay)
            claim = self.claims.get(path.split("?")[0])
            if claim is not None and rng and rng.startswith("bytes="):
                a, _, b = rng[6:].partition("-")
                first, last = int(a), min(int(b), claim - 1)
                part = self.claimed_bytes(first, last - first + 1)
                c.sendall(("HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\nETag: \"claim\"\r\n"
                           "Content-Range: bytes %d-%d/%d\r\nConnection: close\r\n\r\n"
                           % (len(part), first, last, claim)).encode() + part)
                return
            body = self.files.get(path.split("?")[0])
            if body is None:
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n")
                return
            etag = '"%s"' % hashlib.md5(body).hexdigest()[:16]
            if hdrs.get("if-none-match") == etag:
                c.sendall(("HTTP/1.1 304 Not Modified\r\nETag: %s\r\nConnection: close\r\n\r\n" % etag).encode())
                return
            status, first, last = "200 OK", 0, len(body) - 1
            extra = ""
            if rng and rng.startswith("bytes=") and not self.no_range:
                a, _, b = rng[6:].partition("-")
                first = int(a)
                last = min(int(b), len(body) - 1) if b else len(body) - 1
                status = "206 Partial Content"
                extra = "Content-Range: bytes %d-%d/%d\r\n" % (first, last, len(body))
            part = body[first:last + 1]
            head = ("HTTP/1.1 %s\r\nContent-Type: video/x-flv\r\nContent-Length: %d\r\nETag: %s\r\n"
                    "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n%sConnection: close\r\n\r\n"
                    % (status, len(part), etag, extra)).encode()
            if self.cut_after is not None:
                c.sendall(head + part[:self.cut_after])
                time.sleep(0.3)  # the edge has answered its client by now
                return
            c.sendall(head + part)
        except OSError:
            pass
        finally:
            c.close()


def sample(n, seed=1):
    out = bytearray()
    x = seed
    while len(out) < n:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out += x.to_bytes(4, "little")
    return bytes(out[:n])


class VodCoreTest(EdgeTestCase):
    def setUp(self):
        self.origin = FileOrigin()
        self.addCleanup(self.origin.stop)
        self.cache = os.path.join(os.environ.get("TMPDIR", "/tmp"), "flvedge-vod-%d-%d" % (os.getpid(), id(self)))
        os.makedirs(self.cache, exist_ok=True)
        self.addCleanup(shutil.rmtree, self.cache, True)
        self.data = sample(5 * SLICE + 1234)
        self.origin.files["/media/a.flv"] = self.data

    def config(self, **res):
        r = {"name": "vod", "prefix": "/videos/", "type": "vod", "origin": self.origin.url("/media/"),
             "cache_dir": self.cache, "slice_size": SLICE, "cache_ttl": 3600}
        r.update(res)
        return {"log_level": "info", "resources": [r]}

    def edge(self, **res):
        return self.start_edge(self.config(**res))

    def test_miss_then_hit_identical(self):
        e = self.edge()
        r1 = self.get(e, "/videos/a.flv")
        self.assertStatus(r1, 200)
        self.assertEqual(r1.header("X-Cache-Status"), "MISS")
        self.assertEqual(r1.body, self.data)
        self.assertEqual(r1.header("Accept-Ranges"), "bytes")
        self.assertTrue(r1.header("ETag"))
        # every slice stored: the second answer is a HIT with the same bytes and no origin request
        wait_until(lambda: e.metric("flvedge_vod_cache_bytes") == len(self.data), T(10), "stored")
        before = len(self.origin.requests())
        r2 = self.get(e, "/videos/a.flv")
        self.assertStatus(r2, 200)
        self.assertEqual(r2.header("X-Cache-Status"), "HIT")
        self.assertEqual(r2.body, self.data)
        self.assertEqual(len(self.origin.requests()), before)

    def test_range_in_slice_3_fetches_only_slice_3(self):
        e = self.edge()
        first = 3 * SLICE + 100
        r = self.get(e, "/videos/a.flv", headers={"Range": "bytes=%d-%d" % (first, first + 999)})
        self.assertStatus(r, 206)
        self.assertEqual(r.body, self.data[first:first + 1000])
        self.assertEqual(r.header("Content-Range"), "bytes %d-%d/%d" % (first, first + 999, len(self.data)))
        self.assertEqual(self.origin.requests(), [("/media/a.flv", "bytes=%d-%d" % (3 * SLICE, 4 * SLICE - 1))])

    def test_concurrent_misses_one_origin_request(self):
        self.origin.delay = 0.5
        e = self.edge()
        results = []

        def fetch():
            results.append(self.get(e, "/videos/a.flv", headers={"Range": "bytes=0-1000"}))

        ts = [threading.Thread(target=fetch) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(len(results), 8)
        for r in results:
            self.assertStatus(r, 206)
            self.assertEqual(r.body, self.data[:1001])
        self.assertEqual(len(self.origin.requests()), 1, self.origin.requests())

    def test_restart_keeps_hits(self):
        e = self.edge()
        self.assertEqual(self.get(e, "/videos/a.flv").body, self.data)
        wait_until(lambda: e.metric("flvedge_vod_cache_bytes") == len(self.data), T(10), "stored")
        e.stop()
        n = len(self.origin.requests())
        e2 = self.edge()
        r = self.get(e2, "/videos/a.flv")
        self.assertEqual(r.header("X-Cache-Status"), "HIT")
        self.assertEqual(r.body, self.data)
        self.assertEqual(len(self.origin.requests()), n)

    def slice_files(self):
        out = []
        for root, _, files in os.walk(self.cache):
            out += [os.path.join(root, f) for f in files if not f.endswith((".meta", ".tmp"))]
        return out

    def test_truncated_slice_refetched(self):
        e = self.edge()
        self.get(e, "/videos/a.flv", headers={"Range": "bytes=0-10"})
        # Stored in the index, not only on disk (the file is published just before the index
        # learns it): a HEAD says HIT.
        wait_until(lambda: self.get(e, "/videos/a.flv", method="HEAD",
                                    headers={"Range": "bytes=0-10"}).header("X-Cache-Status") == "HIT",
                   T(10), "slice 0 stored")
        path = self.slice_files()[0]
        with open(path, "r+b") as f:
            f.truncate(1000)
        r = self.get(e, "/videos/a.flv", headers={"Range": "bytes=0-%d" % (SLICE - 1)})
        self.assertStatus(r, 206)
        self.assertEqual(r.body, self.data[:SLICE])
        self.assertEqual(len(self.origin.requests()), 2)
        wait_until(lambda: os.path.exists(path) and os.path.getsize(path) == SLICE, T(10), "restored")

    def test_origin_closing_mid_slice_stores_nothing(self):
        self.origin.cut_after = 1000
        e = self.edge()
        c = HttpConn(e.port, "/videos/a.flv")
        r = c.read_head(T(10))
        self.assertEqual(r.status, 200)
        body = c.read_body_all(T(10))
        self.assertLess(len(body), len(self.data))
        self.assertFalse(c.clean_end)
        c.close()
        self.assertEqual(self.slice_files(), [])
        self.origin.cut_after = None
        r = self.get(e, "/videos/a.flv")
        self.assertEqual(r.header("X-Cache-Status"), "MISS")
        self.assertEqual(r.body, self.data)

    def test_keep_alive_after_vod_answer(self):
        e = self.edge()
        c = HttpConn(e.port, "/videos/a.flv", headers={"Range": "bytes=0-99"})
        self.addCleanup(c.close)
        r = c.read_head(T(10))
        self.assertEqual(r.status, 206)
        self.assertEqual(c.read_body_all(T(10)), self.data[:100])
        c.send(b"GET /videos/a.flv HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\n")
        c.response = None
        c.body_done = False
        r = c.read_head(T(10))
        self.assertEqual(r.status, 206)
        self.assertEqual(c.read_body_all(T(10)), self.data[100:200])

    def test_a_client_that_ends_its_side_gets_the_whole_answer(self):
        """shutdown(SHUT_WR) right after the request, as some clients do: the answer still
        comes whole, a MISS and then a HIT, and only then does the connection close."""
        e = self.edge()
        for want in ("MISS", "HIT"):
            s = socket.create_connection(("127.0.0.1", e.port))
            self.addCleanup(s.close)
            s.sendall(b"GET /videos/a.flv HTTP/1.1\r\nHost: x\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            s.settimeout(T(20))
            got = bytearray()
            while True:
                d = s.recv(1 << 20)
                if not d:
                    break
                got += d
            head, _, body = bytes(got).partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head[:200])
            self.assertIn(b"X-Cache-Status: " + want.encode(), head)
            self.assertEqual(len(body), len(self.data), "%s: the answer was cut" % want)
            self.assertEqual(body, self.data)
            if want == "MISS":
                wait_until(lambda: e.metric("flvedge_vod_cache_bytes") == len(self.data), T(10), "stored")

    def test_path_traversal_refused(self):
        e = self.edge()
        for p in ("/videos/../etc/passwd", "/videos/%2e%2e/x", "/videos/a%2fb", "/videos/a%5cb",
                  "/videos/a\\b", "/videos/a%00"):
            r = self.get(e, p)
            self.assertStatus(r, 400)
        self.assertEqual(self.origin.requests(), [])

    def test_ffprobe_cached_and_uncached(self):
        if not shutil.which("ffprobe"):
            self.skipTest("no ffprobe")
        media = ensure_media()
        with open(media, "rb") as f:
            self.origin.files["/media/m.flv"] = f.read()
        e = self.edge()
        for want in ("MISS", "HIT"):
            if want == "HIT":
                wait_until(lambda: e.metric("flvedge_vod_cache_objects") >= 1 and
                           e.metric("flvedge_vod_fetches") == 0, T(10), "stored")
            p = subprocess.run(["ffprobe", "-v", "error", "-show_format", e.url("/videos/m.flv")],
                               capture_output=True, timeout=T(60))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn(b"format_name=flv", p.stdout)

    def test_expired_revalidated_then_stale(self):
        e = self.edge(cache_ttl=0.5)
        self.assertEqual(self.get(e, "/videos/a.flv", headers={"Range": "bytes=0-99"}).body, self.data[:100])
        wait_until(lambda: len(self.slice_files()) == 1, T(10), "slice 0 stored")
        time.sleep(0.6)
        r = self.get(e, "/videos/a.flv", headers={"Range": "bytes=0-99"})
        self.assertEqual(r.header("X-Cache-Status"), "EXPIRED")
        self.assertEqual(r.body, self.data[:100])
        self.assertIsNotNone(self.origin.requests()[-1][1])
        self.assertEqual(len(self.origin.requests()), 2)
        time.sleep(0.6)
        self.origin.stop()
        r = self.get(e, "/videos/a.flv", headers={"Range": "bytes=0-99"})
        self.assertEqual(r.header("X-Cache-Status"), "STALE")
        self.assertEqual(r.body, self.data[:100])

    def test_changed_at_origin_refetched(self):
        e = self.edge(cache_ttl=0.3)
        self.assertEqual(self.get(e, "/videos/a.flv").body, self.data)
        wait_until(lambda: len(self.slice_files()) == 6, T(10), "stored")
        time.sleep(0.4)
        new = sample(2 * SLICE + 7, seed=9)
        self.origin.files["/media/a.flv"] = new
        r = self.get(e, "/videos/a.flv")
        self.assertEqual(r.header("X-Cache-Status"), "EXPIRED")
        self.assertEqual(r.body, new)
        try:
            wait_until(lambda: len(self.slice_files()) == 3, T(10), "old slices gone, new stored")
        except AssertionError:
            raise AssertionError("%r %r %s" % (sorted(self.slice_files()), self.origin.requests(), e.stderr_tail()))

    def test_multirange_and_conditionals(self):
        e = self.edge()
        r = self.get(e, "/videos/a.flv", headers={"Range": "bytes=0-9,%d-%d" % (2 * SLICE, 2 * SLICE + 9)})
        self.assertStatus(r, 206)
        ctype = r.header("Content-Type")
        self.assertTrue(ctype.startswith("multipart/byteranges; boundary="), ctype)
        self.assertIn(self.data[:10], r.body)
        self.assertIn(self.data[2 * SLICE:2 * SLICE + 10], r.body)
        self.assertIn(b"Content-Range: bytes 0-9/%d" % len(self.data), r.body)
        self.assertEqual(len(r.body), int(r.header("Content-Length")))
        etag = r.header("ETag")
        r = self.get(e, "/videos/a.flv", headers={"If-None-Match": etag})
        self.assertStatus(r, 304)
        r = self.get(e, "/videos/a.flv", headers={"Range": "bytes=%d-" % (10 * SLICE)})
        self.assertStatus(r, 416)
        self.assertEqual(r.header("Content-Range"), "bytes */%d" % len(self.data))
        r = self.get(e, "/videos/a.flv", headers={"Range": "bytes=-100"})
        self.assertStatus(r, 206)
        self.assertEqual(r.body, self.data[-100:])
        r = self.get(e, "/videos/a.flv", method="HEAD")
        self.assertStatus(r, 200)
        self.assertEqual(r.header("Content-Length"), str(len(self.data)))
        self.assertEqual(r.body, b"")

    def test_seek_bytes(self):
        e = self.edge()
        r = self.get(e, "/videos/a.flv?start=%d" % (SLICE + 5))
        self.assertStatus(r, 200)
        self.assertEqual(r.body[:3], b"FLV")
        self.assertEqual(r.body[13:], self.data[SLICE + 5:])

    def test_seek_time_keyframe(self):
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "media", "keyframes.flv")
        with open(src, "rb") as f:
            flv = f.read()
        self.origin.files["/media/k.flv"] = flv
        e = self.edge()
        whole = self.get(e, "/videos/k.flv").body
        self.assertEqual(whole, flv)
        r = self.get(e, "/videos/k.flv?t=2")
        self.assertStatus(r, 200)
        self.assertEqual(int(r.header("Content-Length")), len(r.body))
        self.assertLess(len(r.body), len(flv))
        self.assertEqual(r.body[:3], b"FLV")
        # the tail is the file from a keyframe's tag on
        self.assertTrue(flv.endswith(r.body[-1000:]))
        if shutil.which("ffprobe"):
            p = subprocess.run(["ffprobe", "-v", "error", "-show_format", e.url("/videos/k.flv?t=2")],
                               capture_output=True, timeout=T(60))
            self.assertEqual(p.returncode, 0, p.stderr)

    def test_origin_without_ranges(self):
        self.origin.no_range = True
        e = self.edge()
        first = 2 * SLICE + 3
        r = self.get(e, "/videos/a.flv", headers={"Range": "bytes=%d-%d" % (first, first + 99)})
        self.assertStatus(r, 206)
        self.assertEqual(r.body, self.data[first:first + 100])
        r = self.get(e, "/videos/a.flv")
        self.assertEqual(r.body, self.data)

    def test_upstream_404_passed_on(self):
        e = self.edge()
        r = self.get(e, "/videos/none.flv")
        self.assertStatus(r, 404)
        r = self.get(e, "/videos/none.flv")
        self.assertStatus(r, 404)
        self.assertEqual(len(self.origin.requests("/media/none.flv")), 2)

    def test_config_refusals(self):
        cases = [({"slice_size": 1000}, "slice_size"),
                 ({"cache_max_size": "12Q"}, "cache_max_size"),
                 ({"cache_max_size": 2 ** 20, "slice_size": 2 ** 20}, "two slices"),
                 ({"cache_dir": None}, "cache_dir: missing"),
                 ({"origin": "file:/x"}, "origin"),
                 ({"start_unit": "minutes"}, "start_unit")]
        for change, want in cases:
            cfg = self.config()
            for k, v in change.items():
                if v is None:
                    del cfg["resources"][0][k]
                else:
                    cfg["resources"][0][k] = v
            cfg["listen"] = ["127.0.0.1:0"]
            path = os.path.join(self.cache, "bad.lua")
            with open(path, "w") as f:
                f.write("return " + to_lua(cfg) + "\n")
            p = run([BIN, "-t", "-c", path], T(20))
            self.assertNotEqual(p.returncode, 0, change)
            self.assertIn(want, p.stderr, change)
        p = run([BIN, "--listen", "127.0.0.1:0", "--origin", self.origin.url("/"), "--vod"], T(20))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--cache-dir", p.stderr)

    def test_a_claimed_size_is_taken_up_to_the_slice_limit_and_costs_memory_only_when_used(self):
        # An origin may claim any size. 2^20 slices are taken, and the index makes room only for
        # the slices used (a claimed 64 GiB object here); one slice more is refused with a 502
        # before anything is made for it (1 PB: 15 billion slices of 64 KiB).
        at_limit = (1 << 20) * SLICE
        self.origin.claims["/media/big.flv"] = at_limit
        self.origin.claims["/media/huge.flv"] = 10 ** 15
        self.origin.claims["/media/over.flv"] = at_limit + 1
        e = self.edge()
        rss0 = e.rss_kb()
        off = at_limit - 1000
        want = self.origin.claimed_bytes(off, 100)
        r = self.get(e, "/videos/big.flv", headers={"Range": "bytes=%d-%d" % (off, off + 99)})
        self.assertStatus(r, 206)
        self.assertEqual(r.body, want)
        self.assertEqual(r.header("Content-Range"), "bytes %d-%d/%d" % (off, off + 99, at_limit))
        wait_until(lambda: e.metric("flvedge_vod_cache_bytes") == SLICE, T(10), "the last slice stored")
        asked = len(self.origin.requests())
        r = self.get(e, "/videos/big.flv", headers={"Range": "bytes=%d-%d" % (off, off + 99)})
        self.assertEqual((r.status, r.header("X-Cache-Status"), r.body), (206, "HIT", want))
        self.assertEqual(len(self.origin.requests()), asked)
        for name in ("huge.flv", "over.flv"):
            r = self.get(e, "/videos/" + name, headers={"Range": "bytes=0-99"})
            self.assertStatus(r, 502)
            self.assertIn(b"object larger than the cache takes", r.body)
        if not SANITIZED:  # ASan's quarantine and shadow memory make RSS say little
            self.assertLess(e.rss_kb() - rss0, 16 * 1024, "the claimed sizes cost memory")
        self.assertStatus(self.get(e, "/videos/a.flv"), 200)

    def test_quick_mode(self):
        e = self.start_quick_edge(self.origin.url("/media"), extra_args=["--vod", "--cache-dir", self.cache])
        r = self.get(e, "/a.flv", headers={"Range": "bytes=5-9"})
        self.assertStatus(r, 206)
        self.assertEqual(r.body, self.data[5:10])
        self.assertEqual(self.origin.requests(), [("/media/a.flv", "bytes=0-%d" % (10 * 2 ** 20 - 1))])


if __name__ == "__main__":
    unittest.main()
