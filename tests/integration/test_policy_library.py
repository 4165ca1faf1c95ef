"""
The ready-made policies (docs/policy-library.md) in the real binary: secure tokens (good plays,
bad 403, expired 410, IP binding, directory tokens, expiry never cuts an open stream), referer,
user agent, country (a test .mmdb maps 127.0.0.2 to DE) and IP lists, origin failover, and the
chain of all of them. Tokens are made here with hashlib, independently of flvedge.token.
"""

import base64
import hashlib
import hmac
import os
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import T, EdgeTestCase, HttpConn, Synth, free_port
from fe_mmdb import write_country_db

SECRET = "s3cret key"


def md5_token(path, expires, ip=""):
    raw = hashlib.md5(("%d%s%s %s" % (expires, path, ip, SECRET)).encode()).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def signed(path, expires, ip="", sign_path=None):
    return "%s?md5=%s&expires=%d" % (path, md5_token(sign_path or path, expires, ip), expires)


def dead_base():
    return "http://127.0.0.1:%d/live/" % free_port()


class PolicyCase(EdgeTestCase):
    def status(self, edge, path, headers=None, source=None):
        """The status of a request; a live 200 is closed as soon as its head is in."""
        c = HttpConn(edge.port, path, headers=headers, source=source)
        try:
            r = c.read_head(T(10))
            r.body = c.read_body_all(T(10)) if r.status != 200 else b""
            return r.status, r.body
        finally:
            c.close()

    def plays(self, edge, path, **kw):
        v = self.viewer(edge, path, **kw)
        self.assertEqual(v.status, 200, "%s: %r" % (path, v.response))
        v.read_tags(5)
        v.close()


class SecureTokenTest(PolicyCase):
    def setUp(self):
        self.origin = self.start_origin()
        for s in ("s", "t"):
            self.origin.route("/live/%s.flv" % s, Synth())
        self.edge = self.start_edge({"resources": [
            {"name": "open", "prefix": "/flv/", "type": "live", "origin": self.origin.url("/live/"),
             "policy": "secure_token", "policy_settings": {"secret": SECRET}},
            {"name": "bound", "prefix": "/ip/", "type": "live", "origin": self.origin.url("/live/"),
             "policy": "secure_token", "policy_settings": {"secret": SECRET, "ip": True}},
            {"name": "hmac", "prefix": "/hm/", "type": "live", "origin": self.origin.url("/live/"),
             "policy": "secure_token", "policy_settings": {"secret": SECRET, "type": "hmac"}},
            {"name": "nginx", "prefix": "/ng/", "type": "live", "origin": self.origin.url("/live/"),
             "policy": "secure_token", "policy_settings": {
                 "type": "nginx", "secret_template": "$secure_link_expires$uri$remote_addr nginx-secret"}},
        ]})

    def test_good_token_plays(self):
        self.plays(self.edge, signed("/flv/s.flv", int(time.time()) + 600))

    def test_bad_tokens_403(self):
        exp = int(time.time()) + 600
        good = signed("/flv/s.flv", exp)
        for path in ("/flv/s.flv",                                      # none
                     "/flv/s.flv?expires=%d" % exp,                      # no md5
                     good.replace("expires=%d" % exp, "expires=%d" % (exp + 1)),  # other expiry
                     signed("/flv/t.flv", exp, sign_path="/flv/s.flv"),  # another stream's token
                     "/flv/s.flv?md5=%s&expires=%d" % ("A" * 22, exp),   # wrong hash
                     "/flv/s.flv?md5=%%%%%%&expires=abc"):              # garbage
            st, body = self.status(self.edge, path)
            self.assertEqual(st, 403, path)
            self.assertIn(b"403", body)
        self.assertEqual(self.origin.connections("/live/s.flv"), 0, "a refused request reached the origin")

    def test_expired_token_410(self):
        st, body = self.status(self.edge, signed("/flv/s.flv", int(time.time()) - 5))
        self.assertEqual(st, 410)
        self.assertIn(b"expired", body)

    def test_ip_binding(self):
        exp = int(time.time()) + 600
        path = signed("/ip/s.flv", exp, ip="127.0.0.2")
        self.plays(self.edge, path, source="127.0.0.2")
        self.assertEqual(self.status(self.edge, path, source="127.0.0.3")[0], 403)
        self.assertEqual(self.status(self.edge, signed("/ip/s.flv", exp))[0], 403)  # unbound token

    def test_directory_token(self):
        exp = int(time.time()) + 600
        tok = md5_token("/flv/", exp)
        self.plays(self.edge, "/flv/s.flv?md5=%s&expires=%d" % (tok, exp))
        self.plays(self.edge, "/flv/t.flv?md5=%s&expires=%d" % (tok, exp))
        self.assertEqual(self.status(self.edge, "/flv/x/s.flv?md5=%s&expires=%d" % (tok, exp))[0], 403)

    def test_hmac_variant(self):
        exp = int(time.time()) + 600
        mac = hmac.new(SECRET.encode(), ("%d/hm/s.flv" % exp).encode(), hashlib.sha256).digest()
        tok = base64.urlsafe_b64encode(mac).decode().rstrip("=")
        self.plays(self.edge, "/hm/s.flv?token=%s&expires=%d" % (tok, exp))
        self.assertEqual(self.status(self.edge, "/hm/s.flv?token=%s&expires=%d" % (tok, exp + 1))[0], 403)
        self.assertEqual(self.status(self.edge, signed("/hm/s.flv", exp))[0], 403)  # an md5 token
        old = int(time.time()) - 5
        mac = hmac.new(SECRET.encode(), ("%d/hm/s.flv" % old).encode(), hashlib.sha256).digest()
        tok = base64.urlsafe_b64encode(mac).decode().rstrip("=")
        self.assertEqual(self.status(self.edge, "/hm/s.flv?token=%s&expires=%d" % (tok, old))[0], 410)

    def test_nginx_secure_link_variant(self):
        exp = int(time.time()) + 600
        raw = hashlib.md5(("%d/ng/s.flv127.0.0.1 nginx-secret" % exp).encode()).digest()
        tok = base64.urlsafe_b64encode(raw).decode()  # nginx accepts the padding
        self.plays(self.edge, "/ng/s.flv?md5=%s&expires=%d" % (tok, exp))
        self.assertEqual(self.status(self.edge, "/ng/s.flv?md5=%s&expires=%d" % (tok, exp),
                                     source="127.0.0.2")[0], 403)
        self.assertEqual(self.status(self.edge, "/ng/s.flv?md5=%s&expires=0" % tok)[0], 403)

    def test_expiry_never_cuts_an_open_stream(self):
        exp = int(time.time()) + 2
        path = signed("/flv/s.flv", exp)
        v = self.viewer(self.edge, path)
        self.assertEqual(v.status, 200)
        v.read_until(lambda v: time.time() > exp + 1 and len(v.tags) > 10, T(15),
                     "tags past the token's expiry")
        self.assertFalse(v.ended)
        self.assertEqual(self.status(self.edge, path)[0], 410)  # a new request with it: expired


