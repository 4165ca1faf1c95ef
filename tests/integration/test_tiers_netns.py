"""
Tiers on real hosts: network namespaces made here, joined by veth pairs to a bridge in the test's
own namespace, hold an origin host (a primary and a backup origin), two flvedge shields and three
flvedge edges. The edges pick a shield per stream by consistent hashing (origin_failover, mode
"hash"); the shields pull the origin group {primary, backup}. Viewers on every edge watch every
stream.

Steady state: the origin sees one connection per stream. Then a shield's link goes down (its edges
stall, and move to the other shield after origin_read_timeout) and the primary origin dies (the
shields move to the backup at once): every viewer keeps playing, timestamps monotonic, with no gap
longer than origin_read_timeout + 1 s. Once the link is back, the backup sees one connection per
stream.

Needs root and `ip netns`: otherwise it says why and exits 77 (ctest: skipped), never passes.
"""

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (SKIP_RETURN_CODE, T, Edge, Synth, TestOrigin, Viewer, check_monotonic,
                        wait_until)

READ_TIMEOUT = 1.0
BACKUP = 1_000_000
STREAMS = ["s1", "s2", "s3", "s4"]
PORT = 8080  # inside each node's own namespace: nothing else listens there
CLONE_NEWNET = 0x40000000


def sh(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr.strip()))
    return r


def why_not():
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_SYS_ADMIN"
    if not shutil.which("ip"):
        return "no `ip` command (iproute2)"
    name = "fep%d" % os.getpid()
    r = sh("ip", "netns", "add", name, check=False)
    if r.returncode != 0:
        return "ip netns add failed: %s" % r.stderr.strip()
    sh("ip", "netns", "del", name, check=False)
    r = sh("ip", "link", "add", name + "a", "type", "veth", "peer", "name", name + "b", check=False)
    if r.returncode != 0:
        return "no veth pairs: %s" % r.stderr.strip()
    sh("ip", "link", "del", name + "a", check=False)
    return None


