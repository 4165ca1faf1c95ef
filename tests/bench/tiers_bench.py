#!/usr/bin/env python3
"""What each flvedge tier adds (issue 10): the same Synth stream read straight from the test origin,
through one flvedge (an edge) and through two (edge -> shield -> origin), on one host. For each tier:
the first keyframe time of a new viewer of a warm stream (request sent to first keyframe received),
and the lag of every tag (received at the viewer minus sent by the origin, from the Synth serials).

Runs on demand (never from ctest):
  python3 tests/bench/tiers_bench.py --build build --joins 20
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
sys.dont_write_bytecode = True


def pct(xs, p):
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, int(round(p / 100.0 * len(xs) + 0.5)) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--joins", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("FLVEDGE_BIN", os.path.join(os.path.abspath(args.build), "flvedge"))
    os.environ.setdefault("FLVEDGE_SRC", SRC)
    import fe_harness as H
    origin = H.TestOrigin()
    origin.route("/live/s.flv", H.Synth(), track_send_times=True)
    shield = H.Edge(H.live_config(origin.url("/live/"), prefix="/live/"))
    edge = H.Edge(H.live_config("http://127.0.0.1:%d/live/" % shield.port, prefix="/live/"))
    keep = H.Viewer(edge.port, "/live/s.flv", digest=False)  # keeps the stream warm on both tiers
    keep.open()
    keep.read_media_ms(2000, 10)
    tiers = [("origin", origin.port), ("1 tier (edge)", shield.port), ("2 tiers (edge+shield)", edge.port)]
    print(f"flvedge {os.environ['FLVEDGE_BIN']}, Synth 25 fps, keyframe every 1 s, {args.joins} joins per tier")
    print("tier                  | first keyframe p50/p99 ms | tag lag p50/p99 ms")
    sent = origin.sent_at["/live/s.flv"]
    for name, port in tiers:
        fk, lag = [], []
        for _ in range(args.joins):
            t0 = time.monotonic()
            v = H.Viewer(port, "/live/s.flv", digest=False)
            v.open()
            v.read_until(lambda v: any(t.is_keyframe for t in v.tags), 10, "a keyframe")
            fk.append((next(t for t in v.tags if t.is_keyframe).recv_time - t0) * 1000)
            n = len(v.tags)
            v.read_until(lambda v: len(v.tags) >= n + 40, 10, "40 more tags")
            for t in v.tags[n:]:
                if t.serial in sent:
                    lag.append((t.recv_time - sent[t.serial]) * 1000)
            v.close()
            keep.pump(0.01) if keep.conn else None
        print(f"{name:21s} | {pct(fk, 50):8.1f} / {pct(fk, 99):8.1f}     | {pct(lag, 50):6.2f} / {pct(lag, 99):6.2f}")
    keep.close()
    edge.finish()
    shield.finish()
    origin.stop()


if __name__ == "__main__":
    main()