class AccessControlTest(PolicyCase):
    def setUp(self):
        self.origin = self.start_origin()
        self.origin.route("/live/s.flv", Synth())
        d = tempfile.mkdtemp(prefix="flvedge-geo-")
        write_country_db(os.path.join(d, "geo.mmdb"), {"127.0.0.2/32": "DE", "127.0.0.4/32": "FR"})
        self.edge = self.start_edge({
            "geoip_db": os.path.join(d, "geo.mmdb"),
            "resources": [
                {"name": "referer", "prefix": "/ref/", "type": "live", "origin": self.origin.url("/live/"),
                 "policy": "access_control", "policy_settings": {
                     "referer": {"policy": "deny", "values": ["example.com", "*.example.com"], "empty": "deny"}}},
                {"name": "referer-open", "prefix": "/refo/", "type": "live", "origin": self.origin.url("/live/"),
                 "policy": "access_control", "policy_settings": {
                     "referer": {"policy": "allow", "values": ["bad.example"], "empty": "allow"}}},
                {"name": "ua", "prefix": "/ua/", "type": "live", "origin": self.origin.url("/live/"),
                 "policy": "access_control", "policy_settings": {
                     "user_agent": {"policy": "allow", "values": ["~*bot", "curl/7.0", ""]}}},
                {"name": "country", "prefix": "/geo/", "type": "live", "origin": self.origin.url("/live/"),
                 "policy": "access_control", "policy_settings": {
                     "country": {"policy": "deny", "values": ["FR"]}}},
                {"name": "country-block", "prefix": "/geob/", "type": "live", "origin": self.origin.url("/live/"),
                 "policy": "access_control", "policy_settings": {
                     "country": {"policy": "allow", "values": ["DE"]}}},
                {"name": "ip", "prefix": "/ip/", "type": "live", "origin": self.origin.url("/live/"),
                 "policy": "access_control", "policy_settings": {
                     "ip": {"policy": "allow", "values": ["127.0.0.3/32", "2001:db8::/32"]}}},
            ]})

    def test_referer_allow_list(self):
        e = self.edge
        self.assertEqual(self.status(e, "/ref/s.flv", {"Referer": "https://example.com/page"})[0], 200)
        self.assertEqual(self.status(e, "/ref/s.flv", {"Referer": "http://www.Example.com:8080/x"})[0], 200)
        self.assertEqual(self.status(e, "/ref/s.flv", {"Referer": "https://evil.com/?example.com"})[0], 403)
        self.assertEqual(self.status(e, "/ref/s.flv", {"Referer": "https://example.com.evil.com/"})[0], 403)
        self.assertEqual(self.status(e, "/ref/s.flv")[0], 403)                    # missing: empty = deny
        self.assertEqual(self.status(e, "/ref/s.flv", {"Referer": ""})[0], 403)   # empty

    def test_referer_block_list(self):
        e = self.edge
        self.assertEqual(self.status(e, "/refo/s.flv", {"Referer": "https://bad.example/"})[0], 403)
        self.assertEqual(self.status(e, "/refo/s.flv", {"Referer": "https://good.example/"})[0], 200)
        self.assertEqual(self.status(e, "/refo/s.flv")[0], 200)                   # missing: empty = allow

    def test_user_agent(self):
        e = self.edge
        self.assertEqual(self.status(e, "/ua/s.flv", {"User-Agent": "Mozilla/5.0"})[0], 200)
        self.assertEqual(self.status(e, "/ua/s.flv", {"User-Agent": "GoogleBOT/2.1"})[0], 403)
        self.assertEqual(self.status(e, "/ua/s.flv", {"User-Agent": "curl/7.0"})[0], 403)
        self.assertEqual(self.status(e, "/ua/s.flv", {"User-Agent": "curl/7.01"})[0], 200)  # exact only
        self.assertEqual(self.status(e, "/ua/s.flv", {"User-Agent": None})[0], 403)        # none

    def test_country(self):
        e = self.edge
        self.assertEqual(self.status(e, "/geo/s.flv", source="127.0.0.4")[0], 200)   # FR listed
        self.assertEqual(self.status(e, "/geo/s.flv", source="127.0.0.2")[0], 403)   # DE
        self.assertEqual(self.status(e, "/geo/s.flv", source="127.0.0.1")[0], 403)   # unknown
        self.assertEqual(self.status(e, "/geob/s.flv", source="127.0.0.2")[0], 403)  # DE blocked
        self.assertEqual(self.status(e, "/geob/s.flv", source="127.0.0.4")[0], 200)
        self.assertEqual(self.status(e, "/geob/s.flv", source="127.0.0.1")[0], 200)

    def test_ip(self):
        e = self.edge
        self.assertEqual(self.status(e, "/ip/s.flv", source="127.0.0.3")[0], 403)
        self.assertEqual(self.status(e, "/ip/s.flv", source="127.0.0.5")[0], 200)
        self.plays(e, "/ip/s.flv")


