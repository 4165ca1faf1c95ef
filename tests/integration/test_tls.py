"""
TLS (docs/tls.md): HTTPS listeners and https origins, with a test CA made by openssl at test time.
Every client verifies against the test CA (curl --cacert, ffprobe -ca_file, Python's ssl): never
-k. Certificates: "localhost" (also a.test) is the default, "b.test" is chosen by SNI, an expired
"localhost", a second "localhost" for the reload, and a "localhost" of another CA for an origin
that must fail verification.
"""

import os
import resource
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import (ADMIN_TOKEN, SANITIZED, T, EdgeTestCase, Synth, admin_request, ensure_media,
                        ffprobe_streams, file_source, free_port, have_ffmpeg, live_config, run,
                        vod_config, wait_until)

CERTS = None  # the directory of the test CA's files, made once by setUpModule


def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise AssertionError("openssl %s: %s" % (" ".join(args), r.stderr.decode(errors="replace")))


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".crt", "-days", "30", "-subj", "/CN=" + name,
            cwd=d)


def make_cert(d, ca, name, dns, start=None, end=None, rsa=False):
    """A certificate signed by `ca` for the DNS names (an EC P-256 key, or RSA 2048); start/end
    (YYYYMMDDHHMMSSZ) make it expired: `openssl ca` takes explicit dates where `x509 -req` takes
    only -days."""
    keyopts = ["rsa:2048"] if rsa else ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    openssl("req", "-newkey", *keyopts, "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + dns[0], cwd=d)
    ext = "subjectAltName=" + ",".join("DNS:" + n for n in dns) + "\n"
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    if start is None:
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
                "-CAcreateserial", "-out", name + ".crt", "-days", "10", "-extfile", name + ".ext",
                cwd=d)
        return
    db = os.path.join(d, "ca-db-" + name)
    os.makedirs(db, exist_ok=True)
    open(os.path.join(db, "index.txt"), "w").close()
    with open(os.path.join(db, "serial"), "w") as f:
        f.write("1000\n")
    with open(os.path.join(d, name + ".cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = test\n[test]\ndir = %s\ndatabase = $dir/index.txt\n"
                "serial = $dir/serial\nnew_certs_dir = $dir\ndefault_md = sha256\n"
                "policy = any\ncopy_extensions = copy\n[any]\ncommonName = supplied\n"
                "[ext]\n%s" % (db, ext))
    openssl("ca", "-batch", "-config", name + ".cnf", "-cert", ca + ".crt", "-keyfile", ca + ".key",
            "-in", name + ".csr", "-out", name + ".crt", "-startdate", start, "-enddate", end,
            "-extensions", "ext", "-notext", cwd=d)


def setUpModule():
    global CERTS
    if not shutil.which("openssl"):
        raise unittest.SkipTest("openssl not installed")
    CERTS = tempfile.mkdtemp(prefix="flvedge-tls-")
    make_ca(CERTS, "ca")
    make_ca(CERTS, "otherca")
    make_cert(CERTS, "ca", "local", ["localhost", "a.test"])
    make_cert(CERTS, "ca", "local2", ["localhost", "a.test"])
    make_cert(CERTS, "ca", "b", ["b.test"])
    make_cert(CERTS, "ca", "rsa", ["localhost"], rsa=True)
    make_cert(CERTS, "ca", "expired", ["localhost"], start="20200101000000Z", end="20200102000000Z")
    make_cert(CERTS, "otherca", "stranger", ["localhost"])


def tearDownModule():
    if CERTS:
        shutil.rmtree(CERTS, True)


def cert(name):
    return os.path.join(CERTS, name + ".crt")


def key(name):
    return os.path.join(CERTS, name + ".key")


def tls_listen(default="local", sni=None):
    """A listen entry with TLS: { "127.0.0.1:0", tls = { cert, key, sni = { ... } } }."""
    tls = {"cert": cert(default), "key": key(default)}
    if sni:
        tls["sni"] = {n: {"cert": cert(c), "key": key(c)} for n, c in sni.items()}
    return [{1: "127.0.0.1:0", "tls": tls}]


def curl(url, *extra, timeout=20, resolve=None):
    """curl verifying against the test CA -> (returncode, status, body bytes, stderr)."""
    cmd = ["curl", "-sS", "--cacert", cert("ca"), "-o", "-", "-w", "\n%{http_code}",
           "--max-time", str(timeout)]
    if resolve:
        cmd += ["--resolve", resolve]
    r = subprocess.run(cmd + list(extra) + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout + 10)
    body, _, code = r.stdout.rpartition(b"\n")
    return r.returncode, int(code or b"0"), body, r.stderr.decode(errors="replace")


def tls_context():
    ctx = ssl.create_default_context(cafile=cert("ca"))
    return ctx


def peer_cert_der(port, name="localhost"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with tls_context().wrap_socket(s, server_hostname=name) as t:
            return t.getpeercert(binary_form=True)


def der_of(name):
    with open(cert(name)) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


class TlsProxy:
    """An https origin: TLS on 127.0.0.1 (port chosen by the kernel) in front of a plain one."""

    def __init__(self, target_port, certname):
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert(certname), key(certname))
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.handshakes = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path):
        return "https://localhost:%d%s" % (self.port, path)

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(10)
            t = self.ctx.wrap_socket(c, server_side=True)
            self.handshakes += 1
            u = socket.create_connection(("127.0.0.1", self.target), timeout=10)
        except (OSError, ssl.SSLError):
            c.close()
            return
        t.settimeout(None)
        u.settimeout(None)
        socks = [t, u]
        try:
            while True:
                r, _, _ = select.select(socks, [], [], 1)
                if self.stopping:
                    break
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise EOFError
                    (u if s is t else t).sendall(data)
        except (OSError, EOFError, ssl.SSLError):
            pass
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.sock.close()