class Net:
    """A bridge in this namespace (10.N.0.1/24) and a namespace per node on it."""

    def __init__(self):
        self.tag = "fe%04x" % (os.getpid() & 0xFFFF)
        self.subnet = "10.%d.%d" % (200 + os.getpid() % 50, os.getpid() // 50 % 250)
        self.bridge = self.tag + "br"
        self.nodes = {}  # name -> (namespace, ip, host side link)
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", self.subnet + ".1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def add(self, name, n):
        ns, ip, link = self.tag + name, "%s.%d" % (self.subnet, n), self.tag + name + "h"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", link, "type", "veth", "peer", "name", self.tag + name + "n")
        sh("ip", "link", "set", self.tag + name + "n", "netns", ns)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", self.tag + name + "n", "name", "eth0")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", ip + "/24", "dev", "eth0")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "set", link, "master", self.bridge)
        sh("ip", "link", "set", link, "up")
        self.nodes[name] = (ns, ip, link)
        return ip

    def link(self, name, up):
        sh("ip", "link", "set", self.nodes[name][2], "up" if up else "down")

    def inside(self, name, fn):
        """fn() with this thread in the node's namespace (sockets made there stay there)."""
        libc = ctypes.CDLL(None, use_errno=True)
        home = os.open("/proc/self/task/%d/ns/net" % threading.get_native_id(), os.O_RDONLY)
        there = os.open("/var/run/netns/" + self.nodes[name][0], os.O_RDONLY)
        try:
            if libc.setns(there, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            try:
                return fn()
            finally:
                if libc.setns(home, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(home)
            os.close(there)

    def close(self):
        for ns, _, link in self.nodes.values():
            sh("ip", "link", "del", link, check=False)
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)


class Watch(threading.Thread):
    """One viewer read on its own thread: its tags, and the longest wait between media tags."""

    def __init__(self, host, path):
        super().__init__(daemon=True)
        self.v = Viewer(PORT, path, digest=False, host=host)
        self.v.open(T(10))
        self.stop = threading.Event()
        self.error = None
        self.max_gap = 0.0
        self.gap_after = None  # gaps count from this monotonic time on
        self.start()

    def run(self):
        last = None
        try:
            while not self.stop.is_set():
                try:
                    new = self.v.pump(0.5)
                except TimeoutError:
                    new = []
                if self.v.ended:
                    raise AssertionError("%s: the body ended" % self.v.path)
                for t in new:
                    if not t.is_media:
                        continue
                    if last is not None and self.gap_after is not None \
                            and t.recv_time >= self.gap_after:
                        self.max_gap = max(self.max_gap, t.recv_time - last)
                    last = t.recv_time
                if len(self.v.tags) > 4000:
                    del self.v.tags[:2000]
        except Exception as e:  # reported by the test
            self.error = e

    def media_ms(self):
        ts = [t.ts for t in self.v.tags if t.is_media]
        return max(ts) - min(ts) if ts else 0

    def from_backup(self):
        return sum(1 for t in list(self.v.tags) if t.serial is not None and t.serial >= BACKUP)


class TiersTest(unittest.TestCase):
    def setUp(self):
        self.net = Net()
        self.addCleanup(self.net.close)
        self.oip = self.net.add("o", 10)
        self.shields = [self.net.add("s1", 21), self.net.add("s2", 22)]
        self.edges_ip = [self.net.add("e%d" % i, 30 + i) for i in (1, 2, 3)]
        self.primary = self.net.inside("o", lambda: TestOrigin(host=self.oip))
        self.backup = self.net.inside("o", lambda: TestOrigin(host=self.oip))
        self.addCleanup(self.primary.stop)
        self.addCleanup(self.backup.stop)
        for s in STREAMS:
            self.primary.route("/live/%s.flv" % s, Synth())
            self.backup.route("/live/%s.flv" % s, Synth(serial_base=BACKUP))

    def node(self, name, config):
        e = Edge(config, wrap=["ip", "netns", "exec", self.net.nodes[name][0]])
        self.addCleanup(e.finish)
        return e

    def live(self, origin, **kw):
        res = {"name": "live", "prefix": "/live/", "type": "live", "origin": origin,
               "origin_connect_timeout": 1, "origin_read_timeout": READ_TIMEOUT,
               "slow_viewer_timeout": 2, "linger": 1}
        res.update(kw)
        return {"listen": ["0.0.0.0:%d" % PORT], "workers": 2, "log_level": "info",
                "resources": [res]}

    def per_stream(self, origin):
        return [origin.active("/live/%s.flv" % s) for s in STREAMS]

    def test_shield_down_and_origin_killed(self):
        group = [self.primary.url("/live/"), self.backup.url("/live/")]
        for name in ("s1", "s2"):
            self.node(name, self.live(group))
        shields = ["http://%s:%d/live/" % (ip, PORT) for ip in self.shields]
        for i in (1, 2, 3):
            self.node("e%d" % i, self.live(shields[0], policy="origin_failover",
                                          policy_settings={"origins": shields, "mode": "hash"}))
        watches = [Watch(ip, "/live/%s.flv" % s) for ip in self.edges_ip for s in STREAMS]
        for w in watches:
            self.addCleanup(w.v.close)
            self.addCleanup(w.stop.set)
        wait_until(lambda: all(w.media_ms() >= 1500 or w.error for w in watches), T(20),
                   "every viewer playing")
        self.assertEqual([w.error for w in watches if w.error], [])
        self.assertEqual(self.per_stream(self.primary), [1] * len(STREAMS),
                         "the origin's connections per stream, 3 edges and 2 shields")
        # Which shield pulls what: its address is the peer of the origin's connections.
        peers = [c.sock.getpeername()[0] for c in self.primary.conns if c.closed_at is None]
        busy = max(("s1", "s2"), key=lambda n: peers.count(self.net.nodes[n][1]))
        t0 = time.monotonic()
        for w in watches:
            w.gap_after = t0
        self.net.link(busy, False)
        time.sleep(READ_TIMEOUT + 1.5)  # the edges' stall detection is what is being watched
        self.primary.kill()
        wait_until(lambda: all(w.from_backup() > 25 or w.error for w in watches), T(15),
                   "every viewer on the backup")
        self.net.link(busy, True)
        wait_until(lambda: self.per_stream(self.backup) == [1] * len(STREAMS), T(15),
                   "one backup connection per stream (now %r)" % self.per_stream(self.backup))
        time.sleep(0.5)
        for w in watches:
            w.stop.set()
        for w in watches:
            w.join(5)
        self.assertEqual([w.error for w in watches if w.error], [])
        for w in watches:
            check_monotonic(w.v.tags)
        worst = max(w.max_gap for w in watches)
        sys.stderr.write("longest gap at a viewer: %.0f ms; shield down: %s\n" % (worst * 1000, busy))
        self.assertLess(worst, READ_TIMEOUT + 1.0, "a viewer waited %.2f s for media" % worst)
        self.assertGreater(worst, READ_TIMEOUT * 0.8, "no viewer saw the shield's stall: was "
                           "its link really down?")


if __name__ == "__main__":
    reason = why_not()
    if reason:
        print("SKIP: %s" % reason)
        sys.stdout.flush()
        sys.exit(SKIP_RETURN_CODE)
    unittest.main(verbosity=2)