class OriginFailoverAndChainTest(PolicyCase):
    def test_failover_and_chain(self):
        good = self.start_origin()
        good.route("/live/s.flv", Synth())
        bad = self.start_origin()
        bad.route("/live/s.flv", status=503, body=b"busy\n")
        origins = [dead_base(), bad.url("/live/"), good.url("/live/")]
        edge = self.start_edge({"resources": [
            {"name": "fo", "prefix": "/fo/", "type": "live", "origin": "http://127.0.0.1:9/",
             "policy": "origin_failover", "policy_settings": {"origins": origins}},
            {"name": "chain", "prefix": "/c/", "type": "live", "origin": "http://127.0.0.1:9/",
             "policy": "chain", "policy_settings": {
                 "token": {"secret": SECRET},
                 "acl": {"user_agent": {"policy": "allow", "values": ["~*bot"]},
                         "ip": {"policy": "allow", "values": ["127.0.0.3"]}},
                 "origin": {"origins": origins}}},
        ]})
        self.plays(edge, "/fo/s.flv")
        self.assertEqual(bad.connections("/live/s.flv"), 1)
        self.assertEqual(good.connections("/live/s.flv"), 1)

        exp = int(time.time()) + 600
        self.plays(edge, signed("/c/s.flv", exp))
        self.assertEqual(self.status(edge, "/c/s.flv")[0], 403)
        self.assertEqual(self.status(edge, signed("/c/s.flv", exp - 1200))[0], 410)
        self.assertEqual(self.status(edge, signed("/c/s.flv", exp), {"User-Agent": "AhrefsBot"})[0], 403)
        self.assertEqual(self.status(edge, signed("/c/s.flv", exp), source="127.0.0.3")[0], 403)


if __name__ == "__main__":
    unittest.main()
