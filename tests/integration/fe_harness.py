"""
fe_harness: what the flvedge integration tests share (Python 3 standard library only).

- Edge: runs the real binary with a Lua config (rendered from a dict) or in quick mode, finds its
  port from the `flvedge: listening on http://127.0.0.1:PORT` line, stops it with a signal and
  checks exit code 0 and a stderr free of sanitizer reports.
- TestOrigin: a threaded HTTP/1.1 origin on raw sockets, so the framing is ours: chunked, close
  delimited (HTTP/1.0) or Content-Length; live pacing by tag timestamps; status overrides; stalls;
  malformed data; a count of connections per path; ending a stream on demand.
- HttpConn / Viewer / FlvReader: a client that de-chunks a response and checks the FLV in it
  (PreviousTagSize == 11 + DataSize), keeping a compact record of every tag.
- Synth: a synthetic H.264+AAC-shaped FLV (no ffmpeg); every media tag carries a serial number.
- ensure_media(): real H.264+AAC FLV made by ffmpeg once into $FE_MEDIA_DIR (/tmp/flvedge-media);
  ensure_vod_media() the same with a keyframe index (tests/media/make_vod_media.sh).
- VodOrigin: a threaded HTTP/1.1 file server (ranges, ETag, Last-Modified, 304, keep-alive) that
  logs every request and has faults switchable at run time; vod_config() / start_vod_edge() /
  admin_request() for an edge with a vod resource and its admin listener; vod_supported() tells
  whether the binary has the vod resource at all (the VOD tests exit 77, skipped, when not).

Environment: FLVEDGE_BIN, FLVEDGE_SRC, FLVEDGE_BUILD (set by ctest); FE_TIME_SCALE overrides the
automatic slow-down factor applied to timeouts (3 when the binary is built with sanitizers).
"""

import atexit
import email.utils
import json
import fcntl
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("FLVEDGE_SRC") or os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("FLVEDGE_BUILD") or os.path.join(SRC, "build")
BIN = os.environ.get("FLVEDGE_BIN") or os.path.join(BUILD, "flvedge")
MEDIA_DIR = os.environ.get("FE_MEDIA_DIR", "/tmp/flvedge-media")
# Every test runs the edge with this many loops unless it sets its own (FE_WORKERS=1 for one).
WORKERS = int(os.environ.get("FE_WORKERS", "2"))

LISTEN_RE = re.compile(r"flvedge: listening on https?://([0-9.]+|\[[0-9a-fA-F:]+\]):(\d+)")
READY_RE = re.compile(r"flvedge: \d+ loop\(s\), connections spread by")
ADMIN_RE = re.compile(r"flvedge: admin API on http://([0-9.]+|\[[0-9a-fA-F:]+\]):(\d+)")
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer",
                     "MemorySanitizer")


# ---------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------

def _binary_is_sanitized(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"__asan_init" in data or b"__ubsan_handle" in data or b"__tsan_init" in data


SANITIZED = _binary_is_sanitized(BIN)
TIME_SCALE = float(os.environ.get("FE_TIME_SCALE") or (3.0 if SANITIZED else 1.0))


def T(seconds):
    """A timeout scaled for slow (sanitizer) builds. Only for waits that end early on success."""
    return seconds * TIME_SCALE


def wait_until(cond, timeout, what="condition", interval=0.02):
    """Polls cond() until it returns a true value (returned), or fails the test after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Child processes: all killed when the test process goes away, even on failure
# ---------------------------------------------------------------------------------------------

_children = set()
_children_lock = threading.Lock()
_SETPRIV = shutil.which("setpriv")


def _kill_children():
    with _children_lock:
        procs = list(_children)
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass


def _on_sigterm(*_):
    _kill_children()
    os._exit(143)


atexit.register(_kill_children)
if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _on_sigterm)


def spawn(cmd, stdout=None, stderr=None, cwd=None, env=None, stdin=subprocess.DEVNULL):
    """Popen with cleanup: the child gets SIGKILL if we die (setpriv --pdeathsig) and at exit."""
    full = list(cmd)
    if _SETPRIV and threading.current_thread() is threading.main_thread():
        # The death signal follows the thread that forked: only safe from the main thread.
        full = [_SETPRIV, "--pdeathsig", "KILL", "--"] + full
    p = subprocess.Popen(full, stdout=stdout, stderr=stderr, stdin=stdin, cwd=cwd, env=env)
    with _children_lock:
        _children.add(p)
    return p


def run(cmd, timeout, **kw):
    """subprocess.run with capture, text output and a hard timeout (the child is killed)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


# ---------------------------------------------------------------------------------------------
# Lua config rendering
# ---------------------------------------------------------------------------------------------

class Lua:
    """A raw Lua expression inside a config dict, e.g. Lua("64 * 1048576")."""

    def __init__(self, expr):
        self.expr = expr


_LUA_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LUA_KEYWORDS = set("and break do else elseif end false for function goto if in local nil not or "
                    "repeat return then true until while".split())


def lua_string(s):
    if isinstance(s, bytes):
        s = s.decode("latin-1")
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif o < 32 or o == 127:
            out.append("\\%03d" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def to_lua(value, indent=0):
    """Renders None/bool/int/float/str/list/tuple/dict/Lua as a Lua expression."""
    pad = "  " * (indent + 1)
    end_pad = "  " * indent
    if value is None:
        return "nil"
    if isinstance(value, Lua):
        return value.expr
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("no Lua literal for %r" % value)
        return repr(value)
    if isinstance(value, (str, bytes)):
        return lua_string(value)
    if isinstance(value, (list, tuple)):
        if not value:
            return "{}"
        return "{\n" + "".join(pad + to_lua(v, indent + 1) + ",\n" for v in value) + end_pad + "}"
    if isinstance(value, dict):
        if not value:
            return "{}"
        parts = []
        for k, v in value.items():
            if v is None:
                continue
            if isinstance(k, str) and _LUA_IDENT.match(k) and k not in _LUA_KEYWORDS:
                key = k
            else:
                key = "[" + to_lua(k) + "]"
            parts.append(pad + key + " = " + to_lua(v, indent + 1) + ",\n")
        return "{\n" + "".join(parts) + end_pad + "}"
    raise TypeError("cannot render %r as Lua" % (value,))


def live_config(origin, prefix="/flv/", limits=None, name="live", extra_resources=(), top=None,
                **resource):
    """A config dict with one live resource (plus extra_resources after it)."""
    res = {"name": name, "prefix": prefix, "type": "live", "origin": origin}
    res.update(resource)
    cfg = {"log_level": "info", "resources": [res] + list(extra_resources)}
    if limits:
        cfg["limits"] = dict(limits)
    if top:
        cfg.update(top)
    return cfg


# ---------------------------------------------------------------------------------------------
# The edge process
# ---------------------------------------------------------------------------------------------

class Edge:
    """
    One flvedge process. `config` is a dict (rendered to Lua; listen defaults to 127.0.0.1:0), Lua
    text, or None with `args` for quick mode. stderr goes to a file (self.stderr_path).
    """

    def __init__(self, config=None, args=(), env=None, wait=True, start_timeout=None,
                 config_name="edge.lua", files=None, auto_admin=True, wrap=()):
        self.dir = tempfile.mkdtemp(prefix="flvedge-it-")
        self.config_path = None
        if files:
            for rel, data in files.items():
                p = os.path.join(self.dir, rel)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                mode = "wb" if isinstance(data, bytes) else "w"
                with open(p, mode) as f:
                    f.write(data)
        cmd = list(wrap) + [BIN]  # wrap: a command that runs it ("ip netns exec NS")
        if config is not None:
            # Metrics are on the admin listener only (unless a config sets status_prefix): every
            # config the tests make gets one, on a port of its own, unless it has its own.
            if isinstance(config, dict):
                cfg = dict(config)
                cfg.setdefault("listen", ["127.0.0.1:0"])
                cfg.setdefault("workers", WORKERS)
                if auto_admin:
                    cfg.setdefault("admin", {"listen": "127.0.0.1:0", "token": ADMIN_TOKEN})
                text = "return " + to_lua(cfg) + "\n"
            else:
                text = config
                if auto_admin and "admin" not in text and re.match(r"\s*return\s*\{", text):
                    text = re.sub(r"^\s*return\s*\{", 'return { admin = { listen = "127.0.0.1:0", '
                                  'token = "%s" },' % ADMIN_TOKEN, text, count=1)
            self.config_text = text
            self.config_path = os.path.join(self.dir, config_name)
            with open(self.config_path, "w") as f:
                f.write(text)
            cmd += ["-c", self.config_path]
        cmd += list(args)
        self.cmd = cmd
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.ports = []
        self.admin_port = None
        self.returncode = None
        self._finished = False
        if not os.path.exists(BIN):
            raise AssertionError("flvedge binary not found: %s (set FLVEDGE_BIN)" % BIN)
        penv = dict(os.environ)
        if env:
            penv.update(env)
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = spawn(cmd, stdout=self._out, stderr=self._err, cwd=self.dir, env=penv)
        if wait:
            try:
                self.wait_listening(start_timeout or T(20))
            except BaseException:
                self.kill()
                raise

    @classmethod
    def quick(cls, origin, listen="127.0.0.1:0", extra_args=(), **kw):
        extra = list(extra_args)
        if "--workers" not in extra:
            extra += ["--workers", str(WORKERS)]
        return cls(None, args=["--listen", listen, "--origin", origin] + extra, **kw)

    # -- state ------------------------------------------------------------------------------

    @property
    def pid(self):
        return self.proc.pid

    @property
    def port(self):
        return self.ports[0]

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def alive(self):
        return self.proc.poll() is None

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout_text(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_tail(self, n=4000):
        t = self.stderr_text()
        return t[-n:]

    def log_lines(self, *patterns):
        """stderr lines matching every regex in patterns (case-insensitive)."""
        regs = [re.compile(p, re.I) for p in patterns]
        return [l for l in self.stderr_text().splitlines() if all(r.search(l) for r in regs)]

    def wait_log(self, *patterns, timeout=None, what=None):
        return wait_until(lambda: self.log_lines(*patterns), timeout or T(10),
                          what or "a log line matching %r; log tail:\n%s" % (
                              patterns, self.stderr_tail(1500)))

    def wait_listening(self, timeout):
        def ready():
            # The "loop(s)" line follows every listening line and the admin line: waiting
            # for it sees all the ports, not just the first one logged.
            text = self.stderr_text()
            if READY_RE.search(text):
                return LISTEN_RE.findall(text)
            if self.proc.poll() is not None:
                raise AssertionError("flvedge exited with %s before listening; cmd %s; stderr:\n%s"
                                     % (self.proc.returncode, self.cmd, self.stderr_tail()))
            return None
        found = wait_until(ready, timeout, "the 'flvedge: listening on' line")
        self.ports = [int(p) for _, p in found]
        admin = ADMIN_RE.findall(self.stderr_text())
        if admin:
            self.admin_port = int(admin[0][1])
        return self.ports

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.pid)

    def metrics_text(self, path=None):
        """/metrics of the admin listener (path None), or `path` on the public listener."""
        if path is None and self.admin_port:
            r = http_request(self.admin_port, "GET", "/metrics",
                             headers={"Authorization": "Bearer " + ADMIN_TOKEN})
            path = "/metrics (admin)"
        else:
            path = path or "/_flvedge/metrics"
            r = http_request(self.port, "GET", path)
        if r.status != 200:
            raise AssertionError("GET %s -> %d %r" % (path, r.status, r.body[:200]))
        return r.body.decode("utf-8", "replace")

    def metrics(self, path=None):
        return parse_metrics(self.metrics_text(path))

    def metric(self, name, path=None):
        """The sum of every series of `name` (labels ignored); None if absent."""
        return self.metrics(path).get(name)

    def series(self, name, path=None):
        """Every series of `name`: {label text: value}."""
        out = {}
        for m in re.finditer(r'^%s(\{[^}]*\})? (\S+)$' % re.escape(name), self.metrics_text(path), re.M):
            out[m.group(1) or ""] = float(m.group(2))
        return out

    def loop_metric(self, name, path=None):
        """A per-loop series, flvedge_loop_NAME{loop="i"}: a list indexed by loop."""
        out = {}
        for m in re.finditer(r'^flvedge_loop_%s\{loop="(\d+)"\} (\S+)$' % re.escape(name),
                             self.metrics_text(path), re.M):
            out[int(m.group(1))] = float(m.group(2))
        return [out[i] for i in sorted(out)]

    # -- stopping ---------------------------------------------------------------------------

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=None, expect_code=0):
        """Sends sig, waits for exit and checks the exit code (None: no check). Returns it."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout or T(15))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("flvedge did not exit within %.0f s of signal %d; stderr:\n%s"
                                     % (timeout or T(15), sig, self.stderr_tail()))
        self.returncode = self.proc.returncode
        self._close_files()
        if expect_code is not None and self.returncode != expect_code:
            raise AssertionError("flvedge exit code %s, expected %s; stderr:\n%s"
                                 % (self.returncode, expect_code, self.stderr_tail()))
        return self.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._close_files()

    def _close_files(self):
        for f in (self._err, self._out):
            try:
                f.close()
            except Exception:
                pass

    def check_sanitizers(self):
        text = self.stderr_text()
        for marker in SANITIZER_MARKERS:
            i = text.find(marker)
            if i >= 0:
                start = text.rfind("\n", 0, max(0, i - 200)) + 1
                raise AssertionError("sanitizer report in flvedge stderr (%s):\n%s"
                                     % (marker, text[start:start + 6000]))

    def finish(self):
        """Teardown: a graceful stop that must exit 0 (unless already stopped), then the sanitizer check."""
        if self._finished:
            return
        self._finished = True
        problems = []
        crashed = self.proc.poll() is not None and self.returncode is None
        if crashed:
            problems.append("flvedge died during the test with exit code %s" % self.proc.returncode)
        else:
            try:
                self.stop()
            except AssertionError as e:
                problems.append(str(e))
        self.kill()
        try:
            self.check_sanitizers()
        except AssertionError as e:
            problems.append(str(e))
        if problems:
            if crashed:
                problems.append("stderr tail:\n" + self.stderr_tail())
            raise AssertionError("\n".join(problems))
        shutil.rmtree(self.dir, ignore_errors=True)


def parse_metrics(text):
    """Prometheus text -> {name: sum of its series}."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?\s+(\S+)", line)
        if not m:
            continue
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        out[m.group(1)] = out.get(m.group(1), 0.0) + v
    return out


