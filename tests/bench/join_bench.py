#!/usr/bin/env python3
"""Joins under load (issue 12): viewers joining at 1000/s into a warm stream on one core, first
byte and first keyframe next to the loop lag (how late the edge's timers fire) and the load
client's own lag, and CPU per Gbit/s. With --baseline, another flvedge binary runs the same
scenarios in the same run, alternating, so the two are compared as a ratio on a noisy machine.

Runs on demand (never from ctest):
  python3 tests/bench/join_bench.py --build build --baseline /path/to/old/flvedge
  python3 tests/bench/join_bench.py --viewers 1000 --merge auto 0 --rounds 2
"""
import argparse
import os
import re
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from live_bench import Edge, make_media, measured, warm  # noqa: E402

BUCKET = re.compile(r'flvedge_loop_lag_seconds_bucket\{loop="(\d+)",le="([^"]+)"\} (\d+)')


def lag_buckets(port):
    """The edge's loop-lag histogram (summed over loops) as {upper bound ms: cumulative count}."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/_flvedge/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for _, le, n in BUCKET.findall(text):
        bound = float("inf") if le == "+Inf" else float(le) * 1000
        out[bound] = out.get(bound, 0) + int(n)
    return out


def lag_p(before, after, p):
    """The bucket bound under which a fraction p of the window's lag samples fell ('n/a' without the metric)."""
    if not after:
        return "n/a"
    delta = {b: after[b] - before.get(b, 0) for b in after}
    total = delta.get(float("inf"), 0)
    if not total:
        return "n/a"
    for b in sorted(delta):
        if delta[b] >= p * total:
            return f"<={b:g}" if b != float("inf") else ">100"
    return "?"


def run(binary, load_bin, media, merge, viewers, duration, read_ms, work, extra=()):
    edge = Edge(binary, media, merge, work)
    try:
        warm(edge, load_bin)
        before = lag_buckets(edge.port)
        rep, cpu, _ = measured(edge, load_bin, viewers, 1000, duration, read_ms, extra)
        after = lag_buckets(edge.port)
    finally:
        edge.close()
    g = rep["gbps"] or 0
    return {
        "ok": rep["ok"], "failed": rep["failed"], "stalls": rep["stalls"],
        "ttfb": rep["ttfb_ms"], "ttfk": rep["ttfk_ms"], "client_lag": rep.get("client_lag_ms", {}),
        "cpu_per_gbps": cpu / g if g else float("nan"),
        "lag_p99": lag_p(before, after, 0.99), "lag_p50": lag_p(before, after, 0.5),
    }


def line(label, r):
    cl = r["client_lag"]
    return (f"{label:<34} ok {r['ok']:>5} failed {r['failed']:>2} stalls {r['stalls']:>2} | "
            f"first byte p50/p99 {r['ttfb']['p50']}/{r['ttfb']['p99']} ms | "
            f"first keyframe p99 {r['ttfk']['p99']} ms | edge loop lag p50/p99 {r['lag_p50']}/{r['lag_p99']} ms | "
            f"client lag p99 {cl.get('p99', 'n/a')} ms | {r['cpu_per_gbps']:.1f} %CPU/Gbit/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--baseline", help="another flvedge binary to compare with, in the same run")
    ap.add_argument("--viewers", nargs="*", type=int, default=[1000, 3000])
    ap.add_argument("--merge", nargs="*", default=["auto", "0"], help='merge_ms values ("auto" = the default)')
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--read-ms", type=int, default=10)
    ap.add_argument("--join-at-once", action="store_true",
                    help="fe_load reads a joining viewer as its bytes come, until its first keyframe\n"
                         "(a player's first fetch), so the read interval is not inside the join figures")
    ap.add_argument("--media", default=os.path.join(tempfile.gettempdir(), "flvedge-bench"))
    args = ap.parse_args()
    binary = os.path.join(args.build, "flvedge")
    load_bin = os.path.join(args.build, "tests", "fe_load")
    os.makedirs(args.media, exist_ok=True)
    media = os.path.join(args.media, "1650k.flv")
    make_media(media, 1520, 128, "1280x720")
    work = tempfile.mkdtemp(prefix="flvedge-join-")
    bins = [("flvedge", binary)] + ([("baseline", args.baseline)] if args.baseline else [])
    extra = ["--join-at-once"] if args.join_at_once else []
    print(f"join_bench: edge on core 0, fe_load on core 1, joins at 1000/s, read every {args.read_ms} ms"
          f"{' (joiners at once until their first keyframe)' if args.join_at_once else ''}; logs in {work}")
    for rnd in range(args.rounds):
        for viewers in args.viewers:
            for merge in args.merge:
                m = '"auto"' if merge == "auto" else merge
                for name, b in bins:
                    r = run(b, load_bin, media, m, viewers, args.duration, args.read_ms, work, extra)
                    print(line(f"[{rnd + 1}] {name} {viewers} merge {merge}", r), flush=True)


if __name__ == "__main__":
    sys.exit(main())