def flv_ok(body):
    return body[:3] == b"FLV" and len(body) > 13


class HttpsLiveTest(EdgeTestCase):
    def setUp(self):
        self.origin = self.start_origin()
        self.origin.route("/live/s.flv", Synth(vsize=4000))
        self.edge = self.start_edge(live_config(
            self.origin.url("/live/"), top={"listen": tls_listen(sni={"b.test": "b"})}))
        self.base = "https://localhost:%d" % self.edge.port

    def test_curl_plays_live_over_https_verified_by_the_test_ca(self):
        rc, status, body, err = curl(self.base + "/flv/s.flv", "-r", "0-", timeout=3)
        # curl stops at --max-time (28): a live stream does not end
        self.assertIn(rc, (0, 28), err)
        self.assertEqual(status, 200, err)
        self.assertTrue(flv_ok(body), body[:32])
        self.assertGreater(len(body), 50000, "a few seconds of a 4 KB-per-frame stream")

    def test_alpn_is_http11_and_suite_is_ecdhe_aead_tls12(self):
        # a client offering h2 gets it (test_http2.py); one that offers http/1.1 only gets that
        with socket.create_connection(("127.0.0.1", self.edge.port), timeout=10) as s:
            ctx = tls_context()
            ctx.set_alpn_protocols(["http/1.1"])
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                self.assertEqual(t.selected_alpn_protocol(), "http/1.1")
                self.assertEqual(t.version(), "TLSv1.2")
                name = t.cipher()[0]
                self.assertTrue(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name),
                                name)

    def test_session_ticket_resumes(self):
        ctx = tls_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", self.edge.port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(b"GET /nothing HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                while t.recv(4096):
                    pass
                sess = t.session
                self.assertTrue(sess.has_ticket, "the server issued a session ticket")
        with socket.create_connection(("127.0.0.1", self.edge.port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="localhost", session=sess) as t:
                self.assertTrue(t.session_reused, "the second handshake resumed with the ticket")

    def test_sni_chooses_the_certificate_and_an_unknown_name_gets_the_default(self):
        p = self.edge.port
        rc, status, _, err = curl("https://b.test:%d/none" % p, resolve="b.test:%d:127.0.0.1" % p)
        self.assertEqual((rc, status), (0, 404), err)
        self.assertEqual(peer_cert_der(p, "b.test"), der_of("b"))
        self.assertEqual(peer_cert_der(p, "a.test"), der_of("local"))
        # c.test: the default certificate, which does not name it: curl refuses it (60)
        rc, status, _, err = curl("https://c.test:%d/none" % p, resolve="c.test:%d:127.0.0.1" % p)
        self.assertEqual(rc, 60, err)
        self.assertIn("c.test", err)

    def test_plain_http_to_the_tls_port_gets_400_and_a_clean_close(self):
        with socket.create_connection(("127.0.0.1", self.edge.port), timeout=10) as s:
            s.sendall(b"GET /flv/s.flv HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = b""
            while True:
                d = s.recv(4096)
                if not d:
                    break
                data += d
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data)
        self.assertIn(b"HTTPS port", data)
        self.assertTrue(self.edge.alive())


class QuickModeHttpsTest(EdgeTestCase):
    """flvedge --listen ... --origin ... --tls-cert F --tls-key F --admin ...: the quick listener
    speaks HTTPS, offers h2 and http/1.1, and the admin API stays plain on its own port."""

    def test_quick_mode_serves_the_live_stream_over_https_with_h2_and_http11(self):
        origin = self.start_origin()
        origin.route("/live/q.flv", Synth(vsize=4000))
        edge = self.start_quick_edge(origin.url(""), extra_args=[
            "--tls-cert", cert("local"), "--tls-key", key("local"),
            "--admin", "127.0.0.1:0", "--admin-token", ADMIN_TOKEN])
        self.assertIn("listening on https://127.0.0.1:%d" % edge.port, edge.stderr_text())
        base = "https://localhost:%d" % edge.port
        for flag, version in (("--http2", "2"), ("--http1.1", "1.1")):
            with self.subTest(alpn=flag):
                # the live stream itself, to --max-time (28): %{http_version} is what ALPN agreed
                r = subprocess.run(["curl", "-sS", "--cacert", cert("ca"), flag, "--max-time", "2",
                                    "-o", "-", "-w", "\n%{http_code} %{http_version}",
                                    base + "/live/q.flv"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
                err = r.stderr.decode(errors="replace")
                self.assertIn(r.returncode, (0, 28), err)
                body, _, tail = r.stdout.rpartition(b"\n")
                self.assertEqual(tail.decode(), "200 " + version, err)
                self.assertTrue(flv_ok(body), body[:32])
                self.assertGreater(len(body), 20000, "a second or more of a 4 KB-per-frame stream")
        for proto in ("h2", "http/1.1"):
            with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as s:
                ctx = tls_context()
                ctx.set_alpn_protocols([proto])
                with ctx.wrap_socket(s, server_hostname="localhost") as t:
                    self.assertEqual(t.selected_alpn_protocol(), proto)
        # the admin listener of quick mode is plain HTTP on its own port
        self.assertNotIn(edge.admin_port, edge.ports)
        self.assertEqual(admin_request(edge, "GET", "/health").json["status"], "ok")


class TwoListenersTest(EdgeTestCase):
    def test_two_tls_listeners_each_present_their_own_certificate(self):
        origin = self.start_origin()
        origin.route("/live/s.flv", Synth())
        edge = self.start_edge(live_config(origin.url("/live/"), top={"listen": [
            {1: "127.0.0.1:0", "tls": {"cert": cert("local"), "key": key("local")}},
            {1: "127.0.0.1:0", "tls": {"cert": cert("b"), "key": key("b")}}]}))
        self.assertEqual(len(edge.ports), 2)
        p1, p2 = edge.ports

        def peer(port, name):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                with tls_context().wrap_socket(s, server_hostname=name) as t:
                    return t.getpeercert(), t.getpeercert(binary_form=True)

        c1, d1 = peer(p1, "localhost")
        c2, d2 = peer(p2, "b.test")
        self.assertEqual(d1, der_of("local"))
        self.assertEqual(d2, der_of("b"))
        self.assertEqual(dict(x[0] for x in c1["subject"])["commonName"], "localhost")
        self.assertEqual(sorted(c1["subjectAltName"]), [("DNS", "a.test"), ("DNS", "localhost")])
        self.assertEqual(dict(x[0] for x in c2["subject"])["commonName"], "b.test")
        self.assertEqual(c2["subjectAltName"], (("DNS", "b.test"),))
        # each is its own listener's default: "localhost" on the second port gets b.test's,
        # which a verifying client refuses
        with socket.create_connection(("127.0.0.1", p2), timeout=10) as s:
            with self.assertRaises(ssl.SSLCertVerificationError):
                tls_context().wrap_socket(s, server_hostname="localhost")
        # and both serve the stream
        for port, name in ((p1, "localhost"), (p2, "b.test")):
            rc, status, body, err = curl("https://%s:%d/flv/s.flv" % (name, port), timeout=1,
                                         resolve="%s:%d:127.0.0.1" % (name, port))
            self.assertIn(rc, (0, 28), err)
            self.assertEqual(status, 200, err)
            self.assertTrue(flv_ok(body), body[:32])


def s_client(port, *args):
    """openssl s_client's handshake with the edge -> (returncode, its output)."""
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-servername", "localhost", "-CAfile", cert("ca")] + list(args),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    return r.returncode, r.stdout.decode(errors="replace")


class ModernSuitesOnlyTest(EdgeTestCase):
    """TLS 1.2 minimum, ECDHE with AEAD only. The client is openssl s_client at SECLEVEL=0 (so the
    client itself allows the old protocol or suite): the refusal must be the server's alert, 70
    (protocol_version) or 40 (handshake_failure), and the same client with a modern suite on the
    same port succeeds."""

    def setUp(self):
        origin = self.start_origin()
        self.edge = self.start_edge(live_config(origin.url("/live/"), top={"listen": [
            {1: "127.0.0.1:0", "tls": {"cert": cert("local"), "key": key("local")}},    # ECDSA
            {1: "127.0.0.1:0", "tls": {"cert": cert("rsa"), "key": key("rsa")}}]}))     # RSA
        self.ec, self.rsa = self.edge.ports

    def accepted(self, port, *args):
        rc, out = s_client(port, *args)
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"New, TLSv1\.2, Cipher is ECDHE-")
        self.assertIn("Verify return code: 0 (ok)", out)

    def refused(self, port, alert, *args):
        rc, out = s_client(port, *args)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("Cipher is (NONE)", out)
        self.assertIn("SSL alert number %d" % alert, out, "not refused by the server's alert")
        self.assertNotIn("no protocols available", out)
        self.assertNotIn("no cipher", out.lower())

    def test_tls10_and_tls11_are_refused(self):
        self.accepted(self.ec, "-tls1_2")
        for port in (self.ec, self.rsa):
            for proto in ("-tls1", "-tls1_1"):
                with self.subTest(port=port, proto=proto):
                    self.refused(port, 70, proto, "-cipher", "DEFAULT@SECLEVEL=0")

    def test_cbc_and_non_ecdhe_suites_are_refused(self):
        self.accepted(self.ec, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
        self.accepted(self.ec, "-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305")
        self.accepted(self.rsa, "-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384")
        for port, suite in ((self.ec, "ECDHE-ECDSA-AES128-SHA"),       # CBC
                            (self.ec, "ECDHE-ECDSA-AES256-SHA384"),    # CBC
                            (self.rsa, "ECDHE-RSA-AES128-SHA"),        # CBC
                            (self.rsa, "AES128-GCM-SHA256"),           # RSA key exchange
                            (self.rsa, "AES256-SHA"),                  # RSA key exchange, CBC
                            (self.rsa, "DHE-RSA-AES128-GCM-SHA256")):  # finite-field DHE
            with self.subTest(suite=suite):
                self.refused(port, 40, "-tls1_2", "-cipher", suite + "@SECLEVEL=0")


@unittest.skipUnless(have_ffmpeg(), "ffmpeg/ffprobe not installed")
class HttpsFfprobeTest(EdgeTestCase):
    def probe(self, url):
        r = run(["ffprobe", "-v", "error", "-tls_verify", "1", "-ca_file", cert("ca"),
                 "-show_entries", "stream=codec_name", "-of", "compact", url], timeout=T(60))
        self.assertEqual(r.returncode, 0, r.stderr)
        codecs = sorted(l.split("=", 1)[1] for l in r.stdout.splitlines() if l.startswith("stream|"))
        self.assertEqual(codecs, ["aac", "h264"], r.stdout)

    def test_ffprobe_live_and_vod_over_https(self):
        media = ensure_media(seconds=10, size="640x360", fps=25, gop=50)
        origin = self.start_origin()
        origin.route("/live/real.flv", file_source(media, loop=True))
        vorigin = self.start_vod_origin(os.path.dirname(media))
        cache = tempfile.mkdtemp(prefix="flvedge-vodcache-")
        self.addCleanup(shutil.rmtree, cache, True)
        cfg = vod_config(vorigin.url(), cache, top={"listen": tls_listen()},
                         extra_resources=[{"name": "live", "prefix": "/flv/", "type": "live",
                                           "origin": origin.url("/live/")}])
        edge = self.start_edge(cfg)
        base = "https://localhost:%d" % edge.port
        self.probe(base + "/flv/real.flv")
        self.probe(base + "/videos/" + os.path.basename(media))
        # the VOD file's bytes over TLS are the file's (batched reads, not sendfile)
        rc, status, body, err = curl(base + "/videos/" + os.path.basename(media))
        self.assertEqual((rc, status), (0, 200), err)
        with open(media, "rb") as f:
            self.assertEqual(body, f.read())
        rc, status, body, err = curl(base + "/videos/" + os.path.basename(media), "-r", "100000-299999")
        self.assertEqual((rc, status), (0, 206), err)
        with open(media, "rb") as f:
            f.seek(100000)
            self.assertEqual(body, f.read(200000))


class ExpiredCertificateTest(EdgeTestCase):
    def test_curl_refuses_an_expired_certificate(self):
        origin = self.start_origin()
        origin.route("/live/s.flv", Synth())
        edge = self.start_edge(live_config(origin.url("/live/"), top={"listen": tls_listen("expired")}))
        rc, status, _, err = curl("https://localhost:%d/flv/s.flv" % edge.port, timeout=5)
        self.assertEqual(rc, 60, err)
        self.assertIn("expired", err)


class UnfinishedHandshakesTest(EdgeTestCase):
    N = 1000

    def test_1000_handshakes_that_never_finish_are_timed_out_with_bounded_memory(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < self.N + 200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, self.N + 500), hard))
        origin = self.start_origin()
        origin.route("/live/s.flv", Synth())
        # a plain listener first (edge.port: the metrics), the TLS one second
        edge = self.start_edge(live_config(origin.url("/live/"), limits={"request_timeout": 3},
                                           top={"listen": ["127.0.0.1:0"] + tls_listen()}))
        tls_port = edge.ports[1]
        # A real ClientHello, made by Python's TLS client into memory, sent and never followed.
        ctx = tls_context()
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = out.read()
        self.assertEqual(hello[0], 0x16)
        rss0 = edge.rss_kb()
        socks = []
        try:
            t0 = time.monotonic()
            for _ in range(self.N):
                s = socket.create_connection(("127.0.0.1", tls_port), timeout=10)
                s.sendall(hello)
                socks.append(s)
            # every one got its ServerHello...: the server is mid-handshake with all of them
            for s in socks:
                s.settimeout(10)
                self.assertEqual(s.recv(1)[:1], b"\x16")
            rss1 = edge.rss_kb()
            per = (rss1 - rss0) / self.N
            sys.stderr.write("\n%d unfinished handshakes: RSS %d -> %d KB (%.1f KB each)\n"
                             % (self.N, rss0, rss1, per))
            if not SANITIZED:  # ASan's shadow memory and quarantine multiply RSS
                self.assertLess(per, 80, "memory per unfinished handshake (KB)")
            # a real client is served meanwhile
            rc, status, _, err = curl("https://localhost:%d/none" % tls_port)
            self.assertEqual((rc, status), (0, 404), err)
            # request_timeout (3 s) closes them all
            closed = 0
            deadline = t0 + T(3 + 15)
            for s in socks:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    while s.recv(65536):
                        pass
                    closed += 1
                except ConnectionResetError:
                    closed += 1
                except socket.timeout:
                    pass
            self.assertEqual(closed, self.N, "unfinished handshakes closed by request_timeout")
            self.assertLessEqual(time.monotonic() - t0, T(3 + 15))
        finally:
            for s in socks:
                s.close()
        # the metrics request itself is the one connection left
        wait_until(lambda: edge.metric("flvedge_connections") <= 1, T(10), "no connection left")


class RecordCounter:
    """A relay between one client and the edge's TLS port that reads the headers of the records the
    edge sends (they are cleartext): the lengths of its application-data records."""

    def __init__(self, port):
        self.upstream = port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.app = []  # application_data record lengths, in order
        threading.Thread(target=self._run, daemon=True).start()

    def records(self):
        with self.lock:
            return list(self.app)

    def _pipe(self, a, b, parse):
        buf = b""
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
                if not parse:
                    continue
                buf += d
                while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[3:5], "big"):
                    n = int.from_bytes(buf[3:5], "big")
                    if buf[0] == 23:
                        with self.lock:
                            self.app.append(n)
                    buf = buf[5 + n:]
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self):
        try:
            c, _ = self.sock.accept()
        except OSError:
            return
        u = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
        c.settimeout(None)
        u.settimeout(None)
        threading.Thread(target=self._pipe, args=(c, u, False), daemon=True).start()
        self._pipe(u, c, True)
        c.close()
        u.close()

    def close(self):
        self.sock.close()


