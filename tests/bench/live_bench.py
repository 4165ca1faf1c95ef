#!/usr/bin/env python3
"""Live fan-out benchmark: flvedge on core 0, fe_load on core 1, iperf3 as the floor.

Runs on demand (never from ctest). Prints one line per scenario and, with --markdown, a table for
docs/benchmarks.md. See tests/bench/README.md for what each figure means.

  python3 tests/bench/live_bench.py --build build            # every scenario, ~5 minutes
  python3 tests/bench/live_bench.py --only cpu --merge 0 50   # a subset
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from benchlib import cpu_seconds, free_port, rss_kb, stop, wait_port  # noqa: E402


def make_media(path, kbit_video, kbit_audio, size):
    """A test stream: H.264 (2 s GOP at 25 fps) + AAC 48 kHz, ~74 tags/s, 60 s long."""
    if os.path.exists(path):
        return
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "60",
         "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
         "-b:v", f"{kbit_video}k", "-maxrate", f"{kbit_video}k", "-bufsize", f"{kbit_video}k",
         "-x264-params", "nal-hrd=cbr", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
         "-c:a", "aac", "-b:a", f"{kbit_audio}k", "-f", "flv", path],
        check=True)


class Proc:
    """CPU and RSS of one process, sampled from /proc."""

    def __init__(self, pid):
        self.pid = pid

    def cpu_s(self):
        return cpu_seconds([self.pid])

    def rss_kb(self):
        return rss_kb(self.pid)


class Sampler(threading.Thread):
    """Per-second CPU of a process, kept as (time, cpu seconds) pairs."""

    def __init__(self, proc):
        super().__init__(daemon=True)
        self.proc, self.samples, self.stop = proc, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.proc.cpu_s(), self.proc.rss_kb()))
            except OSError:
                return
            self.stop.wait(1.0)

    def window(self, t0, t1):
        """CPU % of a core and peak RSS between t0 and t1 (the samples nearest inside)."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return float("nan"), 0
        a, b = inside[0], inside[-1]
        return (b[1] - a[1]) / (b[0] - a[0]) * 100, max(s[2] for s in inside)


class Edge:
    def __init__(self, binary, media, merge_ms, workdir):
        self.port = free_port()
        conf = os.path.join(workdir, f"bench-{merge_ms}.lua")
        with open(conf, "w") as f:
            f.write(f"""return {{
  listen = {{ "127.0.0.1:{self.port}" }}, workers = 1, status_prefix = "/_flvedge/",
  log_level = "warn",
  limits = {{ max_viewers = 20000, max_connections = 30000 }},
  resources = {{
    {{ name = "live", prefix = "/live/", type = "live", origin = "file:{media}",
       merge_ms = {merge_ms}, linger = 600, max_viewers_per_stream = 20000 }},
  }},
}}
""")
        self.proc = subprocess.Popen(["taskset", "-c", "0", binary, "-c", conf],
                                     stderr=open(os.path.join(workdir, "edge.log"), "a"))
        wait_port(self.port, self.proc, f"live_bench: the edge (see {workdir}/edge.log)")
        self.p = Proc(self.proc.pid)

    def url(self):
        return f"http://127.0.0.1:{self.port}/live/s.flv"

    def close(self):
        stop(self.proc)