# ---------------------------------------------------------------------------------------------
# HTTP client on raw sockets
# ---------------------------------------------------------------------------------------------

class ProtocolError(AssertionError):
    pass


class HttpResponse:
    def __init__(self, version, status, reason, headers, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] in order
        self.raw_head = raw_head
        self.body = b""

    def header(self, name, default=None):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(vals) if vals else default

    def header_list(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def __repr__(self):
        return "<HttpResponse %s %d %s %r>" % (self.version, self.status, self.reason, self.headers)


class HttpConn:
    """
    One client connection. The request is sent at construction (raw bytes, or built from method,
    path, version and headers). read_head() parses the response head; read_body_some() returns
    de-framed body bytes (chunked, Content-Length or close-delimited).
    """

    def __init__(self, port, path="/", method="GET", version="HTTP/1.1", headers=None, body=b"",
                 raw=None, rcvbuf=None, host="127.0.0.1", connect_timeout=None, source=None):
        self.port = port
        self.method = method
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(connect_timeout or T(10))
        if source:  # the client address the edge sees (127.0.0.2 ... are all loopback)
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.response = None
        self.framing = None     # "chunked" | "length" | "close" | "none"
        self.body_done = False  # the body is over (cleanly or not)
        self.clean_end = None   # True: terminating chunk / full length / EOF of a close-delimited body
        self.eof = False        # the server closed (or reset) the connection
        self.reset = False
        self.bytes_received = 0
        self._chunk_state = "size"
        self._chunk_left = 0
        self._length_left = 0
        if raw is None:
            hdrs = [("Host", "%s:%d" % (host, port)), ("User-Agent", "flvedge-it/1")]
            for k, v in (headers or {}).items():
                hdrs = [(a, b) for a, b in hdrs if a.lower() != k.lower()]
                if v is not None:
                    hdrs.append((k, v))
            if body and not any(k.lower() == "content-length" for k, _ in hdrs):
                hdrs.append(("Content-Length", str(len(body))))
            raw = ("%s %s %s\r\n" % (method, path, version)).encode("latin-1")
            raw += b"".join(("%s: %s\r\n" % (k, v)).encode("latin-1") for k, v in hdrs)
            raw += b"\r\n" + body
        if raw:
            self.sock.sendall(raw)

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except Exception:
            pass

    def _recv(self, deadline, n=262144):
        """Some bytes into self.buf; False on EOF/reset; raises TimeoutError at the deadline."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the server before the deadline")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(n)
        except socket.timeout:
            raise TimeoutError("no data from the server before the deadline")
        except (ConnectionResetError, BrokenPipeError):
            self.eof = True
            self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.bytes_received += len(data)
        self.buf += data
        return True

    def read_head(self, timeout=None):
        """Parses the status line and headers; returns the HttpResponse."""
        deadline = time.monotonic() + (timeout or T(10))
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if len(self.buf) > 65536:
                raise ProtocolError("response head over 64 KiB")
            try:
                more = self._recv(deadline)
            except TimeoutError:
                raise AssertionError("no response head within %.1f s (got %r)"
                                     % (timeout or T(10), bytes(self.buf[:300])))
            if not more:
                raise AssertionError("connection closed%s before a complete response head (got %r)"
                                     % (" (reset)" if self.reset else "", bytes(self.buf[:300])))
        head = bytes(self.buf[:i]).decode("latin-1")
        del self.buf[:i + 4]
        lines = head.split("\r\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise ProtocolError("bad status line %r" % lines[0])
        headers = []
        for line in lines[1:]:
            if ":" not in line:
                raise ProtocolError("bad header line %r" % line)
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
        resp = HttpResponse(m.group(1), int(m.group(2)), m.group(3) or "", headers, head)
        self.response = resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if self.method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            self.framing = "none"
            self.body_done = True
            self.clean_end = True
        elif "chunked" in te:
            self.framing = "chunked"
        elif cl is not None:
            self.framing = "length"
            self._length_left = int(cl)
            if self._length_left == 0:
                self.body_done = True
                self.clean_end = True
        else:
            self.framing = "close"
        return resp

    def _decode(self):
        out = bytearray()
        buf = self.buf
        if self.framing == "close":
            out += buf
            buf.clear()
        elif self.framing == "length":
            n = min(len(buf), self._length_left)
            out += buf[:n]
            del buf[:n]
            self._length_left -= n
            if self._length_left == 0:
                self.body_done = True
                self.clean_end = True
        elif self.framing == "chunked":
            while not self.body_done:
                st = self._chunk_state
                if st == "size":
                    i = buf.find(b"\r\n")
                    if i < 0:
                        if len(buf) > 1024:
                            raise ProtocolError("chunk size line too long: %r" % bytes(buf[:64]))
                        break
                    line = bytes(buf[:i]).split(b";")[0].strip()
                    del buf[:i + 2]
                    try:
                        size = int(line, 16)
                    except ValueError:
                        raise ProtocolError("bad chunk size line %r" % line)
                    if size == 0:
                        self._chunk_state = "trailer"
                    else:
                        self._chunk_left = size
                        self._chunk_state = "data"
                elif st == "data":
                    n = min(self._chunk_left, len(buf))
                    if n == 0:
                        break
                    out += buf[:n]
                    del buf[:n]
                    self._chunk_left -= n
                    if self._chunk_left == 0:
                        self._chunk_state = "crlf"
                elif st == "crlf":
                    if len(buf) < 2:
                        break
                    if buf[:2] != b"\r\n":
                        raise ProtocolError("chunk data not followed by CRLF: %r" % bytes(buf[:16]))
                    del buf[:2]
                    self._chunk_state = "size"
                elif st == "trailer":
                    i = buf.find(b"\r\n")
                    if i < 0:
                        break
                    line = bytes(buf[:i])
                    del buf[:i + 2]
                    if line == b"":
                        self.body_done = True
                        self.clean_end = True
        return bytes(out)

    def read_body_some(self, timeout=None, max_recv=262144):
        """
        Body bytes as they come: returns non-empty bytes, or b"" once the body is over
        (see clean_end). Raises TimeoutError when nothing arrives in time. max_recv caps each
        socket read (a slow reader).
        """
        if self.response is None:
            self.read_head(timeout)
        deadline = time.monotonic() + (timeout if timeout is not None else T(10))
        while True:
            data = self._decode()
            if data:
                return data
            if self.body_done:
                return b""
            if not self._recv(deadline, max_recv):
                self.body_done = True
                self.clean_end = self.framing == "close" and not self.reset
                return self._decode() if self.framing == "close" else b""

    def read_body_all(self, timeout=None):
        deadline = time.monotonic() + (timeout or T(10))
        out = bytearray()
        while True:
            data = self.read_body_some(max(0.001, deadline - time.monotonic()))
            if not data:
                return bytes(out)
            out += data

    def wait_closed(self, timeout):
        """Reads and discards until the server closes the connection; True if it did in time."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            self.buf.clear()
            try:
                self._recv(deadline)
            except TimeoutError:
                return False
        return True


def http_request(port, method, path, headers=None, body=b"", version="HTTP/1.1", timeout=None,
                 host="127.0.0.1", source=None):
    """A whole request/response (Connection: close); returns HttpResponse with .body."""
    hdrs = {"Connection": "close"}
    hdrs.update(headers or {})
    c = HttpConn(port, path, method=method, version=version, headers=hdrs, body=body, host=host,
                 source=source)
    try:
        r = c.read_head(timeout or T(10))
        r.body = c.read_body_all(timeout or T(10))
        r.clean_end = c.clean_end
        return r
    finally:
        c.close()


def raw_exchange(port, data, timeout=None):
    """Sends raw bytes, reads until the server closes (or timeout); returns (bytes, closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=T(10))
    out = bytearray()
    closed = False
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        deadline = time.monotonic() + (timeout or T(10))
        while time.monotonic() < deadline:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not d:
                closed = True
                break
            out += d
    finally:
        s.close()
    return bytes(out), closed


def status_of(raw):
    m = re.match(rb"^HTTP/\d\.\d (\d{3})", raw)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# FLV
# ---------------------------------------------------------------------------------------------

class FlvError(AssertionError):
    pass


AUDIO, VIDEO, SCRIPT = 8, 9, 18


class Tag:
    __slots__ = ("type", "ts", "size", "head", "crc", "index", "recv_time")

    def __init__(self, type_, ts, size, head, crc, index, recv_time):
        self.type = type_
        self.ts = ts
        self.size = size
        self.head = head
        self.crc = crc
        self.index = index
        self.recv_time = recv_time

    @property
    def is_video(self):
        return self.type == VIDEO

    @property
    def is_audio(self):
        return self.type == AUDIO

    @property
    def is_script(self):
        return self.type == SCRIPT

    @property
    def is_metadata(self):
        return self.type == SCRIPT and b"onMetaData" in self.head

    @property
    def is_seq_header(self):
        h = self.head
        if self.type == VIDEO and len(h) >= 2:
            codec = h[0] & 0x0F
            if h[0] & 0x80:  # enhanced RTMP: PacketTypeSequenceStart
                return (h[0] & 0x0F) == 0
            return codec in (7, 12) and h[1] == 0
        if self.type == AUDIO and len(h) >= 2:
            return (h[0] >> 4) == 10 and h[1] == 0
        return False

    @property
    def is_keyframe(self):
        """A video frame a decoder can start at (not the sequence header)."""
        if self.type != VIDEO or not self.head:
            return False
        if self.is_seq_header:
            return False
        return ((self.head[0] >> 4) & 0x07) == 1

    @property
    def is_media(self):
        return self.type in (AUDIO, VIDEO) and not self.is_seq_header

    @property
    def key(self):
        """Identity for comparing streams across viewers (timestamps may be rebased)."""
        return (self.type, self.size, self.crc, self.head)

    @property
    def serial(self):
        """The Synth serial number of this tag, or None."""
        h = self.head
        if self.type == VIDEO and h[5:7] == b"FE":
            return struct.unpack(">I", h[7:11])[0]
        if self.type == AUDIO and h[2:4] == b"FE":
            return struct.unpack(">I", h[4:8])[0]
        return None

    def __repr__(self):
        kind = {AUDIO: "A", VIDEO: "V", SCRIPT: "S"}.get(self.type, str(self.type))
        extra = " seq" if self.is_seq_header else (" key" if self.is_keyframe else "")
        if self.is_metadata:
            extra = " meta"
        return "<%s ts=%d size=%d%s serial=%s>" % (kind, self.ts, self.size, extra, self.serial)


class FlvReader:
    """Incremental FLV parser with checks; feed() returns the new tags."""

    def __init__(self, digest=True, keep=True):
        self.buf = bytearray()
        self.flags = None
        self.tags = []
        self.count = 0
        self.digest = digest
        self.keep = keep
        self.bytes = 0
        self._header_need = None

    def feed(self, data, now=None):
        self.buf += data
        self.bytes += len(data)
        now = now if now is not None else time.monotonic()
        new = []
        buf = self.buf
        if self.flags is None:
            if len(buf) < 9:
                return new
            if bytes(buf[:3]) != b"FLV":
                raise FlvError("bad FLV signature %r" % bytes(buf[:9]))
            if buf[3] != 1:
                raise FlvError("FLV version %d" % buf[3])
            offset = struct.unpack(">I", bytes(buf[5:9]))[0]
            if offset < 9:
                raise FlvError("FLV DataOffset %d" % offset)
            if len(buf) < offset + 4:
                return new
            prev0 = struct.unpack(">I", bytes(buf[offset:offset + 4]))[0]
            if prev0 != 0:
                raise FlvError("PreviousTagSize0 is %d" % prev0)
            self.flags = buf[4]
            del buf[:offset + 4]
        pos = 0
        n = len(buf)
        while n - pos >= 11:
            t = buf[pos] & 0x1F
            if buf[pos] & 0xC0:
                raise FlvError("tag %d: reserved bits set in type byte 0x%02x" % (self.count, buf[pos]))
            size = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
            total = 11 + size + 4
            if n - pos < total:
                break
            ts = (buf[pos + 4] << 16) | (buf[pos + 5] << 8) | buf[pos + 6] | (buf[pos + 7] << 24)
            prev = struct.unpack(">I", bytes(buf[pos + 11 + size:pos + total]))[0]
            if prev != 11 + size:
                raise FlvError("tag %d (type %d, ts %d, size %d): PreviousTagSize %d != %d"
                               % (self.count, t, ts, size, prev, 11 + size))
            if t not in (AUDIO, VIDEO, SCRIPT):
                raise FlvError("tag %d: type %d" % (self.count, t))
            payload = memoryview(buf)[pos + 11:pos + 11 + size]
            head = bytes(payload[:32])
            crc = zlib.crc32(payload) if self.digest else 0
            payload.release()
            tag = Tag(t, ts, size, head, crc, self.count, now)
            self.count += 1
            new.append(tag)
            pos += total
        if pos:
            del buf[:pos]
        if self.keep:
            self.tags.extend(new)
        return new

    def at_boundary(self):
        return self.flags is not None and len(self.buf) == 0


def parse_flv_bytes(data):
    r = FlvReader()
    r.feed(data)
    if not r.at_boundary():
        raise FlvError("%d trailing bytes" % len(r.buf))
    return r


class Viewer:
    """An HTTP-FLV client: HttpConn + FlvReader. open() reads the head; read_until() pumps tags."""

    def __init__(self, port, path, digest=True, keep=True, **conn_kw):
        self.path = path
        self.conn = HttpConn(port, path, **conn_kw)
        self.flv = FlvReader(digest=digest, keep=keep)
        self.response = None
        self.opened_at = time.monotonic()

    def open(self, timeout=None):
        self.response = self.conn.read_head(timeout or T(15))
        return self.response

    @property
    def status(self):
        return self.response.status if self.response else None

    @property
    def tags(self):
        return self.flv.tags

    @property
    def ended(self):
        return self.conn.body_done

    @property
    def clean_end(self):
        return self.conn.clean_end

    def pump(self, timeout, max_recv=262144):
        """Reads once (up to timeout); returns new tags ([] when the body is over)."""
        data = self.conn.read_body_some(timeout, max_recv)
        if not data:
            return []
        return self.flv.feed(data)

    def read_until(self, pred, timeout=None, what=None):
        """Pumps until pred(self) is true; fails on timeout or if the body ends first."""
        timeout = timeout or T(15)
        deadline = time.monotonic() + timeout
        while True:
            v = pred(self)
            if v:
                return v
            if self.ended:
                raise AssertionError("%s: body ended (clean=%s, %d tags) before %s"
                                     % (self.path, self.clean_end, len(self.tags), what or "condition"))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("%s: timed out after %.1f s waiting for %s (%d tags so far)"
                                     % (self.path, timeout, what or "condition", self.flv.count))
            try:
                self.pump(remaining)
            except TimeoutError:
                pass

    def read_tags(self, n, timeout=None):
        return self.read_until(lambda v: v.flv.count >= n, timeout, "%d tags" % n)

    def read_media_ms(self, ms, timeout=None):
        """Reads until the video/audio timestamps span `ms` since the first media tag."""
        return self.read_until(lambda v: media_span_ms(v.tags) >= ms, timeout,
                               "%d ms of media" % ms)

    def read_to_end(self, timeout=None):
        """Reads until the body is over; returns clean_end. Fails on timeout."""
        timeout = timeout or T(15)
        deadline = time.monotonic() + timeout
        while not self.ended:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("%s: body did not end within %.1f s (%d tags)"
                                     % (self.path, timeout, self.flv.count))
            try:
                self.pump(remaining)
            except TimeoutError:
                pass
        return self.clean_end

    def close(self):
        self.conn.close()


def media_span_ms(tags):
    ts = [t.ts for t in tags if t.is_media]
    return (max(ts) - min(ts)) if ts else -1


def media_from_first_keyframe(tags):
    """The media tags from the first video keyframe on (header tags dropped)."""
    for i, t in enumerate(tags):
        if t.is_keyframe:
            return [x for x in tags[i:] if x.is_media]
    return []


def check_monotonic(tags):
    """Fails if timestamps go backwards within a track."""
    last = {}
    for t in tags:
        if t.type in last and t.ts < last[t.type]:
            raise AssertionError("timestamp goes backwards on type %d: %d after %d (tag #%d)"
                                 % (t.type, t.ts, last[t.type], t.index))
        last[t.type] = t.ts


def check_join_sequence(tags, flags, audio=True, video=True, metadata=True):
    """
    The start of a viewer's stream: onMetaData (metadata=None: optional), the sequence headers of
    the tracks it gets, then the first video tag is a keyframe; per-track timestamps never go
    backwards.
    """
    want_flags = (4 if audio else 0) | (1 if video else 0)
    if flags != want_flags:
        raise AssertionError("FLV header flags 0x%02x, expected 0x%02x" % (flags, want_flags))
    has_meta = bool(tags) and tags[0].is_metadata
    if metadata and not has_meta:
        raise AssertionError("first tag is not onMetaData: %r" % tags[:3])
    if has_meta:
        tags = tags[1:]
    nseq = int(audio) + int(video)
    seq = tags[0:nseq]
    if len(seq) < nseq or not all(t.is_seq_header for t in seq):
        raise AssertionError("tags after onMetaData are not the sequence headers: %r" % tags[:5])
    kinds = sorted(t.type for t in seq)
    want = sorted(([AUDIO] if audio else []) + ([VIDEO] if video else []))
    if kinds != want:
        raise AssertionError("sequence headers for types %r, expected %r: %r" % (kinds, want, tags[:5]))
    rest = tags[nseq:]
    for t in rest:
        if t.type == SCRIPT:
            continue
        if not audio and t.type == AUDIO:
            raise AssertionError("audio tag in a video-only stream: %r" % t)
        if not video and t.type == VIDEO:
            raise AssertionError("video tag in an audio-only stream: %r" % t)
    if video:
        first_video = next((t for t in rest if t.is_video), None)
        if first_video is not None and not first_video.is_keyframe:
            raise AssertionError("first video tag after the sequence headers is not a keyframe: %r"
                                 % first_video)
    check_monotonic(tags)


def check_suffix(earlier, later, what="later viewer", to_end=True):
    """
    `later` (tag keys) must be a contiguous run of `earlier` (tag keys); with to_end it must also
    reach the end of `earlier` (both viewers saw the same end of stream).
    """
    if not later:
        raise AssertionError("%s got no media" % what)
    try:
        i = earlier.index(later[0])
    except ValueError:
        raise AssertionError("%s's first tag is not in the earlier viewer's stream" % what)
    tail = earlier[i:] if to_end else earlier[i:i + len(later)]
    if tail != later:
        n = min(len(tail), len(later))
        j = next((k for k in range(n) if tail[k] != later[k]), n)
        raise AssertionError("%s diverges from the earlier viewer at its tag %d (lengths %d vs %d)"
                             % (what, j, len(later), len(tail)))


# -- writing FLV -------------------------------------------------------------------------------

def flv_header(flags=0x05):
    return b"FLV\x01" + bytes([flags]) + struct.pack(">I", 9) + b"\x00\x00\x00\x00"


def flv_tag(tag_type, ts, payload):
    size = len(payload)
    hdr = bytes([tag_type]) + size.to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big") \
        + bytes([(ts >> 24) & 0xFF]) + b"\x00\x00\x00"
    return hdr + payload + struct.pack(">I", 11 + size)


def tag_header_only(tag_type, ts, size):
    return bytes([tag_type]) + size.to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big") \
        + bytes([(ts >> 24) & 0xFF]) + b"\x00\x00\x00"


def _amf_str(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def _amf_value(v):
    if isinstance(v, bool):
        return b"\x01" + bytes([1 if v else 0])
    if isinstance(v, (int, float)):
        return b"\x00" + struct.pack(">d", float(v))
    if isinstance(v, str):
        return b"\x02" + _amf_str(v)
    raise TypeError(v)


def metadata_tag(props, ts=0):
    payload = b"\x02" + _amf_str("onMetaData") + b"\x08" + struct.pack(">I", len(props))
    for k, v in props.items():
        payload += _amf_str(k) + _amf_value(v)
    payload += b"\x00\x00\x09"
    return flv_tag(SCRIPT, ts, payload)


_SPS = bytes.fromhex("6764001facd9405005bb011000000300100000030320f1831960")
_PPS = bytes.fromhex("68ebe3cb22c0")
AVC_SEQ_PAYLOAD = bytes([0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1F, 0xFF, 0xE1]) \
    + struct.pack(">H", len(_SPS)) + _SPS + b"\x01" + struct.pack(">H", len(_PPS)) + _PPS
AAC_SEQ_PAYLOAD = bytes([0xAF, 0x00, 0x12, 0x10])
_FILLER = bytes(range(256)) * 8192  # 2 MiB


class Synth:
    """
    A synthetic A/V FLV: onMetaData, AVC and AAC sequence headers, then video at `fps` with a
    keyframe (0x17 0x01) every `gop` frames and inter frames (0x27 0x01), AAC raw frames (0xAF 0x01)
    every 1024/44100 s. Every media payload carries b"FE" + a 32-bit serial (Tag.serial).
    Calling the object returns a fresh iterator of (timestamp or None, bytes) items.
    variant 1 changes the codec configuration (other SPS, 48 kHz AAC) and the metadata;
    file_header=False leaves out the 13-byte file header (to continue another source);
    serial_base offsets the serials.
    """

    def __init__(self, duration_ms=None, fps=25, gop=25, audio=True, video=True, vsize=1200,
                 ksize=6000, asize=180, start_ts=0, header_flags=None, variant=0,
                 file_header=True, serial_base=0):
        self.variant = variant
        self.file_header = file_header
        self.serial_base = serial_base
        self.duration_ms = duration_ms
        self.fps = fps
        self.gop = gop
        self.audio = audio
        self.video = video
        self.vsize = vsize
        self.ksize = ksize
        self.asize = asize
        self.start_ts = start_ts
        self.header_flags = header_flags

    def header_items(self):
        flags = self.header_flags
        if flags is None:
            flags = (4 if self.audio else 0) | (1 if self.video else 0)
        if self.file_header:
            yield None, flv_header(flags)
        meta = {"duration": 0, "width": 640, "height": 360, "framerate": self.fps,
                "videocodecid": 7, "audiocodecid": 10, "audiosamplerate": 44100, "stereo": True}
        if self.variant:
            meta.update(width=1280, height=720, audiosamplerate=48000, variant=self.variant)
        yield self.start_ts, metadata_tag(meta, self.start_ts)
        if self.video:
            yield self.start_ts, flv_tag(VIDEO, self.start_ts, self.avc_seq_payload())
        if self.audio:
            yield self.start_ts, flv_tag(AUDIO, self.start_ts, self.aac_seq_payload())

    def avc_seq_payload(self):
        if not self.variant:
            return AVC_SEQ_PAYLOAD
        sps = _SPS[:1] + bytes([0x4D, 0x00, 0x28]) + _SPS[4:] + bytes([self.variant])
        return bytes([0x17, 0x00, 0, 0, 0, 0x01, 0x4D, 0x00, 0x28, 0xFF, 0xE1]) \
            + struct.pack(">H", len(sps)) + sps + b"\x01" + struct.pack(">H", len(_PPS)) + _PPS

    def aac_seq_payload(self):
        return AAC_SEQ_PAYLOAD if not self.variant else bytes([0xAF, 0x00, 0x11, 0x90])

    def media_items(self):
        serial = self.serial_base
        vi = ai = 0
        start, end = self.start_ts, self.duration_ms
        while True:
            vts = start + (vi * 1000) // self.fps if self.video else None
            ats = start + (ai * 1024 * 1000) // 44100 if self.audio else None
            if end is not None:
                if vts is not None and vts - start >= end:
                    vts = None
                if ats is not None and ats - start >= end:
                    ats = None
            if vts is None and ats is None:
                return
            if vts is not None and (ats is None or vts <= ats):
                key = vi % self.gop == 0
                size = self.ksize if key else self.vsize
                body = bytes([0x17 if key else 0x27, 0x01, 0, 0, 0]) + b"FE" \
                    + struct.pack(">II", serial, vi)
                payload = body + _FILLER[serial % 251:serial % 251 + max(0, size - len(body))]
                yield vts, flv_tag(VIDEO, vts, payload)
                vi += 1
            else:
                body = bytes([0xAF, 0x01]) + b"FE" + struct.pack(">II", serial, ai)
                payload = body + _FILLER[serial % 241:serial % 241 + max(0, self.asize - len(body))]
                yield ats, flv_tag(AUDIO, ats, payload)
                ai += 1
            serial += 1

    def __call__(self):
        yield from self.header_items()
        yield from self.media_items()

    def to_bytes(self):
        if self.duration_ms is None:
            raise ValueError("an endless stream has no bytes")
        return b"".join(b for _, b in self())


def chain(*sources):
    """A source that plays each source's items in turn."""
    def gen():
        for s in sources:
            yield from (s() if callable(s) else s)
    return gen


def raw_source(*chunks):
    """A source of untimed raw byte chunks."""
    return lambda: iter([(None, c) for c in chunks])


def read_flv_file(path):
    """-> (header bytes incl. PreviousTagSize0, [(type, ts, tag bytes, is_config)])"""
    with open(path, "rb") as f:
        data = f.read()
    if data[:3] != b"FLV":
        raise FlvError("%s: not an FLV file" % path)
    off = struct.unpack(">I", data[5:9])[0]
    header = data[:off + 4]
    pos = off + 4
    tags = []
    while pos + 11 <= len(data):
        t = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | (data[pos + 7] << 24)
        raw = data[pos:pos + 11 + size + 4]
        if len(raw) < 15 + size:
            break
        p = data[pos + 11:pos + 13]
        cfg = t == SCRIPT or (t == VIDEO and len(p) > 1 and (p[0] & 0x0F) == 7 and p[1] == 0) \
            or (t == AUDIO and len(p) > 1 and (p[0] >> 4) == 10 and p[1] == 0)
        tags.append((t, ts, raw, cfg))
        pos += 15 + size
    return header, tags


def file_source(path, loop=False, frame_ms=40):
    """A source playing an FLV file; with loop, media tags repeat with continued timestamps."""
    header, tags = read_flv_file(path)
    last = max((ts for _, ts, _, _ in tags), default=0)

    def gen():
        yield None, header
        offset = 0
        first = True
        while True:
            for t, ts, raw, cfg in tags:
                if cfg and not first:
                    continue
                nts = ts + offset
                b = bytearray(raw)
                b[4:7] = (nts & 0xFFFFFF).to_bytes(3, "big")
                b[7] = (nts >> 24) & 0xFF
                yield nts, bytes(b)
            if not loop:
                return
            first = False
            offset += last + frame_ms
    return gen


def _tag_serial(raw):
    if len(raw) < 11 + 11:
        return None
    t = raw[0] & 0x1F
    p = raw[11:]
    if t == VIDEO and p[5:7] == b"FE":
        return struct.unpack(">I", p[7:11])[0]
    if t == AUDIO and p[2:4] == b"FE":
        return struct.unpack(">I", p[4:8])[0]
    return None


# ---------------------------------------------------------------------------------------------
# The test origin
# ---------------------------------------------------------------------------------------------

class Route:
    """
    How TestOrigin answers one path.
      source: callable -> iterable of (ts_ms or None, bytes); ts None = send at once
      mode: "chunked" | "close" (HTTP/1.0, close-delimited) | "length" (Content-Length; finite source)
      pace: "live" (real time by timestamps) | "fast" | a float speed factor
      status/body: a non-200 answer (or 200 with a fixed body when there is no source); with a
        source, that status with the source as its body (an error page that never ends)
      silent: read the request, never answer
      stall_after_ms: stop sending (connection stays open) once media passes this timestamp
      then: after the source: "end" (proper end of body) | "close" (just close) | "hold" (stay open)
      chunk_size: split the chunked body into chunks of this size regardless of tag boundaries
      track_send_times: remember when each Synth serial was sent (TestOrigin.sent_at)
      header_delay: seconds to wait before answering (a slow origin)
      raw_response: bytes sent as the whole answer, then close (b"": close without a word)
      interim: bytes sent before the answer, as they are (a 103 Early Hints head, say)
    """

    def __init__(self, source=None, mode="chunked", pace="live", status=200, body=None,
                 headers=None, content_type="video/x-flv", silent=False, stall_after_ms=None,
                 then="end", chunk_size=None, track_send_times=False, header_delay=0,
                 raw_response=None, interim=None):
        self.header_delay = header_delay
        self.raw_response = raw_response
        self.interim = interim
        self.source = source
        self.mode = mode
        self.pace = pace
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type
        self.silent = silent
        self.stall_after_ms = stall_after_ms
        self.then = then
        self.chunk_size = chunk_size
        self.track_send_times = track_send_times


class _PeerClosed(Exception):
    pass


class _OriginConn:
    def __init__(self, path, sock):
        self.path = path
        self.sock = sock
        self.end = threading.Event()
        self.opened_at = time.monotonic()
        self.closed_at = None
        self.peer_closed = False
        self.killed = False
        self.frozen = False
        self.bytes_sent = 0


_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 410: "Gone",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


class TestOrigin:
    """A threaded HTTP origin on 127.0.0.1, port chosen by the kernel."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.routes = {}
        self.requests = []  # dicts: path, target, method, version, headers, time
        self.conns = []     # _OriginConn
        self.sent_at = {}   # path -> {serial: monotonic time}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._accepting = threading.Event()
        self._accepting.set()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def url(self, path="", host=None):
        return "http://%s:%d%s" % (host or self.host, self.port, path)

    def route(self, path, source=None, **kw):
        r = Route(source, **kw)
        with self.lock:
            self.routes[path] = r
        return r

    def connections(self, path):
        """Requests received for path so far."""
        with self.lock:
            return sum(1 for c in self.conns if c.path == path)

    def active(self, path):
        """Connections for path still open."""
        with self.lock:
            return sum(1 for c in self.conns if c.path == path and c.closed_at is None)

    def conns_for(self, path):
        with self.lock:
            return [c for c in self.conns if c.path == path]

    def requests_for(self, path):
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def end(self, path):
        """Ends every open connection for path: chunked terminator (or close) now."""
        with self.lock:
            for c in self.conns:
                if c.path == path and c.closed_at is None:
                    c.end.set()

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except Exception:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.end.set()
        self._thread.join(5)

    def kill(self, path=None):
        """
        An origin process dying: every open connection (for path, or all) is shut at once, mid-tag
        as it may be, with no end of body; without path the listener goes too, so new connections
        are refused until revive(). Returns time.monotonic() of the moment.
        """
        if path is None:
            self._accepting.clear()
            try:
                self.sock.close()
            except OSError:
                pass
            self._thread.join(5)
        with self.lock:
            conns = [c for c in self.conns if c.closed_at is None and (path is None or c.path == path)]
        t = time.monotonic()
        for c in conns:
            c.killed = True
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return t

    def freeze(self, path=None):
        """Open connections (for path, or all) stop sending and stay open: a stalled origin.
        Returns time.monotonic() of the moment."""
        with self.lock:
            conns = [c for c in self.conns if c.closed_at is None and (path is None or c.path == path)]
        t = time.monotonic()
        for c in conns:
            c.frozen = True
        return t

    def revive(self):
        """Listens again on the same port after kill()."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))
        self.sock.listen(256)
        self._accepting.set()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    # -- internals --------------------------------------------------------------------------

    def _accept_loop(self):
        while not self.stopping.is_set() and self._accepting.is_set():
            try:
                r, _, _ = select.select([self.sock], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                s, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _read_request(self, s):
        s.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                d = s.recv(8192)
            except OSError:
                return None
            if not d:
                return None
            data += d
            if len(data) > 65536:
                return None
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return None
        method, target, version = parts
        path = target
        m = re.match(r"^https?://[^/]+(/.*)?$", target)
        if m:
            path = m.group(1) or "/"
        path = path.split("?", 1)[0]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return {"method": method, "target": target, "path": path, "version": version,
                "headers": headers, "time": time.monotonic()}

    def _serve(self, s):
        req = self._read_request(s)
        if req is None:
            s.close()
            return
        path = req["path"]
        conn = _OriginConn(path, s)
        with self.lock:
            self.requests.append(req)
            self.conns.append(conn)
            route = self.routes.get(path)
        try:
            s.settimeout(None)
            if route is not None and route.header_delay:
                if self._sleep_until(conn, time.monotonic() + route.header_delay):
                    return
            if route is not None and route.interim:
                self._sendall(conn, route.interim)
            if route is None:
                self._send_simple(conn, 404, b"no route for this path\n", "text/plain")
            elif route.raw_response is not None:
                self._sendall(conn, route.raw_response)
            elif route.silent:
                self._hold(conn)
            elif route.source is None:
                self._send_simple(conn, route.status, route.body or b"", "text/plain", route.headers)
            else:
                self._stream(conn, route)
        except _PeerClosed:
            conn.peer_closed = True
        except OSError:
            conn.peer_closed = True
        finally:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
            conn.closed_at = time.monotonic()

    def _check_peer(self, conn, wait):
        """Waits up to `wait` s for the peer to close; raises _PeerClosed if it did."""
        try:
            r, _, _ = select.select([conn.sock], [], [], max(0.0, wait))
        except (OSError, ValueError):
            raise _PeerClosed()
        if r:
            try:
                d = conn.sock.recv(65536)
            except OSError:
                raise _PeerClosed()
            if not d:
                raise _PeerClosed()

    def _sleep_until(self, conn, when):
        """Paces; True if ended or stopped early."""
        while True:
            if conn.end.is_set() or self.stopping.is_set():
                return True
            left = when - time.monotonic()
            if left <= 0:
                return False
            self._check_peer(conn, min(left, 0.1))

    def _hold(self, conn):
        while not (conn.end.is_set() or self.stopping.is_set()):
            self._check_peer(conn, 0.1)

    def _sendall(self, conn, data):
        view = memoryview(data)
        s = conn.sock
        while view:
            if self.stopping.is_set():
                raise _PeerClosed()
            try:
                _, w, _ = select.select([], [s], [], 0.1)
            except (OSError, ValueError):
                raise _PeerClosed()
            if not w:
                continue
            try:
                n = s.send(view)
            except (BrokenPipeError, ConnectionResetError):
                raise _PeerClosed()
            except BlockingIOError:
                continue
            conn.bytes_sent += n
            view = view[n:]

    def _send_simple(self, conn, status, body, ctype, headers=None):
        head = "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n" % (
            status, _REASONS.get(status, "Status"), ctype, len(body))
        for k, v in (headers or {}).items():
            head += "%s: %s\r\n" % (k, v)
        self._sendall(conn, head.encode() + b"\r\n" + body)

    def _stream(self, conn, route):
        items = route.source()
        status = "%d %s" % (route.status, _REASONS.get(route.status, "Status"))
        if route.mode == "length":
            items = list(items)
            total = sum(len(b) for _, b in items)
            head = "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n" % (
                status, route.content_type, total)
        elif route.mode == "close":
            head = "HTTP/1.0 %s\r\nContent-Type: %s\r\nConnection: close\r\n" % (status, route.content_type)
        elif route.mode == "chunked":
            head = ("HTTP/1.1 %s\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n"
                    "Connection: close\r\nCache-Control: no-cache\r\n" % (status, route.content_type))
        else:
            raise ValueError(route.mode)
        for k, v in route.headers.items():
            head += "%s: %s\r\n" % (k, v)
        self._sendall(conn, head.encode() + b"\r\n")
        chunked = route.mode == "chunked"
        speed = None
        if route.pace == "live":
            speed = 1.0
        elif isinstance(route.pace, (int, float)):
            speed = float(route.pace)
        t0 = ts0 = None
        sent_at = None
        if route.track_send_times:
            with self.lock:
                sent_at = self.sent_at.setdefault(conn.path, {})
        ended = False
        for ts, data in items:
            if ts is not None:
                if route.stall_after_ms is not None and ts0 is not None \
                        and ts - ts0 >= route.stall_after_ms:
                    self._hold(conn)
                    ended = True
                    break
                if t0 is None:
                    t0, ts0 = time.monotonic(), ts
                if speed:
                    if self._sleep_until(conn, t0 + (ts - ts0) / 1000.0 / speed):
                        ended = True
                        break
                else:
                    self._check_peer(conn, 0)
            if conn.frozen:
                self._hold(conn)
                ended = True
                break
            if conn.end.is_set() or self.stopping.is_set():
                ended = True
                break
            if sent_at is not None:
                serial = _tag_serial(data)
                if serial is not None:
                    sent_at[serial] = time.monotonic()
            if chunked:
                if route.chunk_size:
                    out = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + route.chunk_size]),
                                                     data[i:i + route.chunk_size])
                                   for i in range(0, len(data), route.chunk_size))
                else:
                    out = b"%x\r\n%s\r\n" % (len(data), data)
                self._sendall(conn, out)
            else:
                self._sendall(conn, data)
        if not ended:
            if route.then == "hold":
                self._hold(conn)
            elif route.then == "close":
                return
        if chunked and not self.stopping.is_set():
            self._sendall(conn, b"0\r\n\r\n")


