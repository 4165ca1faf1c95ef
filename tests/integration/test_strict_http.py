"""
Strict HTTP on the client side: a request is what its head says and nothing else. Trailers and
bodies are never headers.
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


if __name__ == "__main__":
    unittest.main()
