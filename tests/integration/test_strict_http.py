"""
Strict HTTP on the client side: a request is what its head says and nothing else. Trailers and
bodies are never headers; CONNECT and Upgrade get one answer; Host is required once in HTTP/1.1; a
header name is a token; versions other than 1.0 and 1.1 are 505; the OPTIONS preflight answers in
full.
"""

import re
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import T, EdgeTestCase, HttpConn, raw_exchange, status_of

# What the request looked like to the policy: the headers a client could try to forge.
ECHO = r'''
return {
  access = function(req)
    local h = req.headers
    return 418, table.concat({ req.host, h.x_trailer or "-", h.x_body or "-" }, "|") .. "\n"
  end,
}
'''

STATUS_LINE = re.compile(rb"(?:^|\n)HTTP/1\.[01] (\d{3}) ")


def responses_in(data):
    """The statuses of every response head in data (bodies here never look like a status line)."""
    return [int(s) for s in STATUS_LINE.findall(data)]


class StrictRequestTest(EdgeTestCase):
    def setUp(self):
        self.edge = self.start_edge({"resources": [
            {"name": "secret", "host": "secret.example", "prefix": "/", "type": "static",
             "root": "secret"},
            {"name": "pub", "host": "*", "prefix": "/", "type": "static", "root": "pub"},
            {"name": "echo", "host": "*", "prefix": "/echo/", "type": "static", "root": "pub",
             "policy": "echo.lua"},
        ]}, files={"secret/index.html": "secret\n", "pub/index.html": "public\n",
                   "echo.lua": ECHO})

    def exchange(self, raw):
        data, closed = raw_exchange(self.edge.port, raw, T(5))
        return data, closed

    # -- trailers and bodies -------------------------------------------------------------------

    def test_trailer_host_does_not_route(self):
        # HTTP/1.0 needs no Host: the only Host here is a trailer, and it must not pick the
        # host-restricted resource.
        raw = (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\nHost: secret.example\r\n\r\n")
        data, _ = self.exchange(raw)
        self.assertEqual(status_of(data), 200, data[:300])
        self.assertTrue(data.endswith(b"\r\n\r\npublic\n"), "routed by a trailer: %r" % data[-200:])

    def test_trailers_are_not_headers_for_policies(self):
        raw = (b"GET /echo/ HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n0\r\nX-Trailer: forged\r\nX-Body: forged\r\n\r\n")
        data, _ = self.exchange(raw)
        self.assertEqual(status_of(data), 418, data[:300])
        self.assertTrue(data.endswith(b"\r\n\r\na.example|-|-\n"), "a trailer seen as a header: %r"
                        % data[-200:])

    def test_body_of_a_get_is_not_headers(self):
        body = b"X-Body: forged\r\nX-Trailer: forged\r\n\r\n"
        raw = (b"GET /echo/ HTTP/1.1\r\nHost: a.example\r\nContent-Length: %d\r\n"
               b"Connection: close\r\n\r\n%s" % (len(body), body))
        data, _ = self.exchange(raw)
        self.assertEqual(responses_in(data), [418], data[:300])
        self.assertTrue(data.endswith(b"\r\n\r\na.example|-|-\n"), "the body seen as headers: %r"
                        % data[-200:])

    # -- CONNECT and Upgrade: one answer, then close ------------------------------------------

    def test_connect_gets_one_answer_and_a_close(self):
        data, closed = self.exchange(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n")
        self.assertEqual(responses_in(data), [405], data[:400])
        self.assertTrue(closed, "connection left open after CONNECT")

    def test_upgrade_gets_one_answer_and_a_close(self):
        data, closed = self.exchange(b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\n"
                                     b"Upgrade: websocket\r\n\r\n")
        self.assertEqual(responses_in(data), [200], data[:400])
        self.assertTrue(data.endswith(b"\r\n\r\npublic\n"), data[-200:])
        self.assertTrue(closed, "connection left open after an Upgrade request")

    # -- Host, header names, versions ----------------------------------------------------------

    def assert_refused(self, raw, status):
        data, closed = self.exchange(raw)
        self.assertEqual(responses_in(data), [status], "response %r" % data[:300])
        self.assertTrue(closed, "connection left open after a %d" % status)

    def test_http11_without_host_is_400(self):
        self.assert_refused(b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400)
        # HTTP/1.0 needs none.
        data, _ = self.exchange(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(status_of(data), 200, data[:300])

    def test_two_host_headers_are_400(self):
        self.assert_refused(b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: secret.example\r\n\r\n", 400)
        self.assert_refused(b"GET / HTTP/1.0\r\nHost: a.example\r\nhost: a.example\r\n\r\n", 400)

    def test_space_before_the_colon_is_400(self):
        self.assert_refused(b"GET / HTTP/1.1\r\nHost : secret.example\r\n\r\n", 400)
        self.assert_refused(b"GET / HTTP/1.1\r\nHost: a.example\r\nX-A\t: 1\r\n\r\n", 400)

    def test_other_http_versions_are_505(self):
        for version in (b"HTTP/2.0", b"HTTP/1.2", b"HTTP/3.0", b"HTTP/0.9"):
            with self.subTest(version=version):
                raw = b"GET / %s\r\nHost: a.example\r\n\r\n" % version
                data, closed = self.exchange(raw)
                self.assertEqual(responses_in(data), [505], "response %r" % data[:300])
                self.assertIn(b" 505 HTTP Version Not Supported\r\n", data)
                self.assertTrue(closed, "connection left open after a 505")
        # No version at all is HTTP/0.9.
        self.assert_refused(b"GET /\r\n\r\n", 505)
        # A malformed version is a bad request.
        self.assert_refused(b"GET / HTTP/x.1\r\nHost: a.example\r\n\r\n", 400)

    def test_keep_alive_still_works(self):
        c = HttpConn(self.edge.port, "/", headers={"Host": "a.example"})
        self.addCleanup(c.close)
        for _ in range(2):
            r = c.read_head(T(5))
            self.assertEqual(r.status, 200, r)
            self.assertEqual(c.read_body_all(T(5)), b"public\n")
            c.send(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        self.assertEqual(c.read_head(T(5)).status, 200)

    # -- OPTIONS -------------------------------------------------------------------------------

    def test_options_allow_headers_default_is_whole(self):
        r = self.get(self.edge, "/", method="OPTIONS", headers={"Origin": "http://player.example"})
        self.assertStatus(r, 204)
        self.assertEqual(r.header("Access-Control-Allow-Headers"), "range, accept, origin, content-type")
        self.assertEqual(r.body, b"")
        r = self.get(self.edge, "/", method="OPTIONS", headers={
            "Access-Control-Request-Headers": "x-token, range"})
        self.assertEqual(r.header("Access-Control-Allow-Headers"), "x-token, range")


if __name__ == "__main__":
    unittest.main()
