#!/usr/bin/env python3
"""HTTP/2 benchmark (docs/http2.md): small VOD hits over h2 (TLS, ALPN) with h2load against flvedge
and against Debian's nginx (http2 on, the same certificate and file), requests per second per server
core; and live fan-out over HTTPS with HTTP/2 against HTTP/1.1, CPU per Gbit/s.

Runs on demand (never from ctest). Each server runs one worker pinned to core 0, the clients on the
other cores; a server's CPU is its /proc utime + stime over the run.
- VOD: a 4 KiB file through flvedge's vod resource (cache warmed first: every measured request is a
  HIT) and the same file from nginx's root; `h2load -n N -c C -m M` (N requests, C connections, M
  streams each), TLS 1.2 ECDHE-ECDSA-AES128-GCM-SHA256 for both.
- Live: `viewers` curl processes on one file: source stream, `--http2` (one stream per connection,
  as a browser tab) against `--http1.1`; then curl --parallel with 10 streams per connection
  (a multi-view page).

  python3 tests/bench/h2_bench.py --build build [--requests 50000] [--viewers 100] [--seconds 15]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
from benchlib import cpu_seconds, free_port, stop, wait_port  # noqa: E402
from tls_bench import CIPHER, make_certs, make_media, taskset, worker_pids  # noqa: E402
from fe_harness import VodOrigin  # noqa: E402


def edge_start(binary, d, media, origin_url, cache, port):
    cfg = os.path.join(d, "edge.lua")
    with open(cfg, "w") as f:
        f.write(f'''return {{
  workers = 1, log_level = "warn",
  listen = {{ {{ "127.0.0.1:{port}", tls = {{ cert = "{d}/site.crt", key = "{d}/site.key" }} }} }},
  limits = {{ max_connections = 100000, request_timeout = 30, h2_max_streams = 128 }},
  resources = {{
    {{ name = "live", prefix = "/live/", type = "live", origin = "file:{media}" }},
    {{ name = "vod", prefix = "/vod/", type = "vod", origin = "{origin_url}", cache_dir = "{cache}" }},
  }},
}}
''')
    p = subprocess.Popen(taskset("0") + [binary, "-c", cfg], stderr=open(os.path.join(d, "edge.log"), "w"))
    wait_port(port, p, "flvedge")
    return p


def nginx_start(d, root, port):
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f'''worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on;
  server {{ listen 127.0.0.1:{port} ssl http2; ssl_certificate {d}/site.crt; ssl_certificate_key {d}/site.key;
    ssl_protocols TLSv1.2; ssl_ciphers {CIPHER}; http2_max_concurrent_streams 128;
    keepalive_requests 10000000;
    location /vod/ {{ alias {root}/; }} }} }}
''')
    p = subprocess.Popen(taskset("0") + ["nginx", "-c", conf, "-p", d], stderr=subprocess.DEVNULL)
    wait_port(port, p, "nginx")
    return p


def h2load(pids, url, n, c, m, h1=False):
    """-> (requests succeeded, server CPU s, h2load's req/s, the exact command). h1: HTTP/1.1
    (h2load --h1, m requests pipelined per connection)."""
    cmd = taskset(f"1-{os.cpu_count() - 1}") + ["h2load", "-n", str(n), "-c", str(c), "-m", str(m),
                                                "--ciphers", CIPHER] + (["--h1"] if h1 else []) + [url]
    c0 = cpu_seconds(pids)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    c1 = cpu_seconds(pids)
    ok = re.search(r"(\d+) succeeded", r.stdout)
    rps = re.search(r"finished in [^,]+, ([\d.]+) req/s", r.stdout)
    proto = re.search(r"Application protocol: (\S+)", r.stdout)
    if not ok or int(ok.group(1)) < n or (proto and proto.group(1) != ("http/1.1" if h1 else "h2")):
        raise SystemExit("h2load failed:\n" + r.stdout)
    return int(ok.group(1)), c1 - c0, float(rps.group(1)) if rps else 0.0, " ".join(cmd[3:] if cmd[0] == "taskset" else cmd)


def fanout(edge, urls_per_proc, procs_n, seconds, cacert, proto):
    """procs_n curl processes, each on urls_per_proc copies of the stream (multiplexed over one
    connection with --parallel when > 1): -> (edge CPU s, bytes in the window, wall s)."""
    url = urls_per_proc[0]
    base = taskset(f"1-{os.cpu_count() - 1}") + ["curl", "-s", "--cacert", cacert, proto, "--max-time",
                                                 str(seconds + 3)]
    if len(urls_per_proc) > 1:
        base += ["--parallel", "--parallel-immediate", "--parallel-max", str(len(urls_per_proc))]
    cmd = base + sum((["-o", "/dev/null", "-w", "%{size_download}\n", u] for u in urls_per_proc), [])
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for _ in range(procs_n)]
    time.sleep(3)
    c0, t0 = cpu_seconds([edge.pid]), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds([edge.pid]), time.monotonic()
    total = 0
    for p in procs:
        out, _ = p.communicate()
        total += sum(int(x) for x in out.split() if x.strip().isdigit())
    del url
    return c1 - c0, total * (t1 - t0) / (seconds + 3), t1 - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--streams", type=int, default=10)
    ap.add_argument("--viewers", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--kbit", type=int, default=4000)
    args = ap.parse_args()
    for tool in ("h2load", "nginx", "curl", "ffmpeg"):
        if not shutil.which(tool):
            raise SystemExit(f"h2_bench: {tool} missing (apt-get install nghttp2-client nginx curl ffmpeg)")
    binary = os.path.join(args.build, "flvedge")
    d = tempfile.mkdtemp(prefix="flvedge-h2bench-")
    os.chmod(d, 0o755)  # nginx's worker (nobody) reads the file under it
    make_certs(d)
    root = os.path.join(d, "files")
    os.makedirs(root)
    with open(os.path.join(root, "small.flv"), "wb") as f:
        f.write(b"FLV\x01\x05\x00\x00\x00\x09" + os.urandom(4096 - 9))
    media = os.path.join(tempfile.gettempdir(), f"flvedge-tlsbench-{args.kbit}k.flv")
    make_media(media, args.kbit)
    cache = os.path.join(d, "cache")
    os.makedirs(cache)
    origin = VodOrigin(root)
    port, nport = free_port(), free_port()
    edge = edge_start(binary, d, media, origin.url(), cache, port)
    cacert = os.path.join(d, "ca.crt")
    rows = []
    try:
        url = f"https://localhost:{port}/vod/small.flv"
        subprocess.run(["curl", "-s", "-o", "/dev/null", "--cacert", cacert, url], check=True)
        nginx = nginx_start(d, root, nport)
        nurl = f"https://localhost:{nport}/vod/small.flv"
        try:
            for h1 in (False, True):
                name = "HTTP/1.1 (pipelined)" if h1 else "h2"
                n_e, c_e, rps_e, cmd_e = h2load([edge.pid], url, args.requests, args.clients, args.streams, h1)
                n_n, c_n, rps_n, cmd_n = h2load(worker_pids(nginx), nurl, args.requests, args.clients,
                                                args.streams, h1)
                pe, pn = n_e / max(c_e, 1e-9), n_n / max(c_n, 1e-9)
                print(f"VOD hits over {name}: flvedge {n_e} in {c_e:.2f} CPU s = {pe:.0f} req/s per core "
                      f"({rps_e:.0f} req/s wall); nginx {n_n} in {c_n:.2f} CPU s = {pn:.0f} req/s per core "
                      f"({rps_n:.0f} req/s wall); flvedge/nginx {pe / pn:.2f}")
                print(f"  command: {cmd_e}")
                rows.append((f"4 KiB VOD hits over TLS {name}, requests/s per core (flvedge / nginx)",
                             f"{pe:.0f} / {pn:.0f}", f"{pe / pn:.2f}x"))
        finally:
            stop(nginx)

        live = f"https://localhost:{port}/live/s.flv"
        subprocess.run(["curl", "-s", "-o", "/dev/null", "--cacert", cacert, "--max-time", "2", live])
        res = {}
        for name, urls, procs, proto in (("HTTP/1.1", [live], args.viewers, "--http1.1"),
                                         ("h2, 1 stream/conn", [live], args.viewers, "--http2"),
                                         ("h2, 10 streams/conn", [live] * 10, args.viewers // 10, "--http2")):
            cpu, nbytes, wall = fanout(edge, urls, procs, args.seconds, cacert, proto)
            gbps = nbytes * 8 / wall / 1e9
            res[name] = (cpu / wall) / max(gbps, 1e-9)
            print(f"fan-out {name:20}: {len(urls) * procs} viewers, {gbps * 1000:.0f} Mbit/s, edge CPU "
                  f"{cpu / wall * 100:.1f}% of a core, {res[name]:.3f} core per Gbit/s")
        h1 = res["HTTP/1.1"]
        for name in ("h2, 1 stream/conn", "h2, 10 streams/conn"):
            rows.append((f"live fan-out over TLS, core per Gbit/s ({name} / HTTP/1.1)",
                         f"{res[name]:.3f} / {h1:.3f}", f"{res[name] / h1:.2f}x"))
    finally:
        stop(edge)
        origin.stop()
    print("\n| measure | value | ratio |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    shutil.rmtree(d, True)


if __name__ == "__main__":
    main()
