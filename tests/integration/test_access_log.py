"""
The access log (docs/configuration.md): one line per answer in the combined-like format, every
string field escaped as nginx's escape=default does, and requests that failed to parse logged too.
"""

import os
import re
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import T, EdgeTestCase, HttpConn, raw_exchange, status_of, wait_until

# client - - [time] "request" status bytes "referer" "user-agent" duration cache resource extra
LINE = re.compile(r'^(\S+) - - \[([^\]]+)\] "((?:[^"\\]|\\x[0-9A-F]{2})*)" (\d{3}) (\d+) '
                  r'"((?:[^"\\]|\\x[0-9A-F]{2})*)" "((?:[^"\\]|\\x[0-9A-F]{2})*)" '
                  r'(\d+\.\d{3}) (\S+) (\S+)((?: [a-z]+="(?:[^"\\]|\\x[0-9A-F]{2})*")*)$')

ECHO_LOG = r'''
return {
  log = function(req, res) return { ua = req.headers.user_agent } end,
}
'''


class AccessLogTest(EdgeTestCase):
    def setUp(self):
        self.edge = self.start_edge({
            "access_log": "access.log",
            "access_log_format": "combined",
            "limits": {"max_header_size": 1024},
            "resources": [{"name": "pub", "prefix": "/", "type": "static", "root": "pub",
                           "policy": "log.lua"}],
        }, files={"pub/index.html": "public\n", "log.lua": ECHO_LOG})
        self.path = os.path.join(self.edge.dir, "access.log")

    def lines(self):
        try:
            with open(self.path, "rb") as f:
                return f.read().split(b"\n")[:-1]
        except OSError:
            return []

    def logged(self, n):
        """The first n lines, once there are n; each must be printable ASCII in the format."""
        wait_until(lambda: len(self.lines()) >= n, T(10), "%d access-log lines" % n)
        out = []
        for raw in self.lines()[:n]:
            self.assertTrue(all(0x20 <= b < 0x7F for b in raw), "raw bytes in the log: %r" % raw)
            ln = raw.decode("ascii")
            m = LINE.match(ln)
            self.assertIsNotNone(m, "a line out of format: %r" % ln)
            out.append(m)
        return out

    def test_quotes_backslashes_and_raw_bytes_are_escaped(self):
        ua = 'evil" 200 1 "-" "forged\\ \tcaf\xe9'.encode("latin-1") + b"\xc3\xa9"
        raw = (b"GET /?q=%22x%22 HTTP/1.1\r\nHost: a.example\r\nUser-Agent: " + ua +
               b"\r\nReferer: http://r.example/\x80\r\nConnection: close\r\n\r\n")
        data, _ = raw_exchange(self.edge.port, raw, T(5))
        self.assertEqual(status_of(data), 200, data[:300])
        m = self.logged(1)[0]
        self.assertEqual(m.group(3), "GET /?q=%22x%22 HTTP/1.1")
        self.assertEqual(m.group(4), "200")
        self.assertEqual(m.group(6), r"http://r.example/\x80")
        want = r"evil\x22 200 1 \x22-\x22 \x22forged\x5C \x09caf\xE9\xC3\xA9"
        self.assertEqual(m.group(7), want)
        self.assertEqual(m.group(10), "pub")
        # The policy's own field is escaped the same way.
        self.assertEqual(m.group(11), ' ua="%s"' % want)

    def test_requests_that_fail_to_parse_are_logged(self):
        cases = [(b"THIS IS NOT HTTP\r\n\r\n", 400, "-"),
                 (b"GET /a HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, "GET /a HTTP/1.1"),
                 (b"GET /b HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n", 431, "GET /b HTTP/1.1"),
                 (b"GET /c HTTP/2.0\r\nHost: x\r\n\r\n", 505, "GET /c HTTP/2.0"),
                 (b"GET /d HTTP/1.2\r\nHost: x\r\n\r\n", 505, "GET /d HTTP/1.2"),
                 (b"GET /e\x01 HTTP/1.1\r\n\r\n", 400, "GET - -")]
        for raw, status, _ in cases:
            data, closed = raw_exchange(self.edge.port, raw, T(5))
            self.assertEqual(status_of(data), status, data[:300])
            self.assertTrue(closed)
        # Each loop hands its own lines to the writer: across loops, lines keep no order.
        got = sorted((int(m.group(4)), m.group(3)) for m in self.logged(len(cases)))
        self.assertEqual(got, sorted((status, request) for _, status, request in cases))
        # And the edge goes on logging answers.
        c = HttpConn(self.edge.port, "/", headers={"Connection": "close"})
        self.addCleanup(c.close)
        self.assertEqual(c.read_head(T(5)).status, 200)
        self.assertIn(200, [int(m.group(4)) for m in self.logged(len(cases) + 1)])


if __name__ == "__main__":
    unittest.main()