class TlsFanoutTest(EdgeTestCase):
    """docs/tls.md, "Live fan-out over TLS": a viewer's batch is gathered into few full records
    (not one per tag, chunk line and CRLF), and a TLS viewer costs its TLS buffers, not a copy of
    the stream."""

    def setUp(self):
        self.origin = self.start_origin()
        # ~100 KB/s: 25 frames of 4 KB a second and AAC
        self.origin.route("/live/s.flv", Synth(vsize=4000))
        self.edge = self.start_edge(live_config(self.origin.url("/live/"), merge_ms=100,
                                                top={"listen": tls_listen()}))

    def test_a_viewers_batches_go_out_in_few_full_records(self):
        relay = RecordCounter(self.edge.port)
        self.addCleanup(relay.close)
        got = 0
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
            with tls_context().wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(b"GET /flv/s.flv HTTP/1.1\r\nHost: localhost\r\n\r\n")
                deadline = time.monotonic() + T(10)
                while got < 250000 and time.monotonic() < deadline:
                    got += len(t.recv(65536))
        recs = relay.records()
        self.assertGreater(got, 250000 - 1, "the stream came")
        self.assertGreater(len(recs), 5)
        self.assertTrue(all(n <= 16384 + 256 for n in recs), max(recs))
        # A 100 ms batch of this stream is ~10 KB in some 10 tags, each a chunk with its size line
        # and CRLF: one record a piece would average under 1 KB.
        mean = sum(recs) / len(recs)
        sys.stderr.write("\n%d application records, %.0f bytes on average\n" % (len(recs), mean))
        self.assertGreater(mean, 6000, "records per batch: %r" % recs[:40])

    def test_a_tls_viewer_costs_its_buffers_not_a_copy_of_the_stream(self):
        n = 40
        first = self.tls_viewer()
        first.recv(65536)  # the stream is pulled and its window warm
        rss0 = self.edge.rss_kb()
        viewers = [self.tls_viewer() for _ in range(n)]
        for v in viewers:
            got = 0
            while got < 60000:
                got += len(v.recv(65536))
        rss1 = self.edge.rss_kb()
        per = (rss1 - rss0) / n
        sys.stderr.write("\n%d TLS viewers: RSS %d -> %d KB (%.1f KB each)\n" % (n, rss0, rss1, per))
        if not SANITIZED:  # ASan's shadow memory and quarantine multiply RSS
            # mbedTLS's record buffers (16 KiB in, 16 KiB out) and the connection: no stream copy
            self.assertLess(per, 100, "memory per TLS viewer (KB)")
        for v in viewers + [first]:
            v.close()

    def tls_viewer(self):
        s = socket.create_connection(("127.0.0.1", self.edge.port), timeout=10)
        t = tls_context().wrap_socket(s, server_hostname="localhost")
        self.addCleanup(t.close)
        t.sendall(b"GET /flv/s.flv HTTP/1.1\r\nHost: localhost\r\n\r\n")
        return t


