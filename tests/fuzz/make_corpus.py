#!/usr/bin/env python3
"""Writes the binary seed inputs of tests/fuzz/corpus/fuzz_flv/, fuzz_origin/, fuzz_range/,
fuzz_tls/, fuzz_vod/ and fuzz_h2/ (run from anywhere; rewrites only those seed-* files, never the
regress-* inputs next to them; the TLS hellos differ at every run, their random fields). Each seed is
a small valid or nearly valid input of the layout its target's top comment describes. The other
targets' seeds are text, written by hand."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def tag(kind, ts, payload):
    head = bytes([kind]) + struct.pack(">I", len(payload))[1:] + struct.pack(">I", ts)[1:] + \
        bytes([ts >> 24 & 0xff]) + b"\0\0\0"
    return head + payload + struct.pack(">I", 11 + len(payload))


def flv(tags=True):
    out = b"FLV\x01\x05\x00\x00\x00\x09" + b"\0\0\0\0"
    if tags:
        out += tag(18, 0, b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09")
        out += tag(9, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff")  # AVC sequence header
        out += tag(8, 0, b"\xaf\x00\x12\x10")                          # AAC sequence header
        out += tag(9, 0, b"\x17\x01\x00\x00\x00" + b"\x00" * 80)        # keyframe
        out += tag(8, 23, b"\xaf\x01" + b"\x21" * 16)
        out += tag(9, 40, b"\x27\x01\x00\x00\x00" + b"\x00" * 12)       # inter frame
        out += tag(9, 80, b"\x9c\x76\x76\x63\x31" + b"\x00" * 8)        # enhanced HEVC coded frames
    return out


def chunked(body, size=64):
    out = b""
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def response(status, headers, body):
    head = b"HTTP/1.1 %d X\r\n" % status + b"".join(b"%s: %s\r\n" % h for h in headers)
    return head + b"\r\n" + body


FLV_TYPE = (b"Content-Type", b"video/x-flv")


def origin_seeds():
    body = flv()
    # [split seed] [options] [tag index]: options 0x02 is a 1 MiB tag limit, nothing else.
    return {
        "seed-chunked": b"\x07\x02\x00" + response(200, [FLV_TYPE, (b"Transfer-Encoding", b"chunked")],
                                                    chunked(body)),
        "seed-length": b"\x00\x02\x00" + response(200, [FLV_TYPE, (b"Content-Length", b"%d" % len(body))],
                                                   body),
        "seed-close": b"\x05\x02\x00" + response(200, [FLV_TYPE, (b"Connection", b"close")], body),
        "seed-failover": b"\x00\x06\x00" + response(503, [(b"Content-Type", b"text/plain"),
                                                          (b"Content-Length", b"5")], b"busy\n")
        + b"#next#" + response(200, [FLV_TYPE], body),
        "seed-404": b"\x03\x02\x00" + response(404, [(b"Transfer-Encoding", b"chunked")],
                                               chunked(b"no such stream\n", 4)),
        "seed-html": b"\x00\x02\x00" + response(200, [(b"Content-Type", b"text/html")], b"<html>hi</html>"),
        "seed-truncated": b"\x00\x02\x00" + response(200, [FLV_TYPE], body[:-7]),
        "seed-small-limit": b"\x09\x00\x00" + response(200, [FLV_TYPE], body),
        "seed-close-in-tag": b"\x00\x42\x02" + response(200, [FLV_TYPE], body),
        "seed-no-eof": b"\x0b\x12\x00" + response(200, [FLV_TYPE], body),
    }


def flv_seeds():
    # [max tag size] [split pattern] FLV...
    return {"seed-stream": b"\x40\x35" + flv(), "seed-header-only": b"\x80\x01" + flv(False)}


def amf_str(s):
    return struct.pack(">H", len(s)) + s


def amf_numbers(values):
    return b"\x0a" + struct.pack(">I", len(values)) + b"".join(b"\x00" + struct.pack(">d", v) for v in values)


def keyframes_flv(wrap):
    # onMetaData with duration and keyframes, sequence headers, then two keyframes the index points at.
    frames = [tag(9, 0, b"\x17\x01\x00\x00\x00" + b"\x00" * 20), tag(8, 10, b"\xaf\x01" + b"\x21" * 8),
              tag(9, 1000, b"\x17\x01\x00\x00\x00" + b"\x00" * 20)]
    seq = tag(9, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff") + tag(8, 0, b"\xaf\x00\x12\x10")

    def meta(positions):
        body = (b"\x02" + amf_str(b"@setDataFrame") if wrap else b"") + b"\x02" + amf_str(b"onMetaData")
        body += b"\x08\x00\x00\x00\x03" + amf_str(b"duration") + b"\x00" + struct.pack(">d", 2.0)
        body += amf_str(b"title") + b"\x02" + amf_str(b"seed") + amf_str(b"keyframes") + b"\x03"
        body += amf_str(b"times") + amf_numbers([0.0, 1.0])
        body += amf_str(b"filepositions") + amf_numbers(positions) + b"\x00\x00\x09\x00\x00\x09"
        return tag(18, 0, body)

    prefix_end = 13 + len(meta([0.0, 0.0])) + len(seq)
    positions = [float(prefix_end), float(prefix_end + len(frames[0]) + len(frames[1]))]
    return flv(False) + meta(positions) + seq + b"".join(frames)


def range_seeds():
    # [selector] then: 0 [max] a Range value; 1 conditionals split at \n; 2 a date; 3 FLV bytes
    seeds = {
        "seed-range-rfc": b"\x00\x10bytes=0-499,-500,9500-",
        "seed-range-coalesce": b"\x00\x10bytes=500-600,601-999, ,0-0",
        "seed-range-overflow": b"\x00\x02bytes=18446744073709551615-,-18446744073709551616",
        "seed-cond-etags": b"\x01\"abc\", W/\"xyz\"\n*\n\n\n\"abc\"\nW/\"abc\"\nSun, 06 Nov 1994 08:49:37 GMT",
        "seed-cond-dates": b"\x01\n\nSun, 06 Nov 1994 08:49:37 GMT\nSunday, 06-Nov-94 08:49:37 GMT\n"
                           b"Sun Nov  6 08:49:37 1994\n\"e\"\nSun, 06 Nov 1994 08:49:37 GMT",
        "seed-date-imf": b"\x02Sun, 06 Nov 1994 08:49:37 GMT",
        "seed-date-rfc850": b"\x02Sunday, 06-Nov-94 08:49:37 GMT",
        "seed-date-asctime": b"\x02Sun Nov  6 08:49:37 1994",
        "seed-meta": b"\x03" + keyframes_flv(False),
        "seed-meta-setdataframe": b"\x03" + keyframes_flv(True),
    }
    # The head of ffmpeg's file (metadata with a keyframes index, sequence headers, first frame).
    with open(os.path.join(HERE, "..", "media", "keyframes.flv"), "rb") as f:
        seeds["seed-meta-ffmpeg"] = b"\x03" + f.read(3000)
    return seeds


def tls_seeds():
    # [split] then what a client sends an HTTPS listener: real ClientHellos (Python's ssl over
    # memory BIOs: SNI for the wildcard, the default and no name; ALPN h2 and http/1.1; TLS 1.3's
    # hello, which the server answers at 1.2), a plain HTTP request, and a record that is no hello.
    import ssl

    def hello(sni, alpn=None, maxv=ssl.TLSVersion.TLSv1_2):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = maxv
        if alpn:
            ctx.set_alpn_protocols(alpn)
        i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
        s = ctx.wrap_bio(i, o, server_hostname=sni)
        try:
            s.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return o.read()

    return {
        "seed-hello-wild-alpn": b"\x07" + hello("a.w.test", ["h2", "http/1.1"]),
        "seed-hello-wild-pieces": b"\x02" + hello("b.w.test", ["http/1.1"]),
        "seed-hello-default": b"\x07" + hello("fuzz.test"),
        "seed-hello-no-sni": b"\x07" + hello(None, ["h2"]),
        "seed-hello-tls13": b"\x05" + hello("x.w.test", ["h2"], ssl.TLSVersion.TLSv1_3),
        "seed-plain-http": b"\x07GET / HTTP/1.1\r\nHost: fuzz.test\r\n\r\n",
        "seed-alert": b"\x07\x15\x03\x03\x00\x02\x02\x28",
    }


def vod_seeds():
    # [selector] then: 0 a Content-Range value; 1 a .meta record as fe_vod writes it
    meta = (b"flvedge-vod 2\nkey http://127.0.0.1:8080/media/a.flv\npath /videos/a.flv\nsize 5244114\n"
            b"slice 65536\nstored 1764500000.123\nexpires 1764503600.123\netag \"5244114-17\"\n"
            b"last_modified Sun, 06 Nov 1994 08:49:37 GMT\ncontent_type video/x-flv\nversion 0000002a\n")
    return {
        "seed-range": b"\x00bytes 0-65535/5244114",
        "seed-range-last": b"\x00Bytes 5242880-5244113/5244114",
        "seed-range-limit": b"\x00bytes 0-0/18446744073709551615",
        "seed-meta": b"\x01" + meta,
        "seed-meta-no-validators": b"\x01" + meta.replace(b"etag \"5244114-17\"\n", b"etag \n"),
        # the old reader kept the first key's copy and leaked it
        "seed-meta-key-twice": b"\x01" + meta.replace(b"path ", b"key http://other/\npath "),
        "seed-meta-10tib": b"\x01" + meta.replace(b"size 5244114", b"size 10995116277760")
                                          .replace(b"slice 65536", b"slice 10485760"),
    }


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_request(stream, path, method=b"\x82", end=True, authority=b"a"):
    """A HEADERS frame of a request, HPACK by hand: :method from the static table (0x82 GET,
    0x83 POST; a literal otherwise), :scheme http, :path and :authority as literals."""
    block = method + b"\x86" + b"\x04" + bytes([len(path)]) + path + b"\x01" + bytes([len(authority)]) + authority
    return h2_frame(1, 0x04 | (0x01 if end else 0), stream, block)


def h2_seeds():
    settings = h2_frame(4, 0, 0, b"\x00\x03\x00\x00\x00\x64" + b"\x00\x04\x00\x00\xff\xff")
    ack = h2_frame(4, 1, 0)
    head = b"\x02\x04" + b"HEAD"  # a literal :method (name index 2)
    upgrade = (b"GET /seed-get-static HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    split = h2_request(3, b"/seed-get-static")
    block = split[9:]
    return {
        # mode 0x07: the preface is sent by the target, pieces up to 64 KiB
        "seed-get-static": b"\x07" + settings + h2_request(1, b"/seed-get-static"),
        "seed-get-live": b"\x07" + settings + h2_request(1, b"/live/s.flv"),
        "seed-get-file": b"\x07" + settings + h2_request(1, b"/file/s.flv"),
        "seed-file-window": b"\x07" + settings + h2_request(1, b"/file/s.flv") + h2_request(3, b"/file/s.flv") +
                            h2_frame(8, 0, 0, b"\x00\x10\x00\x00") + h2_frame(8, 0, 1, b"\x00\x10\x00\x00"),
        "seed-status": b"\x07" + settings + h2_request(1, b"/_flvedge/"),
        "seed-head": b"\x07" + settings + h2_request(1, b"/seed-get-static", method=head),
        "seed-many": b"\x07" + settings + ack + b"".join(
            h2_request(i, b"/seed-get-static") for i in range(1, 40, 2)),
        "seed-control": b"\x07" + settings + h2_request(1, b"/live/s.flv", end=False) +
                        h2_frame(6, 0, 0, b"12345678") + h2_frame(8, 0, 0, b"\x00\x01\x00\x00") +
                        h2_frame(8, 0, 1, b"\x00\x01\x00\x00") + h2_frame(3, 0, 1, b"\x00\x00\x00\x08") +
                        h2_frame(7, 0, 0, b"\x00\x00\x00\x01\x00\x00\x00\x00"),
        "seed-continuation": b"\x07" + settings + h2_frame(1, 0x01, 3, block[:5]) +
                             h2_frame(9, 0, 3, block[5:9]) + h2_frame(9, 0x04, 3, block[9:]),
        "seed-post-body": b"\x07" + settings + h2_request(1, b"/seed-get-static", method=b"\x83", end=False) +
                          h2_frame(0, 0x01, 1, b"body"),
        # bit 7: a small socket buffer on the server's side, the client reading late
        "seed-file-slow": b"\x85" + settings + h2_request(1, b"/file/s.flv") + h2_request(3, b"/file/s.flv") +
                          h2_request(5, b"/seed-get-static") + h2_frame(6, 0, 0, b"12345678") * 4,
        # bit 3: as they are (an Upgrade, then the client's preface), in pieces of 1 byte
        "seed-upgrade": b"\x08" + upgrade + preface + settings + h2_request(3, b"/live/s.flv"),
        "seed-upgrade-64": b"\x0c" + upgrade + preface + settings,
    }


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("fuzz_flv", flv_seeds())
    write("fuzz_h2", h2_seeds())
    write("fuzz_origin", origin_seeds())
    write("fuzz_range", range_seeds())
    write("fuzz_tls", tls_seeds())
    write("fuzz_vod", vod_seeds())
