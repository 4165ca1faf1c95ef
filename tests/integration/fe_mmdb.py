"""A tiny MaxMind DB writer for tests: country.iso_code per network, following the MaxMind DB spec
(IPv6 search tree, 24-bit records, IPv4 networks under ::/96). Standard library only.

    write_country_db(path, {"127.0.0.2/32": "DE", "10.0.0.0/8": "US", "2001:db8::/32": "FR"})

Check a file with: mmdblookup --file PATH --ip 127.0.0.2 country iso_code
"""
import ipaddress
import struct
import time


def _ctrl(type_, size):
    """Control byte(s) for a data field of `type_` and payload `size` (< 29)."""
    assert size < 29
    if type_ <= 7:
        return bytes([(type_ << 5) | size])
    return bytes([size, type_ - 7])


def _string(s):
    b = s.encode()
    return _ctrl(2, len(b)) + b


def _uint(type_, value, width):
    b = value.to_bytes(width, "big").lstrip(b"\0")
    return _ctrl(type_, len(b)) + b


def _map(pairs):
    out = _ctrl(7, len(pairs))
    for k, v in pairs:
        out += _string(k) + v
    return out


def _country_record(code):
    return _map([("country", _map([("iso_code", _string(code))]))])


class _Node:
    __slots__ = ("rec", "index")

    def __init__(self):
        self.rec = [None, None]  # None: empty; _Node; or int: data offset
        self.index = None


def _bits(network):
    """The network as 128-bit prefix bits (IPv4 mapped under ::/96)."""
    if network.version == 4:
        value, plen = int(network.network_address), 96 + network.prefixlen
    else:
        value, plen = int(network.network_address), network.prefixlen
    return [(value >> (127 - i)) & 1 for i in range(plen)]


def write_country_db(path, networks):
    data = b""
    offsets = {}
    root = _Node()
    # Broader networks first, so narrower ones split them.
    nets = sorted(((ipaddress.ip_network(n, strict=False), c) for n, c in networks.items()),
                  key=lambda nc: (nc[0].version, nc[0].prefixlen))
    for net, code in nets:
        if code not in offsets:
            offsets[code] = len(data)
            data += _country_record(code)
        bits = _bits(net)
        node = root
        for depth, bit in enumerate(bits):
            last = depth == len(bits) - 1
            if last:
                node.rec[bit] = offsets[code]
                break
            child = node.rec[bit]
            if not isinstance(child, _Node):
                split = _Node()
                split.rec = [child, child]  # an enclosing network (or nothing) covers both halves
                node.rec[bit] = split
                child = split
            node = child
    # Number the nodes breadth first.
    order, queue = [], [root]
    while queue:
        n = queue.pop(0)
        n.index = len(order)
        order.append(n)
        queue.extend(r for r in n.rec if isinstance(r, _Node))
    count = len(order)

    def record(r):
        if r is None:
            return count
        if isinstance(r, _Node):
            return r.index
        return count + 16 + r

    tree = b"".join(record(n.rec[0]).to_bytes(3, "big") + record(n.rec[1]).to_bytes(3, "big")
                    for n in order)
    meta = _map([
        ("binary_format_major_version", _uint(5, 2, 2)),
        ("binary_format_minor_version", _uint(5, 0, 2)),
        ("build_epoch", _uint(9, int(time.time()), 8)),
        ("database_type", _string("flvedge-test-country")),
        ("description", _map([("en", _string("flvedge test data"))])),
        ("ip_version", _uint(5, 6, 2)),
        ("languages", _ctrl(11, 1) + _string("en")),
        ("node_count", _uint(6, count, 4)),
        ("record_size", _uint(5, 24, 2)),
    ])
    with open(path, "wb") as f:
        f.write(tree + b"\0" * 16 + data + b"\xab\xcd\xefMaxMind.com" + meta)


if __name__ == "__main__":
    import sys
    write_country_db(sys.argv[1], dict(a.split("=") for a in sys.argv[2:]))