# ---------------------------------------------------------------------------------------------
# The VOD test origin: a file server with ranges, validators and switchable faults
# ---------------------------------------------------------------------------------------------

class VodOrigin:
    """
    A threaded HTTP/1.1 file server on 127.0.0.1 (port chosen by the kernel) serving the files of
    `root` under the URL path `prefix`, the origin of the VOD tests and benchmark:
      - keep-alive (HTTP/1.1 unless `Connection: close`), GET and HEAD;
      - one range per request: `bytes=N-M`, `bytes=N-`, `bytes=-N` -> 206 with Content-Range, an
        unsatisfiable one -> 416 `Content-Range: bytes */SIZE`; several ranges -> the whole file
        (200, as RFC 9110 allows);
      - a strong ETag "SIZE-MTIME_NS" and Last-Modified; If-None-Match / If-Modified-Since -> 304,
        If-Range with another validator -> the whole file;
      - every request logged before it is answered (self.log: dicts with method, target, path,
        range, if_range, if_none_match, if_modified_since, headers, conn, time; status filled in
        before the head goes out, sent as the body does), and body bytes counted (body_bytes, per
        path in bytes_by_path).
    Faults, switched at run time with set_fault(kind, path=None, times=None, ...):
      "close"     send the head and `after` body bytes, then close;
      "short"     announce the honest length but send `missing` bytes less, then close;
      "status"    answer `status` (5xx) with a short body;
      "no_ranges" ignore Range (and If-Range): always 200 with the whole file;
      "delay"     wait `after` seconds before answering (counted: active, max_active);
      "stall"     send the head and `after` body bytes, then nothing until the fault is cleared
                  or the origin stops (the connection stays open).
    `path` limits the fault to one URL path; `times` to that many answers (None: until cleared).
    `headers` (a dict) are added to every 200/206/304 answer, e.g. Cache-Control.
    """

    def __init__(self, root, prefix="/media/"):
        self.root = os.path.abspath(root)
        self.prefix = prefix
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.log = []
        self.headers = {}
        self.body_bytes = 0
        self.bytes_by_path = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.unstall = threading.Event()
        self.active = self.max_active = 0  # answers held by a "delay" fault at once
        self._fault = None
        self._conn_ids = 0
        self._socks = set()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def url(self, path=""):
        """The origin URL of the prefix (path appended)."""
        return "http://127.0.0.1:%d%s%s" % (self.port, self.prefix, path.lstrip("/"))

    def file_path(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    # -- faults -----------------------------------------------------------------------------

    def set_fault(self, kind, path=None, times=None, after=0, missing=1, status=503):
        if kind not in ("close", "short", "status", "no_ranges", "stall", "delay"):
            raise ValueError(kind)
        with self.lock:
            self.unstall.clear()
            self._fault = {"kind": kind, "path": path, "times": times, "after": after,
                           "missing": missing, "status": status}

    def clear_fault(self):
        with self.lock:
            self._fault = None
        self.unstall.set()

    def _take_fault(self, path):
        with self.lock:
            f = self._fault
            if f is None or (f["path"] is not None and f["path"] != path):
                return None
            if f["times"] is not None:
                f["times"] -= 1
                if f["times"] <= 0:
                    self._fault = None
            return dict(f)

    # -- the log ----------------------------------------------------------------------------

    def requests(self, path=None, method=None):
        """Logged requests (for one origin path, e.g. "/media/a.flv", and/or method)."""
        with self.lock:
            return [r for r in self.log if (path is None or r["path"] == path)
                    and (method is None or r["method"] == method)]

    def ranges(self, path):
        """The Range header of each GET of path, in order (None: no Range)."""
        return [r["range"] for r in self.requests(path, "GET")]

    def clear_log(self):
        with self.lock:
            self.log = []
            self.body_bytes = 0
            self.bytes_by_path = {}

    def stop(self):
        self.stopping.set()
        self.unstall.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    # -- internals --------------------------------------------------------------------------

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                r, _, _ = select.select([self.sock], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                s, _ = self.sock.accept()
            except OSError:
                continue
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self._conn_ids += 1
                cid = self._conn_ids
                self._socks.add(s)
            threading.Thread(target=self._serve, args=(s, cid), daemon=True).start()

    def _read_head(self, s, buf):
        while b"\r\n\r\n" not in buf:
            if self.stopping.is_set():
                return None
            try:
                d = s.recv(65536)
            except OSError:
                return None
            if not d:
                return None
            buf += d
            if len(buf) > 65536:
                return None
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf[:] = rest
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return None
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        method, target, version = parts
        return {"method": method, "target": target, "path": target.split("?", 1)[0],
                "version": version, "headers": headers, "range": headers.get("range"),
                "if_range": headers.get("if-range"), "if_none_match": headers.get("if-none-match"),
                "if_modified_since": headers.get("if-modified-since"),
                "time": time.monotonic(), "status": None, "sent": 0}

    def _serve(self, s, cid):
        buf = bytearray()
        s.settimeout(30)  # an idle keep-alive connection is closed after 30 s
        try:
            while not self.stopping.is_set():
                req = self._read_head(s, buf)
                if req is None:
                    return
                req["conn"] = cid
                with self.lock:
                    self.log.append(req)
                keep = (req["version"] == "HTTP/1.1"
                        and "close" not in req["headers"].get("connection", "").lower())
                if not self._answer(s, req) or not keep:
                    return
        except OSError:
            return
        finally:
            with self.lock:
                self._socks.discard(s)
            try:
                s.close()
            except OSError:
                pass

    def _send_head(self, s, status, headers):
        head = "HTTP/1.1 %d %s\r\n" % (status, _VOD_REASONS.get(status, "Status"))
        head += "".join("%s: %s\r\n" % kv for kv in headers)
        s.sendall(head.encode("latin-1") + b"\r\n")

    def _simple(self, s, req, status, body, extra=()):
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        headers += list(extra)
        req["status"] = status  # logged before the client can see it (tests read the log then)
        self._send_head(s, status, headers)
        if req["method"] != "HEAD":
            s.sendall(body)
        return True

    def _answer(self, s, req):
        """Answers one request; False when the connection must close."""
        path = req["path"]
        if not path.startswith(self.prefix):
            return self._simple(s, req, 404, b"not under the prefix\n")
        rel = urllib.parse.unquote(path[len(self.prefix):])
        if any(part in ("..", ".") for part in rel.replace("\\", "/").split("/")) or "\0" in rel:
            return self._simple(s, req, 400, b"bad path\n")
        fault = self._take_fault(path)
        if fault and fault["kind"] == "delay":
            with self.lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            time.sleep(fault["after"])
            with self.lock:
                self.active -= 1
            fault = None
        if fault and fault["kind"] == "status":
            self._simple(s, req, fault["status"], b"origin fault\n")
            return True
        full = os.path.join(self.root, rel)
        try:
            st = os.stat(full)
        except OSError:
            return self._simple(s, req, 404, b"no such file\n")
        if not os.path.isfile(full) or req["method"] not in ("GET", "HEAD"):
            return self._simple(s, req, 405 if os.path.isfile(full) else 404, b"no\n")
        size = st.st_size
        etag = '"%x-%x"' % (size, st.st_mtime_ns)
        last_mod = email.utils.formatdate(st.st_mtime, usegmt=True)
        ctype = "video/x-flv" if full.endswith(".flv") else "application/octet-stream"
        common = [("ETag", etag), ("Last-Modified", last_mod), ("Accept-Ranges", "bytes")]
        common += list(self.headers.items())
        h = req["headers"]
        if _vod_not_modified(h, etag, int(st.st_mtime)):
            req["status"] = 304
            self._send_head(s, 304, common)
            return True
        start, end = 0, size - 1
        status = 200
        rng = h.get("range")
        if fault and fault["kind"] == "no_ranges":
            rng = None
        if rng is not None and "if-range" in h:
            ir = h["if-range"]
            if ir.startswith('"') or ir.startswith("W/"):
                ok = ir == etag
            else:
                ok = _vod_http_date(ir) == int(st.st_mtime)
            if not ok:
                rng = None
        if rng is not None:
            spec = _vod_parse_range(rng, size)
            if spec == "unsatisfiable":
                return self._simple(s, req, 416, b"range not satisfiable\n",
                                    [("Content-Range", "bytes */%d" % size)] + common)
            if spec is not None:
                start, end = spec
                status = 206
        length = end - start + 1 if size else 0
        headers = [("Content-Type", ctype), ("Content-Length", str(length))] + common
        if status == 206:
            headers.append(("Content-Range", "bytes %d-%d/%d" % (start, end, size)))
        req["status"] = status
        self._send_head(s, status, headers)
        if req["method"] == "HEAD":
            return True
        todo = length
        closing = False
        if fault and fault["kind"] in ("close", "stall"):
            todo = min(length, fault["after"])
            closing = True
        elif fault and fault["kind"] == "short":
            todo = max(0, length - fault["missing"])
            closing = True
        with open(full, "rb") as f:
            sent = 0
            while sent < todo:
                n = s.sendfile(f, start + sent, min(todo - sent, 1 << 20))
                if n == 0:
                    break  # the file shrank under us
                sent += n
                req["sent"] = sent
                with self.lock:
                    self.body_bytes += n
                    self.bytes_by_path[path] = self.bytes_by_path.get(path, 0) + n
        if fault and fault["kind"] == "stall":
            while not self.unstall.wait(0.1):
                if self.stopping.is_set():
                    break
        return not closing and sent == length


_VOD_REASONS = {200: "OK", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
                404: "Not Found", 405: "Method Not Allowed", 416: "Range Not Satisfiable",
                500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                504: "Gateway Timeout"}


def _vod_http_date(text):
    """An HTTP date -> Unix seconds, None when it is not one."""
    try:
        return int(email.utils.parsedate_to_datetime(text).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _vod_not_modified(h, etag, mtime):
    inm = h.get("if-none-match")
    if inm is not None:
        tags = [t.strip() for t in inm.split(",")]
        return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)
    ims = h.get("if-modified-since")
    if ims is not None:
        t = _vod_http_date(ims)
        return t is not None and mtime <= t
    return False


def _vod_parse_range(value, size):
    """(start, end) of a single `bytes=` range, "unsatisfiable", or None (ignore the header: not
    bytes, malformed, or several ranges)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return (max(0, size - n), size - 1) if size else "unsatisfiable"
        a = int(first)
        b = int(last) if last != "" else size - 1
    except ValueError:
        return None
    if last != "" and b < a:
        return None
    if a >= size:
        return "unsatisfiable"
    return a, min(b, size - 1)


def parse_multipart_byteranges(content_type, body):
    """A multipart/byteranges body -> [(start, end, size, content_type, bytes)]; raises
    ProtocolError when it is not one."""
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not m or not (content_type or "").lower().startswith("multipart/byteranges"):
        raise ProtocolError("not multipart/byteranges with a boundary: %r" % content_type)
    delim = b"--" + m.group(1).encode("latin-1")
    parts = []
    pos = body.find(delim)
    if pos < 0:
        raise ProtocolError("no first boundary in the multipart body")
    while True:
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            return parts
        if body[pos:pos + 2] != b"\r\n":
            raise ProtocolError("boundary not followed by CRLF at %d" % pos)
        head_end = body.find(b"\r\n\r\n", pos + 2)
        if head_end < 0:
            raise ProtocolError("a part without the end of its head")
        headers = {}
        for line in body[pos + 2:head_end].decode("latin-1").split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        cr = re.match(r"bytes (\d+)-(\d+)/(\d+)$", headers.get("content-range", ""))
        if not cr:
            raise ProtocolError("a part without a valid Content-Range: %r" % headers)
        a, b, size = (int(x) for x in cr.groups())
        data_start = head_end + 4
        data = body[data_start:data_start + (b - a + 1)]
        nxt = data_start + (b - a + 1)
        if body[nxt:nxt + 2 + len(delim)] != b"\r\n" + delim:
            raise ProtocolError("part %d-%d not followed by CRLF and the boundary" % (a, b))
        parts.append((a, b, size, headers.get("content-type"), data))
        pos = nxt + 2


# ---------------------------------------------------------------------------------------------
# The edge with a vod resource
# ---------------------------------------------------------------------------------------------

ADMIN_TOKEN = "it-admin-token-0123456789"
_vod_support = None


def vod_supported():
    """(True, "") when the binary takes a vod resource (`flvedge -t` on a vod config), else
    (False, why). Only an unknown resource type counts as "not yet": any other refusal is
    returned as supported, so the tests run and show it."""
    global _vod_support
    if _vod_support is None:
        if not os.path.exists(BIN):
            _vod_support = (False, "flvedge binary not found: %s" % BIN)
            return _vod_support
        d = tempfile.mkdtemp(prefix="flvedge-vodcheck-")
        try:
            cfg = vod_config("http://127.0.0.1:9/media/", os.path.join(d, "cache"))
            cfg["listen"] = ["127.0.0.1:0"]
            p = os.path.join(d, "vod.lua")
            with open(p, "w") as f:
                f.write("return " + to_lua(cfg) + "\n")
            r = run([BIN, "-t", "-c", p], timeout=30)
            text = (r.stdout + r.stderr).strip()
            if r.returncode != 0 and re.search(r'"vod" is not a resource type|unknown .*type', text):
                _vod_support = (False, "this flvedge has no vod resource yet (%s)" % text[-300:])
            else:
                _vod_support = (True, "")
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return _vod_support


SKIP_RETURN_CODE = 77  # what ctest's SKIP_RETURN_CODE is set to for the integration tests


def exit_skip_unless_vod():
    """For a module's __main__: exit 77 (ctest: skipped) with the reason when there is no VOD."""
    ok, why = vod_supported()
    if not ok:
        print("SKIP: %s" % why)
        sys.stdout.flush()
        sys.exit(SKIP_RETURN_CODE)


def vod_config(origin, cache_dir, prefix="/videos/", slice_size=64 * 1024, name="vod",
               admin=None, extra_resources=(), top=None, **resource):
    """A config dict with one vod resource (64 KiB slices: the smallest allowed)."""
    res = {"name": name, "prefix": prefix, "type": "vod", "origin": origin,
           "cache_dir": cache_dir, "slice_size": slice_size}
    res.update(resource)
    cfg = {"log_level": "info", "resources": [res] + list(extra_resources)}
    if admin:
        cfg["admin"] = dict(admin)
    if top:
        cfg.update(top)
    return cfg


def admin_request(edge, method, path, body=None, token=ADMIN_TOKEN, timeout=None):
    """A request to the edge's admin listener (edge.admin_port); a dict/list body goes as JSON.
    Returns the HttpResponse with .body and .json (None when not JSON)."""
    headers = {}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    r = http_request(edge.admin_port, method, path, headers=headers, body=data, timeout=timeout)
    try:
        r.json = json.loads(r.body.decode("utf-8")) if r.body else None
    except ValueError:
        r.json = None
    return r


def start_vod_edge(origin, cache_dir, admin=True, token=ADMIN_TOKEN, extra_args=(), **kw):
    """An Edge with one vod resource for `origin` (a URL, or a VodOrigin: its prefix URL) and,
    when admin, an admin listener on a free port (edge.admin_port; kept out of edge.ports).
    kw: vod_config's (prefix, slice_size, policy, ...), plus Edge's env/files/start_timeout."""
    edge_kw = {k: kw.pop(k) for k in ("env", "files", "start_timeout", "wait") if k in kw}
    url = origin.url() if isinstance(origin, VodOrigin) else origin
    for attempt in range(3):
        # free_port() closes its socket before flvedge binds: a parallel test can take the port
        # in between ("address already in use"); then try another one.
        admin_port = free_port() if admin else None
        cfg = vod_config(url, cache_dir, admin={"listen": "127.0.0.1:%d" % admin_port,
                                                "token": token} if admin else None, **dict(kw))
        try:
            e = Edge(cfg, args=extra_args, **edge_kw)
            break
        except AssertionError as err:
            if attempt == 2 or "address already in use" not in str(err):
                raise
    e.admin_port = admin_port
    e.cache_dir = cache_dir
    if admin_port is not None:
        e.ports = [p for p in e.ports if p != admin_port]
    return e


# ---------------------------------------------------------------------------------------------
# Real media (ffmpeg)
# ---------------------------------------------------------------------------------------------

class LoadClient:
    """fe_load (tests/bench/fe_load.c, built in the build tree): many validating viewers in one
    process. start() spawns it; report() stops it and returns its JSON summary."""

    def __init__(self, edge, path, viewers, rate=0, read_ms=10):
        binary = os.path.join(BUILD, "tests", "fe_load")
        if not os.access(binary, os.X_OK):
            raise AssertionError("fe_load not built: %s" % binary)
        self.viewers = viewers
        self.out_path = os.path.join(edge.dir, "fe_load.json")
        with open(self.out_path, "w") as out, open(os.path.join(edge.dir, "fe_load.log"), "w") as err:
            self.proc = spawn([binary, "--url", edge.url(path), "--viewers", str(viewers),
                               "--rate", str(rate), "--duration", "600", "--warmup", "0",
                               "--progress", "0", "--read-interval-ms", str(read_ms), "--json"],
                              stdout=out, stderr=err)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(T(30))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def report(self):
        self.stop()
        with open(self.out_path) as f:
            return json.loads(f.read().strip().splitlines()[-1])

    def check_clean(self, test):
        """Every viewer watched to the end with valid FLV and no failure."""
        rep = self.report()
        test.assertEqual(rep["ok"], self.viewers, rep)
        test.assertEqual(rep["failed"], 0, rep["failures"])
        test.assertEqual(rep["validation_errors"], 0, rep["errors"])
        test.assertEqual(rep["no_keyframe"], 0)
        return rep


def have_ffmpeg():
    return bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))


