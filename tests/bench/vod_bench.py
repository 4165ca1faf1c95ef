#!/usr/bin/env python3
"""VOD cache hits: flvedge (workers = 1, a vod resource) against Debian's nginx (one worker,
proxy_cache + the slice module) in front of the same origin, side by side in one run.

The origin is the tests' VodOrigin (tests/integration/fe_harness.py): a 100 MB FLV
(tests/media/make_vod_media.sh --mb 100) and 100 small files of 100 KB. Both caches are warmed
first (every aligned MiB of the big file and every small file through each server, then checked to
be HITs). Each server runs pinned to core 0, wrk -t1 on core 1, one at a time:
  (a) ranges: 1 MiB Range requests at random aligned offsets of the 100 MB file (a wrk Lua script);
  (b) small:  whole 100 KB files picked at random.
Reported for each: requests/s, bytes/s, the server's CPU per request, the errors, and
flvedge / nginx; then the origin's body bytes over the bytes wrk received, for the repeated
workload after warm-up and for the whole run including it. Runs on demand, never from ctest.

  python3 tests/bench/vod_bench.py --build build              # both servers
  python3 tests/bench/vod_bench.py --only nginx               # one (e.g. before flvedge has VOD)
  python3 tests/bench/vod_bench.py --seconds 20 --connections 64 --markdown
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from benchlib import cpu_seconds, free_port, stop, wait_port  # noqa: E402
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
sys.dont_write_bytecode = True
from fe_harness import VodOrigin  # noqa: E402  (the tests' origin: ranges, validators, a byte count)

MIB = 1 << 20
SMALL = 100 * 1000
N_SMALL = 100

# wrk: 1 MiB aligned ranges of the big file, or whole small files, in a seeded random order. The
# done() callback prints one JSON line for the driver.
WRK_LUA = r"""
local mode, size, nsmall = "%(mode)s", %(size)d, %(nsmall)d
local mib = 1048576
local slices = math.floor(size / mib)
math.randomseed(%(seed)d)
request = function()
  if mode == "ranges" then
    local a = math.random(0, slices - 1) * mib
    return wrk.format("GET", "/videos/big.flv", { ["Range"] = "bytes=" .. a .. "-" .. (a + mib - 1) })
  end
  return wrk.format("GET", string.format("/videos/small/f%%03d.bin", math.random(0, nsmall - 1)))