def fe_load(load_bin, url, viewers, rate, duration, warmup=2, read_ms=10, join_timeout=10,
            extra=()):
    cmd = ["taskset", "-c", "1", load_bin, "--url", url, "--viewers", str(viewers), "--rate",
           str(rate), "--duration", str(duration), "--warmup", str(warmup), "--read-interval-ms",
           str(read_ms), "--join-timeout", str(join_timeout), "--progress", "0", "--json", *extra]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode not in (0, 1):
        raise SystemExit(f"live_bench: fe_load failed ({out.returncode}): {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measured(edge, load_bin, viewers, rate, duration, read_ms, extra=()):
    """Runs fe_load against a warm hub; the edge's CPU is taken over fe_load's measuring window
    (its last `duration` seconds)."""
    sampler = Sampler(edge.p)
    sampler.start()
    rep = fe_load(load_bin, edge.url(), viewers, rate, duration, read_ms=read_ms, extra=extra)
    t_end = time.monotonic()
    sampler.stop.set()
    sampler.join()
    cpu, rss = sampler.window(t_end - duration - 0.5, t_end)
    return rep, cpu, rss


def warm(edge, load_bin):
    """One short viewer so the hub is running (linger keeps it) and its window is full; returns
    the edge's RSS with the window in place and no viewer."""
    fe_load(load_bin, edge.url(), 1, 0, 3, warmup=0)
    time.sleep(0.5)
    return edge.p.rss_kb()


def iperf(length, gbps, seconds=6):
    """Sender-side CPU % of a core per Gbit/s of iperf3 over loopback (server core 1, client core 0)."""
    port = free_port()
    srv = subprocess.Popen(["taskset", "-c", "1", "iperf3", "-s", "--forceflush", "-p", str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in srv.stdout:  # wait for it to listen; probing would use up a test
            if "listening" in line:
                break
        out = subprocess.run(["taskset", "-c", "0", "iperf3", "-c", "127.0.0.1", "-p", str(port),
                              "-t", str(seconds), "-l", length, "-b", f"{gbps:.3f}G", "-J"],
                             stdout=subprocess.PIPE, text=True, check=True)
        j = json.loads(out.stdout)
        bps = j["end"]["sum_sent"]["bits_per_second"]
        cpu = j["end"]["cpu_utilization_percent"]["host_total"]
        return cpu / (bps / 1e9), bps / 1e9
    finally:
        srv.kill()
        srv.wait()


def row(name, rep, cpu, rss, extra=""):
    g = rep["gbps"] or 0
    per = cpu / g if g else float("nan")
    print(f"{name:<28} ok {rep['ok']:>5} failed {rep['failed']:>3} stalls {rep['stalls']:>3} "
          f"errors {rep['validation_errors']:>2} | {g:6.3f} Gbit/s | edge {cpu:5.1f} % "
          f"= {per:5.1f} %/Gbit/s | ttfb p50/p99 {rep['ttfb_ms']['p50']}/{rep['ttfb_ms']['p99']} ms "
          f"| ttfk p50/p99 {rep['ttfk_ms']['p50']}/{rep['ttfk_ms']['p99']} ms "
          f"| drift p99 {rep['drift_ms']['p99']} ms | edge RSS {rss / 1024:.1f} MB "
          f"| client {rep['client_cpu_pct']:.0f} % {extra}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--only", nargs="*", default=["iperf", "cpu", "join", "3000", "10000"])
    ap.add_argument("--merge", nargs="*", type=int, default=[0, 50, 200])
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--read-ms", type=int, default=10, help="fe_load's read interval per viewer")
    ap.add_argument("--media", default=os.path.join(tempfile.gettempdir(), "flvedge-bench"))
    args = ap.parse_args()

    binary = os.path.join(args.build, "flvedge")
    load_bin = os.path.join(args.build, "tests", "fe_load")
    for b in (binary, load_bin):
        if not os.access(b, os.X_OK):
            raise SystemExit(f"live_bench: {b} missing: cmake --build {args.build} --target flvedge fe_load")
    os.makedirs(args.media, exist_ok=True)
    big = os.path.join(args.media, "1650k.flv")
    small = os.path.join(args.media, "256k.flv")
    make_media(big, 1520, 128, "1280x720")
    make_media(small, 192, 64, "426x240")
    work = tempfile.mkdtemp(prefix="flvedge-bench-")
    print(f"live_bench: {os.cpu_count()} cores, edge on core 0, fe_load on core 1; logs in {work}")

    floor = {}
    if "iperf" in args.only:
        for length in ("8K", "128K"):
            per, g = iperf(length, 1.65)
            floor[length] = per
            print(f"iperf3 -l {length:<5} at {g:.2f} Gbit/s: sender {per:.1f} % of a core per Gbit/s",
                  flush=True)

    def ratio(per):
        return " | " + " ".join(f"{per / v:.1f}x iperf3 {k}" for k, v in floor.items()) if floor else ""

    def scenario(media, merge, viewers, label, with_ratio=False):
        """One edge, warmed up, then `viewers` joining at 1000/s; prints one row."""
        edge = Edge(binary, media, merge, work)
        try:
            base = warm(edge, load_bin)
            rep, cpu, rss = measured(edge, load_bin, viewers, 1000, args.duration, args.read_ms)
            per = cpu / (rep["gbps"] or 1)
            row(label, rep, cpu, rss, f"| {(rss - base) / viewers:.1f} KB/viewer beyond the window"
                + (ratio(per) if with_ratio else ""))
        finally:
            edge.close()

    if "cpu" in args.only or "join" in args.only:
        for m in args.merge:
            scenario(big, m, 1000, f"1000 x 1.65M merge {m} ms", with_ratio=True)
    if "3000" in args.only:
        scenario(big, 0, 3000, "3000 x 1.65M merge 0 ms")
    if "10000" in args.only:
        scenario(small, 0, 10000, "10000 x 256k merge 0 ms")

if __name__ == "__main__":
    sys.exit(main())
