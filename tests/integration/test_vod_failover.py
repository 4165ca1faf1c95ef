"""
VOD over an origin group (`origin = {primary, backup}`): a request the primary fails before any
byte (refused, 5xx) is fetched from the backup and the viewer never knows; a slice whose fetch the
primary cuts halfway is finished from the backup at the same offset, and the bytes the viewer gets
are the file's, byte for byte.

Exits 77 (ctest: skipped) when the binary has no vod resource.
"""

import os
import shutil
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (T, EdgeTestCase, exit_skip_unless_vod, free_port, http_request,
                        vod_config)

SLICE = 64 * 1024


class VodFailoverTest(EdgeTestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="flvedge-vodfo-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.data = bytes((i * 7 + (i >> 9)) & 0xFF for i in range(5 * SLICE + 1234))
        with open(os.path.join(self.root, "a.flv"), "wb") as f:
            f.write(self.data)
        self.cache = tempfile.mkdtemp(prefix="flvedge-vodfo-cache-")
        self.addCleanup(shutil.rmtree, self.cache, True)
        self.a = self.start_vod_origin(self.root)
        self.b = self.start_vod_origin(self.root)

    def edge(self, primary):
        return self.start_edge(vod_config([primary, self.b.url()], self.cache,
                                          origin_connect_timeout=1, origin_read_timeout=1))

    def get_all(self, edge):
        r = http_request(edge.port, "GET", "/videos/a.flv", timeout=T(20))
        self.assertEqual(r.status, 200, r.body[:200])
        self.assertEqual(r.body, self.data, "the viewer's bytes differ from the file")
        return r

    def test_refused_primary_serves_from_the_backup(self):
        dead = "http://127.0.0.1:%d/media/" % free_port()
        edge = self.edge(dead)
        self.get_all(edge)
        self.assertGreater(len(self.b.requests("/media/a.flv")), 0)

    def test_connect_timeout_primary_serves_from_the_backup(self):
        # The primary never completes the TCP handshake: after origin_connect_timeout (1 s) the
        # request goes to the backup and the viewer gets the whole file.
        dead = self.start_syn_dropper()
        edge = self.edge(dead.url("/media/"))
        t0 = time.monotonic()
        self.get_all(edge)
        took = time.monotonic() - t0
        self.assertGreater(took, 0.9, "served before the connect timeout: was the primary asked?")
        self.assertLess(took, 1.0 + 1.5, "a connect timeout took %.2f s to fail over" % took)
        self.assertGreater(len(self.b.requests("/media/a.flv")), 0)

    def test_5xx_primary_serves_from_the_backup(self):
        self.a.set_fault("status", status=503)
        edge = self.edge(self.a.url())
        self.get_all(edge)
        self.assertTrue(all(r.get("status") == 503 for r in self.a.requests("/media/a.flv")))

    def test_slice_cut_halfway_is_finished_from_the_backup(self):
        # The primary sends 10000 bytes of the first slice, then closes.
        self.a.set_fault("close", path="/media/a.flv", times=1, after=10000)
        edge = self.edge(self.a.url())
        self.get_all(edge)
        ranges = [r["range"] for r in self.b.requests("/media/a.flv")]
        self.assertIn("bytes=10000-%d" % (SLICE - 1), ranges,
                      "the backup was not asked for the rest of the slice: %r" % ranges)
        self.assertTrue(edge.log_lines("for the rest of the slice"))


if __name__ == "__main__":
    exit_skip_unless_vod()
    unittest.main(verbosity=2)