class ReloadCertificateTest(EdgeTestCase):
    def test_reload_swaps_the_certificate_while_a_viewer_keeps_watching(self):
        origin = self.start_origin()
        origin.route("/live/s.flv", Synth(vsize=2000))
        files = {}
        for name, path in (("site.crt", cert("local")), ("site.key", key("local"))):
            with open(path) as f:
                files[name] = f.read()
        edge = self.start_edge(live_config(
            origin.url("/live/"),
            top={"listen": [{1: "127.0.0.1:0", "tls": {"cert": "site.crt", "key": "site.key"}}]}),
            files=files)
        port = edge.port
        self.assertEqual(peer_cert_der(port), der_of("local"))
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        viewer = tls_context().wrap_socket(s, server_hostname="localhost")
        self.addCleanup(viewer.close)
        viewer.sendall(b"GET /flv/s.flv HTTP/1.1\r\nHost: localhost\r\n\r\n")
        got = 0
        while got < 20000:
            got += len(viewer.recv(65536))
        for name in ("crt", "key"):
            shutil.copy(os.path.join(CERTS, "local2." + name), os.path.join(edge.dir, "site." + name))
        edge.send_signal(signal.SIGHUP)
        wait_until(lambda: peer_cert_der(port) == der_of("local2"), T(10),
                   "new handshakes get the reloaded certificate")
        # the viewer that started before is still watching, on the old certificate
        self.assertEqual(viewer.getpeercert(binary_form=True), der_of("local"))
        more, t_end = 0, time.monotonic() + T(5)
        while more < 20000 and time.monotonic() < t_end:
            d = viewer.recv(65536)
            self.assertTrue(d, "the viewer was dropped by the reload")
            more += len(d)
        self.assertGreaterEqual(more, 20000)
        # a certificate that does not load fails the reload; the running one stays
        with open(os.path.join(edge.dir, "site.key"), "w") as f:
            f.write("not a key\n")
        edge.send_signal(signal.SIGHUP)
        edge.wait_log("site.key", timeout=T(10))
        self.assertEqual(peer_cert_der(port), der_of("local2"))