def ensure_media(seconds=10, size="640x360", fps=25, gop=50, vbitrate="800k"):
    """An H.264 + AAC FLV made once by ffmpeg into MEDIA_DIR; returns its path."""
    os.makedirs(MEDIA_DIR, exist_ok=True)
    name = "h264aac_%s_%ds_%dfps_g%d_%s.flv" % (size, seconds, fps, gop, vbitrate)
    path = os.path.join(MEDIA_DIR, name)
    if os.path.exists(path):
        return path
    with open(os.path.join(MEDIA_DIR, ".lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        if os.path.exists(path):
            return path
        tmp = path + ".tmp-%d" % os.getpid()
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y",
               "-f", "lavfi", "-i", "testsrc2=size=%s:rate=%d" % (size, fps),
               "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
               "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
               "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-b:v", vbitrate,
               "-c:a", "aac", "-b:a", "96k", "-f", "flv", tmp]
        r = run(cmd, timeout=300)
        if r.returncode != 0:
            raise AssertionError("ffmpeg could not make test media: %s" % r.stderr[-2000:])
        os.rename(tmp, path)
    return path


def ensure_vod_media(seconds=60, size="640x360", kbit=500, fps=25, gop=50):
    """An H.264 + AAC FLV with an onMetaData keyframe index, made once by
    tests/media/make_vod_media.sh into MEDIA_DIR (same bytes every time); returns its path."""
    os.makedirs(MEDIA_DIR, exist_ok=True)
    path = os.path.join(MEDIA_DIR, "vod_%s_%ds_%dfps_g%d_%dk.flv" % (size, seconds, fps, gop, kbit))
    if not os.path.exists(path):
        r = run(["bash", os.path.join(SRC, "tests", "media", "make_vod_media.sh"), path,
                 str(seconds), size, str(kbit), str(fps), str(gop)], timeout=600)
        if r.returncode != 0 or not os.path.exists(path):
            raise AssertionError("make_vod_media.sh failed: %s" % r.stderr[-2000:])
    return path


def ffprobe_streams(url, timeout=60):
    """-> (returncode, [{'codec_name':..., 'width':..., 'height':...}], stderr)"""
    r = run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
             "-of", "compact", url], timeout=timeout)
    streams = []
    for line in r.stdout.splitlines():
        if not line.startswith("stream|"):
            continue
        d = {}
        for part in line.split("|")[1:]:
            if "=" in part:
                k, v = part.split("=", 1)
                d[k] = v
        streams.append(d)
    return r.returncode, streams, r.stderr


