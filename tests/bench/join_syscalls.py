#!/usr/bin/env python3
"""The edge's writev and epoll_wait calls in the steady state of join_bench's scenario (viewers
joining at 1000/s into a warm 1.65 Mbit/s stream, one loop on core 0), counted by `perf stat` over
3 s, for this build and a baseline binary: where the CPU per Gbit/s of docs/benchmarks.md "Joins
under load" goes. Runs on demand (never from ctest); needs perf with syscall tracepoints.

  python3 tests/bench/join_syscalls.py --build build --baseline OLD/build/flvedge --viewers 3000 --merge 0 auto
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from live_bench import Edge, fe_load, make_media, warm  # noqa: E402

EVENTS = ["syscalls:sys_enter_writev", "syscalls:sys_enter_epoll_wait"]


def count(binary, load_bin, media, merge, viewers):
    e = Edge(binary, media, merge, tempfile.mkdtemp(prefix="flvedge-sys-"))
    try:
        warm(e, load_bin)
        t = threading.Thread(target=fe_load, args=(load_bin, e.url(), viewers, 1000, 8),
                             kwargs={"extra": ["--join-at-once"]})
        t.start()
        time.sleep(6)  # past the joins (viewers / 1000 s) into the steady state
        r = subprocess.run(["perf", "stat", "-x,", "-e", ",".join(EVENTS), "-p", str(e.proc.pid),
                            "--", "sleep", "3"], stderr=subprocess.PIPE, text=True)
        t.join()
    finally:
        e.close()
    out = {}
    for line in r.stderr.strip().splitlines():
        f = line.split(",")
        if len(f) > 2 and f[0].isdigit():
            out[f[2].split(":")[-1]] = int(f[0])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--viewers", type=int, nargs="*", default=[3000])
    ap.add_argument("--merge", nargs="*", default=["0", "auto"])
    ap.add_argument("--media", default=os.path.join(tempfile.gettempdir(), "flvedge-bench"))
    args = ap.parse_args()
    os.makedirs(args.media, exist_ok=True)
    media = os.path.join(args.media, "1650k.flv")
    make_media(media, 1520, 128, "1280x720")
    load_bin = os.path.join(args.build, "tests", "fe_load")
    for viewers in args.viewers:
        for merge in args.merge:
            for name, b in (("now", os.path.join(args.build, "flvedge")), ("before", args.baseline)):
                c = count(b, load_bin, media, merge, viewers)
                w = c.get("sys_enter_writev", 0)
                print(f"{viewers} viewers, merge {merge}, {name}: writev {w} ({w / 3 / viewers:.1f} a viewer "
                      f"a second), epoll_wait {c.get('sys_enter_epoll_wait', 0)}", flush=True)


if __name__ == "__main__":
    main()
