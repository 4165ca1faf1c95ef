#!/usr/bin/env python3
"""Live failover time (issue 10): from the death of the origin a stream plays from to the first tag
of the next origin at the viewers, p50/p99 over N failovers, for an origin killed (its connections
shut, new connections refused: detected at once) and an origin that stalls (connections stay open,
nothing comes: detected after origin_read_timeout).

Two test origins (tests/integration/fe_harness.py's TestOrigin, Synth media at 25 fps with a
keyframe every second) form the edge's group; each round kills the origin the stream plays from
now, the viewers move to the other one, the dead one comes back, and the next round kills the
other. Which origin a tag came from shows in its Synth serial.

Runs on demand (never from ctest):
  python3 tests/bench/failover_bench.py --build build --kills 20 --viewers 3
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
sys.dont_write_bytecode = True

BACKUP = 1_000_000


def pct(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def run(mode, kills, nviewers, read_timeout, H):
    a, b = H.TestOrigin(), H.TestOrigin()
    for o, base in ((a, 0), (b, BACKUP)):
        o.route("/live/s.flv", H.Synth(serial_base=base))
    cfg = H.live_config([a.url("/live/"), b.url("/live/")], origin_connect_timeout=1,
                        origin_read_timeout=read_timeout, origin_recheck=0)
    edge = H.Edge(cfg)
    viewers = [H.Viewer(edge.port, "/flv/s.flv", digest=False) for _ in range(nviewers)]
    for v in viewers:
        v.open()
        v.read_media_ms(1500, 10)
    samples = []
    cur, other, other_base = a, b, BACKUP
    try:
        for i in range(kills):
            marks = [len(v.tags) for v in viewers]
            t0 = cur.kill() if mode == "kill" else cur.freeze()
            worst = 0.0
            for v, n in zip(viewers, marks):
                v.read_until(lambda v: any(
                    t.serial is not None and other_base <= t.serial < other_base + BACKUP
                    for t in v.tags[n:]), read_timeout + 10, "the other origin")
                first = next(t for t in v.tags[n:] if t.serial is not None
                             and other_base <= t.serial < other_base + BACKUP)
                worst = max(worst, first.recv_time - t0)
                H.check_monotonic(v.tags[max(0, n - 50):])
            samples.append(worst)
            print(f"  {mode} {i + 1:2d}: {worst * 1000:7.1f} ms", flush=True)
            if mode == "kill":
                cur.revive()
            for v in viewers:  # play on the new origin a while, then drop what was read
                v.read_media_ms(0, 5)
                n = len(v.tags)
                v.read_until(lambda v: H.media_span_ms(v.tags[n:]) >= 1500, 10, "1.5 s more")
                del v.tags[:-50]
            cur, other = other, cur
            other_base = 0 if other_base == BACKUP else BACKUP
        failovers = edge.metric("flvedge_origin_failovers_total")
    finally:
        for v in viewers:
            v.close()
        edge.finish()
        a.stop()
        b.stop()
    return samples, failovers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--viewers", type=int, default=3)
    ap.add_argument("--read-timeout", type=float, default=1.0)
    ap.add_argument("--modes", nargs="+", default=["kill", "stall"])
    args = ap.parse_args()
    os.environ.setdefault("FLVEDGE_BIN", os.path.join(os.path.abspath(args.build), "flvedge"))
    os.environ.setdefault("FLVEDGE_SRC", SRC)
    import fe_harness as H
    print(f"flvedge {os.environ['FLVEDGE_BIN']}, {args.viewers} viewers, "
          f"origin_read_timeout {args.read_timeout} s, {args.kills} failovers per mode")
    rows = []
    for mode in args.modes:
        samples, failovers = run(mode, args.kills, args.viewers, args.read_timeout, H)
        ms = [s * 1000 for s in samples]
        rows.append((mode, pct(ms, 50), pct(ms, 99), min(ms), max(ms), failovers))
    print("\nmode   | p50 ms | p99 ms | min ms | max ms | failovers counted")
    for mode, p50, p99, lo, hi, n in rows:
        print(f"{mode:6s} | {p50:6.1f} | {p99:6.1f} | {lo:6.1f} | {hi:6.1f} | {n}")


if __name__ == "__main__":
    main()
