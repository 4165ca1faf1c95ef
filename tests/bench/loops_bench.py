#!/usr/bin/env python3
"""Several loops against one: what the relay costs, how joins spread, how far two cores go.

Runs on demand (never from ctest); prints one line per scenario. Side by side in one run, so the
ratios hold on a shared, noisy machine. See docs/benchmarks.md ("Loops") for the latest figures.

  python3 tests/bench/loops_bench.py --build build               # every part, ~6 minutes
  python3 tests/bench/loops_bench.py --only relay --viewers 1000 # a subset

Parts:
  relay   workers = 1 against workers = 2 with the whole process pinned to core 0 (fe_load on core 1):
          CPU per Gbit/s summed over every thread, so the relay's own cost shows; first byte and
          first keyframe p99; the per-tag relay cost from the CPU difference.
  spread  1000 joins at 1000/s over 2 and 4 loops, SO_REUSEPORT against one shared socket: the
          connections each loop accepted (max/mean; 1.00 is even).
  most    on both cores (edge and fe_load share them): the most viewers served at 1000 joins/s with
          no failure and no stall, workers = 1 against workers = 2.
  merge   workers = 1 on core 0, 1000 viewers: merge_ms 0, "auto" (the default) and 100, against
          iperf3 with 8 KiB writes paced at the same rate.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from benchlib import free_port, stop, wait_port  # noqa: E402
from live_bench import Proc, fe_load, iperf, make_media, measured, warm  # noqa: E402


class Edge:
    """flvedge with `workers` loops on the given cores, one live resource from a file."""

    def __init__(self, binary, media, workdir, workers, cores, merge="auto", listen_mode="reuseport"):
        self.port = free_port()
        conf = os.path.join(workdir, f"loops-{workers}-{listen_mode}.lua")
        merge_v = f'"{merge}"' if merge == "auto" else str(merge)
        with open(conf, "w") as f:
            f.write(f"""return {{
  listen = {{ "127.0.0.1:{self.port}" }}, workers = {workers}, listen_mode = "{listen_mode}",
  status_prefix = "/_flvedge/",  -- the metrics this bench reads, on the public listener
  log_level = "warn",
  limits = {{ max_viewers = 40000, max_connections = 50000 }},
  resources = {{
    {{ name = "live", prefix = "/live/", type = "live", origin = "file:{media}",
       merge_ms = {merge_v}, linger = 600, max_viewers_per_stream = 40000 }},
  }},
}}
""")
        self.proc = subprocess.Popen(["taskset", "-c", cores, binary, "-c", conf],
                                     stderr=open(os.path.join(workdir, "edge.log"), "a"))
        wait_port(self.port, self.proc, f"loops_bench: the edge (see {workdir}/edge.log)")
        self.p = Proc(self.proc.pid)

    def url(self):
        return f"http://127.0.0.1:{self.port}/live/s.flv"

    def loop_metric(self, name):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_flvedge/metrics").read().decode()
        found = re.findall(r'^flvedge_loop_%s\{loop="(\d+)"\} (\S+)$' % name, text, re.M)
        return [float(v) for _, v in sorted(found, key=lambda x: int(x[0]))]

    def close(self):
        stop(self.proc)


def line(label, rep, cpu):
    g = rep["gbps"] or 0
    per = cpu / g if g else float("nan")
    print(f"{label:<34} ok {rep['ok']:>5} failed {rep['failed']:>3} stalls {rep['stalls']:>3} "
          f"errors {rep['validation_errors']:>2} | {g:6.3f} Gbit/s | edge {cpu:5.1f} % = {per:5.2f} %/Gbit/s "
          f"| ttfb p99 {rep['ttfb_ms']['p99']} ms | ttfk p99 {rep['ttfk_ms']['p99']} ms "
          f"| drift p99 {rep['drift_ms']['p99']} ms", flush=True)
    return per


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--only", nargs="*", default=["relay", "spread", "most", "merge"])
    ap.add_argument("--viewers", nargs="*", type=int, default=[1000, 3000])
    ap.add_argument("--most", nargs="*", type=int, default=[3000, 5000, 7000, 9000])
    ap.add_argument("--duration", type=float, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--relay-merge", default="0", help="merge_ms in the relay part")
    ap.add_argument("--media", default=os.path.join(tempfile.gettempdir(), "flvedge-bench"))
    args = ap.parse_args()

    binary = os.path.join(args.build, "flvedge")
    load_bin = os.path.join(args.build, "tests", "fe_load")
    os.makedirs(args.media, exist_ok=True)
    big = os.path.join(args.media, "1650k.flv")
    make_media(big, 1520, 128, "1280x720")
    work = tempfile.mkdtemp(prefix="flvedge-loops-")
    print(f"loops_bench: {os.cpu_count()} cores; logs in {work}", flush=True)

    if "relay" in args.only:
        for viewers in args.viewers:
            for rnd in range(args.rounds):
                per = {}
                for workers in (1, 2):
                    # A fixed merge window: "auto" sizes it by each loop's viewers, which would
                    # differ between one loop and two and hide the relay's own cost.
                    edge = Edge(binary, big, work, workers, "0", merge=args.relay_merge)
                    try:
                        warm(edge, load_bin)
                        before = edge.loop_metric("connections_accepted_total")
                        rep, cpu, _ = measured(edge, load_bin, viewers, 1000, args.duration, 10)
                        per[workers] = (line(f"relay r{rnd} {viewers} v, {workers} loop(s), 1 core",
                                             rep, cpu), cpu)
                        after = edge.loop_metric("connections_accepted_total")
                        print(f"  viewers per loop {[int(a - b) for a, b in zip(after, before)]}",
                              flush=True)
                    finally:
                        edge.close()
                # ~74 tags/s cross to the one other loop: the CPU difference per relayed tag.
                d = (per[2][1] - per[1][1]) / 100.0
                print(f"  => 2 loops / 1 loop per Gbit/s: {per[2][0] / per[1][0]:.2f}x; CPU difference "
                      f"{d * 1000:.1f} ms/s = {d / 74 * 1e6:.0f} us per relayed tag (whole loop, "
                      f"wakeups and the second loop's own fan-out included)", flush=True)

    if "spread" in args.only:
        for workers in (2, 4):
            for mode in ("reuseport", "shared"):
                edge = Edge(binary, big, work, workers, "0,1", listen_mode=mode)
                try:
                    warm(edge, load_bin)
                    before = edge.loop_metric("connections_accepted_total")
                    fe_load(load_bin, edge.url(), 1000, 1000, 2, warmup=0)
                    after = edge.loop_metric("connections_accepted_total")
                    got = [a - b for a, b in zip(after, before)]
                    mean = sum(got) / len(got)
                    print(f"spread {workers} loops {mode:<9}: accepted {[int(x) for x in got]} "
                          f"max/mean {max(got) / mean:.2f}", flush=True)
                finally:
                    edge.close()

    if "most" in args.only:
        for workers in (1, 2):
            for viewers in args.most:
                edge = Edge(binary, big, work, workers, "0,1")
                try:
                    warm(edge, load_bin)
                    rep = fe_load(load_bin, edge.url(), viewers, 1000, args.duration)
                    ok = rep["failed"] == 0 and rep["stalls"] == 0 and rep["ok"] == viewers
                    print(f"most {workers} loop(s) {viewers:>5} viewers: ok {rep['ok']} failed "
                          f"{rep['failed']} stalls {rep['stalls']} {rep['gbps']:.2f} Gbit/s "
                          f"client {rep['client_cpu_pct']:.0f} % -> {'served' if ok else 'NOT served'}",
                          flush=True)
                finally:
                    edge.close()

    if "merge" in args.only:
        floor, g = iperf("8K", 1.65)
        print(f"iperf3 8 KiB paced at {g:.2f} Gbit/s: {floor:.2f} % of a core per Gbit/s", flush=True)
        for merge in (0, "auto", 100):
            edge = Edge(binary, big, work, 1, "0", merge=merge)
            try:
                warm(edge, load_bin)
                rep, cpu, _ = measured(edge, load_bin, 1000, 1000, args.duration, 10)
                per = line(f"merge {merge}, 1000 v, 1 loop", rep, cpu)
                print(f"  => {per / floor:.2f}x iperf3 8 KiB", flush=True)
            finally:
                edge.close()


if __name__ == "__main__":
    sys.exit(main())