class HttpsOriginTest(EdgeTestCase):
    def setUp(self):
        self.origin = self.start_origin()
        self.origin.route("/live/s.flv", Synth(vsize=1000))
        self.proxy = TlsProxy(self.origin.port, "local")          # signed by the test CA
        self.stranger = TlsProxy(self.origin.port, "stranger")    # signed by another CA
        self.addCleanup(self.proxy.stop)
        self.addCleanup(self.stranger.stop)

    def edge_for(self, **res):
        return self.start_edge(live_config(
            self.proxy.url("/live/"), top={"ca_file": cert("ca")},
            extra_resources=[dict({"name": "other", "prefix": "/other/", "type": "live",
                                   "origin": self.stranger.url("/live/")}, **res)]))

    def test_an_https_origin_verified_by_the_ca_file_plays(self):
        edge = self.edge_for()
        v = self.viewer(edge, "/flv/s.flv")
        self.assertEqual(v.status, 200)
        v.read_until(lambda v: len(v.tags) > 10, T(10), "tags through the https origin")
        self.assertGreater(self.proxy.handshakes, 0)

    def test_an_https_origin_failing_verification_answers_502(self):
        edge = self.edge_for()
        rc, status, body, _ = run_plain(edge.port, "/other/s.flv")
        self.assertEqual(status, 502, body)
        edge.wait_log("origin certificate not verified", timeout=T(10))

    def test_tls_verify_false_plays_an_unverified_origin(self):
        edge = self.edge_for(tls_verify=False)
        v = self.viewer(edge, "/other/s.flv")
        self.assertEqual(v.status, 200)
        v.read_until(lambda v: len(v.tags) > 10, T(10), "tags through the unverified origin")

    def test_an_https_backup_after_an_http_primary_is_verified_by_the_ca_file(self):
        # The resource's ca_file holds for every origin of its group, not only an https primary
        # (a backup used to be verified against the system bundle, made by the loop).
        dead = "http://127.0.0.1:%d/live/" % free_port()
        edge = self.start_edge(live_config([dead, self.proxy.url("/live/")], ca_file=cert("ca")))
        v = self.viewer(edge, "/flv/s.flv")
        self.assertEqual(v.status, 200)
        v.read_until(lambda v: len(v.tags) > 10, T(10), "tags through the https backup")
        self.assertGreater(self.proxy.handshakes, 0)

    def test_an_https_url_from_a_policy_uses_the_resources_ca_file(self):
        # An http resource whose origin hook answers https: the context is made at the load from
        # the resource's ca_file (before: the system bundle, read by the loop), so the test CA
        # verifies it, and the stranger's certificate still fails.
        policy = """
local good, bad = %r, %r
return { origin = function(req) return req.path:find("bad") and bad or good end }
""" % (self.proxy.url("/live/s.flv"), self.stranger.url("/live/s.flv"))
        plain = "http://127.0.0.1:%d/live/" % self.origin.port
        edge = self.start_edge(live_config(plain, ca_file=cert("ca"), policy="p.lua"),
                               files={"p.lua": policy})
        v = self.viewer(edge, "/flv/s.flv")
        self.assertEqual(v.status, 200)
        v.read_until(lambda v: len(v.tags) > 10, T(10), "tags through the policy's https origin")
        self.assertGreater(self.proxy.handshakes, 0)
        rc, status, body, _ = run_plain(edge.port, "/flv/bad.flv")
        self.assertEqual(status, 502, body)
        edge.wait_log("origin certificate not verified", timeout=T(10))

    def test_a_policy_resource_whose_ca_file_does_not_load_starts_with_a_warning(self):
        # Its configured origins are http, so the load goes on; only https URLs from the policy
        # would fail (at connect), and the log says so once, at the load.
        plain = "http://127.0.0.1:%d/live/" % self.origin.port
        edge = self.start_edge(live_config(plain, ca_file="missing.pem", policy="p.lua"),
                               files={"p.lua": "return { origin = function(req) end }\n"})
        edge.wait_log("https origins from its policy will fail", timeout=T(10))
        self.assertIn("missing.pem", edge.stderr_tail())
        v = self.viewer(edge, "/flv/s.flv")
        self.assertEqual(v.status, 200)
        v.read_until(lambda v: len(v.tags) > 10, T(10), "tags through the http origin")

    def test_vod_fetches_from_an_https_origin(self):
        root = tempfile.mkdtemp(prefix="flvedge-vodroot-")
        self.addCleanup(shutil.rmtree, root, True)
        data = os.urandom(300000)
        with open(os.path.join(root, "f.flv"), "wb") as f:
            f.write(data)
        vorigin = self.start_vod_origin(root)
        proxy = TlsProxy(vorigin.port, "local")
        self.addCleanup(proxy.stop)
        cache = tempfile.mkdtemp(prefix="flvedge-vodcache-")
        self.addCleanup(shutil.rmtree, cache, True)
        edge = self.start_edge(vod_config(proxy.url("/media/"), cache, ca_file=cert("ca")))
        r = subprocess.run(["curl", "-sS", "-o", "-", "http://127.0.0.1:%d/videos/f.flv" % edge.port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, data)


def run_plain(port, path):
    r = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "15",
                        "http://127.0.0.1:%d%s" % (port, path)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    body, _, code = r.stdout.rpartition(b"\n")
    return r.returncode, int(code or b"0"), body, r.stderr


if __name__ == "__main__":
    unittest.main(verbosity=2)