end
done = function(s, latency, requests)
  local e = s.errors
  io.write(string.format('JSON {"requests": %%d, "bytes": %%d, "us": %%d, "status_errors": %%d, ' ..
    '"socket_errors": %%d, "p50_ms": %%.3f, "p99_ms": %%.3f}\n', s.requests, s.bytes, s.duration,
    e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def make_origin_root(work, big):
    root = os.path.join(work, "origin")
    os.makedirs(os.path.join(root, "small"))
    os.symlink(big, os.path.join(root, "big.flv"))
    rnd = random.Random(1)
    for i in range(N_SMALL):
        with open(os.path.join(root, "small", "f%03d.bin" % i), "wb") as f:
            f.write(rnd.randbytes(SMALL))
    return root


def start_nginx(work, origin_port, slice_bytes):
    d = os.path.join(work, "nginx")
    os.makedirs(os.path.join(d, "cache"))
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    user = "user root;  # the cache is in a private temporary directory\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(f"""{user}worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;  # no tcp_nopush: with it, 100 KB answers waited 40 ms for delayed ACKs
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  proxy_cache_path {d}/cache levels=1:2 keys_zone=vod:16m max_size=4g inactive=1d use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    location /videos/ {{
      slice {slice_bytes};
      proxy_cache vod;
      proxy_cache_key $uri$slice_range;
      proxy_set_header Range $slice_range;
      proxy_cache_valid 200 206 1d;
      proxy_cache_lock on;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://origin/media/;
      add_header X-Cache-Status $upstream_cache_status;
    }}
  }}
}}
""")
    proc = subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", d, "-c", conf],
                            stderr=open(os.path.join(d, "stderr.log"), "w"))
    wait_port(port, proc, "vod_bench: nginx")
    return proc, port, lambda: [proc.pid] + children(proc.pid)


def start_flvedge(work, binary, origin_port, slice_bytes):
    d = os.path.join(work, "flvedge")
    os.makedirs(os.path.join(d, "cache"))
    port = free_port()
    conf = os.path.join(d, "flvedge.lua")
    with open(conf, "w") as f:
        f.write(f"""return {{
  listen = {{ "127.0.0.1:{port}" }},
  workers = 1,
  log_level = "warn",
  resources = {{
    {{ prefix = "/videos/", type = "vod", origin = "http://127.0.0.1:{origin_port}/media/",
      cache_dir = "{d}/cache", cache_max_size = "4G", cache_ttl = 86400, slice_size = {slice_bytes} }},
  }},
}}
""")
    check = subprocess.run([binary, "-t", "-c", conf], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit("vod_bench: flvedge refuses the vod config (no VOD yet? use --only nginx): "
                         + (check.stdout + check.stderr).strip())
    proc = subprocess.Popen(["taskset", "-c", "0", binary, "-c", conf],
                            stderr=open(os.path.join(d, "stderr.log"), "w"))
    wait_port(port, proc, "vod_bench: flvedge")
    return proc, port, lambda: [proc.pid]


def fetch(conn, path, rng=None):
    headers = {"Range": "bytes=%d-%d" % rng} if rng else {}
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    return r.status, r.getheader("X-Cache-Status"), body


def warm(name, port, big_size, files):
    """Every aligned MiB and every small file once, then again: each must be a HIT and right."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    want = {}
    with open(files["big"], "rb") as f:
        for i in range(big_size // MIB):
            f.seek(i * MIB)
            want[("/videos/big.flv", (i * MIB, i * MIB + MIB - 1))] = f.read(MIB)
    for i in range(N_SMALL):
        with open(os.path.join(files["root"], "small", "f%03d.bin" % i), "rb") as f:
            want[("/videos/small/f%03d.bin" % i, None)] = f.read()
    delivered = 0
    for rounds in range(2):
        misses = 0
        for (path, rng), body in want.items():
            status, cache, got = fetch(conn, path, rng)
            delivered += len(got)
            if status != (206 if rng else 200) or got != body:
                raise SystemExit(f"vod_bench: {name} {path} {rng}: status {status}, "
                                 f"{len(got)} bytes, {'right' if got == body else 'WRONG'} body")
            if cache != "HIT":
                misses += 1
        if rounds == 1 and misses:
            raise SystemExit(f"vod_bench: {name}: {misses} of {len(want)} not HITs after warming")
    conn.close()
    return delivered


def wrk(port, mode, seconds, conns, big_size, work, seed):
    script = os.path.join(work, f"wrk-{mode}.lua")
    with open(script, "w") as f:
        f.write(WRK_LUA % {"mode": mode, "size": big_size, "nsmall": N_SMALL, "seed": seed})
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
                          "-s", script, f"http://127.0.0.1:{port}/"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True).stdout
    m = re.search(r"^JSON (.*)$", out, re.M)
    if not m:
        raise SystemExit("vod_bench: no summary from wrk:\n" + out)
    return json.loads(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--media", default=os.path.join(os.environ.get("FE_MEDIA_DIR", "/tmp/flvedge-media"),
                                                    "vod_bench_100mb.flv"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--slice-mib", type=int, default=1, help="slice size of both caches (MiB)")
    ap.add_argument("--only", choices=("nginx", "flvedge"))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    for tool in ("wrk", "nginx", "taskset", "ffmpeg"):
        if not shutil.which(tool):
            raise SystemExit(f"vod_bench: {tool} missing (apt-get install wrk nginx ffmpeg util-linux)")
    ver = subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr
    if "--with-http_slice_module" not in ver:
        raise SystemExit("vod_bench: this nginx has no slice module (Debian's nginx package has it)")
    binary = os.path.join(args.build, "flvedge")
    if args.only != "nginx" and not os.access(binary, os.X_OK):
        raise SystemExit(f"vod_bench: {binary} not built")

    subprocess.run(["bash", os.path.join(SRC, "tests", "media", "make_vod_media.sh"), "--mb", "100",
                    args.media], check=True)
    big_size = os.path.getsize(args.media)
    work = tempfile.mkdtemp(prefix="flvedge-vodbench-")
    root = make_origin_root(work, args.media)
    files = {"big": args.media, "root": root}
    origin = VodOrigin(root, "/media/")
    slice_bytes = args.slice_mib * MIB
    servers = [s for s in ("flvedge", "nginx") if args.only in (None, s)]
    results = {}
    print(f"vod_bench: {big_size / 1e6:.1f} MB file, {N_SMALL} x {SMALL // 1000} KB files, "
          f"slices {args.slice_mib} MiB; servers on core 0, wrk -t1 -c{args.connections} "
          f"-d{args.seconds}s on core 1; {ver.splitlines()[0]}")
    try:
        for name in servers:
            if name == "nginx":
                proc, port, pids = start_nginx(work, origin.port, slice_bytes)
            else:
                proc, port, pids = start_flvedge(work, binary, origin.port, slice_bytes)
            try:
                o0 = origin.body_bytes
                warm_delivered = warm(name, port, big_size, files)
                warm_origin = origin.body_bytes - o0
                o1 = origin.body_bytes
                runs = {}
                for mode in ("ranges", "small"):
                    c0, t0 = cpu_seconds(pids()), time.monotonic()
                    w = wrk(port, mode, args.seconds, args.connections, big_size, work, seed=7)
                    w["cpu_s"] = cpu_seconds(pids()) - c0
                    w["wall_s"] = time.monotonic() - t0
                    runs[mode] = w
                    secs = w["us"] / 1e6
                    print(f"{name:8s} {mode:6s} {w['requests'] / secs:10.0f} req/s "
                          f"{w['bytes'] / secs / 1e6:9.1f} MB/s  cpu {w['cpu_s'] / w['wall_s'] * 100:5.1f} % "
                          f"{w['cpu_s'] / max(1, w['requests']) * 1e6:7.1f} us/req  p50 {w['p50_ms']:.2f} ms "
                          f"p99 {w['p99_ms']:.2f} ms  errors {w['status_errors']} status, "
                          f"{w['socket_errors']} socket", flush=True)
                run_origin = origin.body_bytes - o1
                run_delivered = sum(w["bytes"] for w in runs.values())
                results[name] = {"runs": runs, "warm_origin": warm_origin,
                                 "warm_delivered": warm_delivered, "run_origin": run_origin,
                                 "run_delivered": run_delivered}
                print(f"{name:8s} origin/delivered: after warm-up {run_origin / max(1, run_delivered) * 100:.3f} % "
                      f"({run_origin} of {run_delivered} bytes); with warm-up "
                      f"{(warm_origin + run_origin) / max(1, warm_delivered + run_delivered) * 100:.2f} %",
                      flush=True)
            finally:
                stop(proc)
    finally:
        origin.stop()
        shutil.rmtree(work, ignore_errors=True)

    if len(results) == 2:
        for mode in ("ranges", "small"):
            f, n = results["flvedge"]["runs"][mode], results["nginx"]["runs"][mode]
            rf, rn = f["requests"] / f["us"], n["requests"] / n["us"]
            bf, bn = f["bytes"] / f["us"], n["bytes"] / n["us"]
            print(f"flvedge / nginx {mode:6s}: req/s {rf / rn:.2f}x, bytes/s {bf / bn:.2f}x")
    if args.markdown:
        print("\n| server | workload | req/s | MB/s | CPU us/req | p99 ms | errors | origin/delivered after warm-up |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, r in results.items():
            for mode, w in r["runs"].items():
                secs = w["us"] / 1e6
                print(f"| {name} | {mode} | {w['requests'] / secs:.0f} | {w['bytes'] / secs / 1e6:.1f} | "
                      f"{w['cpu_s'] / max(1, w['requests']) * 1e6:.1f} | {w['p99_ms']:.2f} | "
                      f"{w['status_errors'] + w['socket_errors']} | "
                      f"{r['run_origin'] / max(1, r['run_delivered']) * 100:.3f} % |")


if __name__ == "__main__":
    main()
