local util = require "flvedge.util"

describe("flvedge.util", function()
  it("runs under LuaJIT", function()
    assert.is_table(jit, "these specs must run under LuaJIT (see tests/lua/run_busted.sh)")
    assert.is_truthy(jit.version:find("LuaJIT"))
  end)

  describe("parse_query", function()
    it("decodes percent escapes and + in names and values", function()
      local a = util.parse_query("a=1&b=x%20y+z&c%3D=%2Fp&d")
      assert.same({ a = "1", b = "x y z", ["c="] = "/p", d = "" }, a)
    end)

    it("lets the last value of a name win", function()
      assert.equal("3", util.parse_query("a=1&a=2&a=3").a)
    end)

    it("keeps everything after the first = in the value", function()
      assert.equal("b=c==", util.parse_query("a=b=c==").a)
    end)

    it("never raises on garbage", function()
      local inputs = { "", "&&&", "=", "==&=x", "%", "%zz=%4", "a=%", "\0=\255", "a&&b", "%%%%",
        ("&"):rep(1000), nil, 42, {}, true }
      for i = 1, 15 do
        local ok, r = pcall(util.parse_query, inputs[i])
        assert.is_true(ok, tostring(inputs[i]))
        assert.is_table(r)
      end
      assert.same({}, util.parse_query("=x&&="))
      assert.same({ ["%zz"] = "%4" }, util.parse_query("%zz=%4"))
      assert.same({ a = "", b = "" }, util.parse_query("a&&b"))
    end)
  end)

  it("unescape leaves + alone unless asked, and bad escapes as sent", function()
    assert.equal("a+b c", util.unescape("a+b%20c"))
    assert.equal("a b c", util.unescape("a+b%20c", true))
    assert.equal("%g1%", util.unescape("%g1%"))
    assert.is_nil(util.unescape(nil))
  end)

  it("split keeps empty fields and takes plain separators", function()
    assert.same({ "a", "", "b" }, util.split("a,,b", ","))
    assert.same({ "a", "b" }, util.split("a.b", "."))
    assert.same({ "" }, util.split("", ","))
    assert.same({ "x", "y" }, util.split("x::y", "::"))
  end)

  it("trim", function()
    assert.equal("a b", util.trim("  a b \t\n"))
    assert.equal("", util.trim("   "))
  end)

  describe("query_arg (the server's req.args[name], in C)", function()
    it("gives what parse_query gives for every name", function()
      local queries = { "a=1&b=x%20y+z&c%3D=%2Fp&d", "a=1&a=2&a=3", "a=b=c==", "", "&&&", "=",
        "==&=x", "%", "%zz=%4", "a=%", "\0=\255", "a&&b", "%%%%", "a+b=%41&a%20b=2", "%61=1&a=2",
        "x=%4", "x=%4g", "k=%2B+", "=v&k", ("a=1&"):rep(50) .. "a=last" }
      for _, q in ipairs(queries) do
        local want = util.parse_query(q)
        for name, v in pairs(want) do
          assert.equal(v, util.query_arg(q, name), q .. " [" .. name .. "]")
        end
        for _, name in ipairs({ "", "zz", "a ", "A", "a=" }) do
          assert.equal(want[name], util.query_arg(q, name), q .. " [" .. name .. "]")
        end
      end
    end)

    it("is nil for anything that is not a string", function()
      assert.is_nil(util.query_arg(nil, "a"))
      assert.is_nil(util.query_arg("a=1", 1))
    end)
  end)

  describe("digits, blank, dir_of", function()
    it("digits: 1 to 15 decimal digits only", function()
      for _, s in ipairs({ "0", "1700000000", ("9"):rep(15) }) do assert.is_true(util.digits(s), s) end
      for _, s in ipairs({ "", ("9"):rep(16), "12a", " 1", "-1", "+1", "0x1", "1.5", "1e3" }) do
        assert.is_false(util.digits(s), s)
      end
      assert.is_false(util.digits(nil))
    end)

    it("blank: empty or %s only", function()
      assert.is_true(util.blank(""))
      assert.is_true(util.blank(" \t\n\v\f\r"))
      assert.is_false(util.blank(" x "))
      assert.is_false(util.blank("\0"))
    end)

    it("dir_of: up to the last / when a name follows it", function()
      assert.equal("/a/b/", util.dir_of("/a/b/c.flv"))
      assert.equal("/", util.dir_of("/c.flv"))
      assert.equal("a/", util.dir_of("a/b"))
      assert.is_nil(util.dir_of("/a/b/"))
      assert.is_nil(util.dir_of("c.flv"))
      assert.is_nil(util.dir_of(""))
    end)
  end)

  describe("base64url", function()
    it("encodes every tail length, with and without padding", function()
      assert.equal("", util.base64url_encode(""))
      assert.equal("Zg", util.base64url_encode("f"))
      assert.equal("Zg==", util.base64url_encode("f", true))
      assert.equal("Zm8", util.base64url_encode("fo"))
      assert.equal("Zm8=", util.base64url_encode("fo", true))
      assert.equal("Zm9v", util.base64url_encode("foo"))
      assert.equal("Zm9vYmFy", util.base64url_encode("foobar"))
      assert.equal("-_8", util.base64url_encode("\251\255"))
    end)

    it("round-trips all byte values and long input", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      local s = table.concat(all):rep(20)
      assert.equal(s, util.base64url_decode(util.base64url_encode(s)))
      assert.equal(s, util.base64url_decode(util.base64url_encode(s, true)))
    end)

    it("decodes with or without padding", function()
      assert.equal("fo", util.base64url_decode("Zm8"))
      assert.equal("fo", util.base64url_decode("Zm8="))
      assert.equal("f", util.base64url_decode("Zg=="))
      assert.equal("", util.base64url_decode(""))
    end)

    it("returns nil on invalid input", function()
      for _, bad in ipairs({ "Z", "Zm9v+", "Zm9/", "Zm9v Zm9v", "Zg=", "Zg===", "Zm8==", "====",
        "Zm9vY", "Z===", "Zh", "Zm9", "Zm8=x", "é" }) do
        assert.is_nil(util.base64url_decode(bad), bad)
      end
      assert.is_nil(util.base64url_decode(nil))
      assert.is_nil(util.base64url_decode(12))
    end)
  end)

  it("hex", function()
    assert.equal("00ff10", util.hex("\0\255\16"))
    assert.equal("", util.hex(""))
  end)

  it("ct_equal compares whole strings", function()
    assert.is_true(util.ct_equal("abc", "abc"))
    assert.is_true(util.ct_equal("", ""))
    assert.is_false(util.ct_equal("abc", "abd"))
    assert.is_false(util.ct_equal("ab", "abc"))
    assert.is_false(util.ct_equal("abcd", "abc"))
    assert.is_false(util.ct_equal("", "abc"))
    assert.is_false(util.ct_equal("abc", ""))
    assert.is_false(util.ct_equal("abcabc", "abc"))
    assert.is_false(util.ct_equal(nil, "abc"))
    assert.is_false(util.ct_equal("abc", 1))
  end)

  describe("digests (libmbedcrypto)", function()
    it("md5 known answers", function()
      assert.equal("d41d8cd98f00b204e9800998ecf8427e", util.hex(util.md5("")))
      assert.equal("900150983cd24fb0d6963f7d28e17f72", util.hex(util.md5("abc")))
      assert.equal(16, #util.md5(("x"):rep(100000)))
    end)

    it("sha256 known answers", function()
      assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        util.hex(util.sha256("abc")))
      assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        util.hex(util.sha256("")))
    end)

    it("hmac_sha256 known answers (RFC 4231 case 2 and the Wikipedia example)", function()
      assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        util.hex(util.hmac_sha256("Jefe", "what do ya want for nothing?")))
      assert.equal("f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
        util.hex(util.hmac_sha256("key", "The quick brown fox jumps over the lazy dog")))
    end)

    it("handles NUL bytes inside the input", function()
      assert.are_not.equal(util.md5("a\0b"), util.md5("a\0c"))
      assert.are_not.equal(util.hmac_sha256("k\0x", "m"), util.hmac_sha256("k\0y", "m"))
    end)
  end)

  describe("CIDR", function()
    it("matches IPv4 networks and bare addresses", function()
      local list = util.compile_cidrs({ "10.0.0.0/8", "192.168.1.7", "172.16.0.0/12" })
      assert.is_true(util.ip_in(list, "10.255.1.2"))
      assert.is_true(util.ip_in(list, "192.168.1.7"))
      assert.is_false(util.ip_in(list, "192.168.1.8"))
      assert.is_true(util.ip_in(list, "172.31.255.255"))
      assert.is_false(util.ip_in(list, "172.32.0.0"))
      assert.is_false(util.ip_in(list, "11.0.0.1"))
    end)

    it("ignores host bits below the prefix", function()
      local m = assert(util.parse_cidr("10.1.2.3/8"))
      assert.is_true(m:match("10.200.0.1"))
    end)

    it("matches IPv6 networks, at odd prefix lengths too", function()
      local list = util.compile_cidrs({ "2001:db8::/32", "fe80::/10", "::1/128", "2001:db9:8000::/33" })
      assert.is_true(util.ip_in(list, "2001:db8:ffff::1"))
      assert.is_true(util.ip_in(list, "2001:DB8::abcd"))
      assert.is_false(util.ip_in(list, "2001:db7::1"))
      assert.is_true(util.ip_in(list, "febf::1"))
      assert.is_false(util.ip_in(list, "fec0::1"))
      assert.is_true(util.ip_in(list, "::1"))
      assert.is_false(util.ip_in(list, "::2"))
      assert.is_true(util.ip_in(list, "2001:db9:8000::5"))
      assert.is_false(util.ip_in(list, "2001:db9:7fff::5"))
      assert.is_true(util.ip_in(list, "fe80::1%eth0"))
    end)

    it("an IPv4 rule matches the IPv4-mapped IPv6 form, and only that", function()
      local list = util.compile_cidrs({ "1.2.3.0/24" })
      assert.is_true(util.ip_in(list, "::ffff:1.2.3.4"))
      assert.is_true(util.ip_in(list, "::ffff:102:304"))
      assert.is_false(util.ip_in(list, "::1.2.3.4"))
      assert.is_false(util.ip_in(list, "2001:db8::1.2.3.4"))
      local all4 = util.compile_cidrs({ "0.0.0.0/0" })
      assert.is_true(util.ip_in(all4, "8.8.8.8"))
      assert.is_false(util.ip_in(all4, "2001:db8::1"))
      local all = util.compile_cidrs({ "::/0" })
      assert.is_true(util.ip_in(all, "2001:db8::1"))
    end)

    it("an unparsable client address is in no list", function()
      local list = util.compile_cidrs({ "0.0.0.0/0", "::/0" })
      for _, bad in ipairs({ "", "x", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.4:80", "::g", nil }) do
        assert.is_false(util.ip_in(list, bad), tostring(bad))
      end
    end)

    it("rejects bad CIDRs with the reason", function()
      for _, bad in ipairs({ "10.0.0.0/33", "::/129", "10.0.0/8", "x", "", "10.0.0.0/", "10.0.0.0/-1",
        "10.0.0.0/8/8", "1.2.3.4/0008", "fe80::1%eth0/64" }) do
        local m, err = util.parse_cidr(bad)
        assert.is_nil(m, bad)
        assert.is_string(err)
      end
      assert.is_nil((util.parse_cidr(nil)))
      assert.has_error(function() util.compile_cidrs({ "10.0.0.0/8", "bogus" }, "ip") end,
        'ip[2]: bad address in CIDR "bogus"')
    end)

    it("unmap_ipv4", function()
      assert.equal("1.2.3.4", util.unmap_ipv4("::ffff:1.2.3.4"))
      assert.equal("1.2.3.4", util.unmap_ipv4("::FFFF:1.2.3.4"))
      assert.equal("::1", util.unmap_ipv4("::1"))
      assert.equal("1.2.3.4", util.unmap_ipv4("1.2.3.4"))
    end)
  end)

  it("check_keys names the first key it does not know", function()
    local known = { a = true, b = true }
    local t = { a = 1, b = 2 }
    assert.equal(t, util.check_keys(t, known, "thing", "setting"))
    assert.has_error(function() util.check_keys({ a = 1, c = 3 }, known, "thing", "setting") end,
      'thing: unknown setting "c"')
    assert.has_error(function() util.check_keys({ [1] = true }, known, "who", "part", " (known: a, b)") end,
      'who: unknown part "1" (known: a, b)')
    local ok, err = pcall(function() util.check_keys({ z = 1 }, known, "f", "field", nil, 1) end)
    assert.is_false(ok)
    assert.truthy(err:find("^.-util_spec%.lua:%d+: f: unknown field \"z\"$"), err)
  end)

  it("trim is linear and drops %s on both ends", function()
    assert.equal("a b", util.trim(" \t a b \r\n"))
    assert.equal("", util.trim("   "))
    assert.equal("x", util.trim("x"))
    assert.equal("a" .. (" "):rep(100000) .. "b", util.trim(" a" .. (" "):rep(100000) .. "b "))
  end)

  it("deny_body is short plain text, reused", function()
    assert.equal("403 Forbidden: invalid token\n", util.deny_body(403, "invalid token"))
    assert.equal("410 Gone\n", util.deny_body(410))
    assert.equal(util.deny_body(403, "x"), util.deny_body(403, "x"))
  end)
end)