def tcp_listening(port):
    """True if something is in LISTEN state on 127.0.0.1/0.0.0.0:port (reads /proc/net/tcp)."""
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state = parts[1], parts[3]
                    if state == "0A" and int(local.split(":")[1], 16) == port:
                        return True
        except OSError:
            continue
    return False


def free_port():
    """A port nobody listens on (bound then closed: connecting to it is refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class SynDropper:
    """
    A port whose TCP handshake never completes: a listener with a backlog of 0 that never
    accepts, its accept queue filled by one connection of ours, so Linux drops every further SYN
    (the connecting side retries until its own timeout). For connect timeouts without a netns.
    """

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        # Connect until one hangs: that is the queue full (one connection with backlog 0).
        for _ in range(8):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(c)
            _, w, _ = select.select([], [c], [], 0.3)
            if not w:
                return
        self.close()
        raise RuntimeError("SynDropper: every connection was accepted by the kernel")

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def close(self):
        for c in self.fillers:
            c.close()
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# unittest glue
# ---------------------------------------------------------------------------------------------

class EdgeTestCase(unittest.TestCase):
    """Starts origins, edges and viewers with cleanups in the right order (LIFO)."""

    maxDiff = 4000

    def start_syn_dropper(self):
        d = SynDropper()
        self.addCleanup(d.close)
        return d

    def start_origin(self):
        o = TestOrigin()
        self.addCleanup(o.stop)
        return o

    def start_edge(self, config, **kw):
        e = Edge(config, **kw)
        self.addCleanup(e.finish)
        return e

    def start_vod_origin(self, root, prefix="/media/"):
        o = VodOrigin(root, prefix)
        self.addCleanup(o.stop)
        return o

    def start_vod_edge(self, origin, cache_dir=None, **kw):
        """start_vod_edge() with a fresh cache directory unless one is given (a restart)."""
        if cache_dir is None:
            cache_dir = tempfile.mkdtemp(prefix="flvedge-vodcache-")
            self.addCleanup(shutil.rmtree, cache_dir, True)
        e = start_vod_edge(origin, cache_dir, **kw)
        self.addCleanup(e.finish)
        return e

    def start_quick_edge(self, origin, **kw):
        e = Edge.quick(origin, **kw)
        self.addCleanup(e.finish)
        return e

    def viewer(self, edge, path, open=True, **kw):
        port = edge if isinstance(edge, int) else edge.port
        v = Viewer(port, path, **kw)
        self.addCleanup(v.close)
        if open:
            v.open()
        return v

    def get(self, edge, path, method="GET", **kw):
        port = edge if isinstance(edge, int) else edge.port
        return http_request(port, method, path, **kw)

    def assertStatus(self, resp, status):
        self.assertEqual(resp.status, status, "expected %d, got %d %s; headers %r; body %r"
                         % (status, resp.status, resp.reason, resp.headers, resp.body[:300]))
