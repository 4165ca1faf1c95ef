local token = require "flvedge.token"
local util = require "flvedge.util"
local testing = require "flvedge.testing"

local EXP = 2147483647
local T = 1700000000 -- "now" for most requests: long before EXP

local function req(url, extra)
  local t = { url = url, time = T, client_ip = "127.0.0.1" }
  for k, v in pairs(extra or {}) do t[k] = v end
  return testing.request(t)
end

-- Known answers, computed outside Lua, e.g.:
--   printf '%s' '2147483647/flv/a.flv127.0.0.1 secret' | openssl md5 -binary | base64 | tr '+/' '-_' | tr -d '='
-- The input is "{expires}{path}{ip} {secret}": the IP follows the path directly and one space
-- comes before the secret.
local KAT = {
  ip = "a_YZCmSexoxDCSr63cebTA",          -- 2147483647/flv/a.flv127.0.0.1 secret
  noip = "qcEQc4NI-KlrGPNBdSfmFQ",        -- 2147483647/flv/a.flv secret
  dir = "OslJtn_ZzqiaENmV0pVAOg",         -- 2147483647/flv/ secret
  v6 = "nbb4_P4VLWmDw3Goi-0IJA",          -- 2147483647/flv/a.flv2001:db8::1 secret
  gcore = "eWoszlM8huYirxEsw5-Vpg",       -- 1700000000/live/stream.flv s3cret
  -- printf '%s' '2147483647/flv/a.flv' | openssl dgst -sha256 -hmac secret -binary | base64 ...
  hmac = "TmXI40mNFSVFAHJbtvIDS3dMuLOZC5zp7LXGC4FUu20",
  hmacip = "OWbWdjWKSihoxVupQTyDddF9Sst-uQUp7umNIFNk0Z0", -- ...a.flv127.0.0.1
  nginx_ua = "HC0wDIHAcD5VMKhSTUPj4Q",    -- 2147483647/flv/a.flv127.0.0.1Mozilla secret
}

describe("flvedge.token", function()
  describe("signing", function()
    it("md5_sign matches the known answers", function()
      assert.equal(KAT.ip, token.md5_sign("/flv/a.flv", EXP, "secret", "127.0.0.1"))
      assert.equal(KAT.noip, token.md5_sign("/flv/a.flv", EXP, "secret"))
      assert.equal(KAT.dir, token.md5_sign("/flv/", EXP, "secret"))
      assert.equal(KAT.v6, token.md5_sign("/flv/a.flv", EXP, "secret", "2001:db8::1"))
      assert.equal(KAT.gcore, token.md5_sign("/live/stream.flv", 1700000000, "s3cret"))
      assert.equal(KAT.noip, token.md5_sign("/flv/a.flv", "2147483647", "secret"))
    end)

    it("md5_url builds the whole URL", function()
      assert.equal("/flv/a.flv?md5=" .. KAT.noip .. "&expires=2147483647",
        token.md5_url("/flv/a.flv", EXP, "secret"))
    end)

    it("hmac_sign matches the known answers", function()
      assert.equal(KAT.hmac, token.hmac_sign("/flv/a.flv", EXP, "secret"))
      assert.equal(KAT.hmacip, token.hmac_sign("/flv/a.flv", EXP, "secret", "127.0.0.1"))
    end)

    it("refuses bad arguments", function()
      local bad_expires = "expires must be a positive integer (Unix seconds), got "
      assert.error_matches(function() token.md5_sign("/a", 1.5, "s") end, bad_expires .. "1.5", nil, true)
      assert.error_matches(function() token.md5_sign("/a", -1, "s") end, bad_expires .. "-1", nil, true)
      assert.error_matches(function() token.md5_sign("/a", "12x", "s") end, bad_expires .. "12x", nil, true)
      assert.error_matches(function() token.md5_sign("/a", 10, "") end,
        'md5_sign: secret must be a non-empty string, got ""', nil, true)
      assert.error_matches(function() token.hmac_sign(nil, 10, "s") end,
        "hmac_sign: path must be a non-empty string, got nil", nil, true)
    end)
  end)

  describe("check_md5", function()
    local opts = { secret = "secret" }
    local ip_opts = { secret = "secret", ip = true }

    it("admits a valid token, with and without IP binding", function()
      assert.is_true(token.check_md5(req("/flv/a.flv?md5=" .. KAT.noip .. "&expires=2147483647"), opts))
      assert.is_true(token.check_md5(req("/flv/a.flv?expires=2147483647&md5=" .. KAT.ip), ip_opts))
    end)

    it("accepts the token with = padding too", function()
      assert.is_true(token.check_md5(req("/flv/a.flv?md5=" .. KAT.noip .. "%3D%3D&expires=2147483647"), opts))
    end)

    it("binds to the client address the edge sees", function()
      local url = "/flv/a.flv?md5=" .. KAT.ip .. "&expires=2147483647"
      assert.same({ nil, 403, "invalid token" },
        { token.check_md5(req(url, { client_ip = "127.0.0.2" }), ip_opts) })
      -- an IPv4 client on a dual-stack socket is seen as ::ffff:a.b.c.d: it signed a.b.c.d
      assert.is_true(token.check_md5(req(url, { client_ip = "::ffff:127.0.0.1" }), ip_opts))
      -- a token without the IP is not one with it
      assert.same({ nil, 403, "invalid token" },
        { token.check_md5(req("/flv/a.flv?md5=" .. KAT.noip .. "&expires=2147483647"), ip_opts) })
      assert.is_true(token.check_md5(req("/flv/a.flv?md5=" .. KAT.v6 .. "&expires=2147483647",
        { client_ip = "2001:db8::1" }), ip_opts))
    end)

    it("403 for a missing token or expires", function()
      assert.same({ nil, 403, "missing token" }, { token.check_md5(req("/flv/a.flv"), opts) })
      assert.same({ nil, 403, "missing token" },
        { token.check_md5(req("/flv/a.flv?md5=" .. KAT.noip), opts) })
      assert.same({ nil, 403, "missing token" }, { token.check_md5(req("/flv/a.flv?expires=2147483647"), opts) })
      assert.same({ nil, 403, "missing token" },
        { token.check_md5(req("/flv/a.flv?md5=&expires=2147483647"), opts) })
    end)

    it("403 for a wrong hash, wrong path, other extension or changed expires", function()
      local function status(url) return select(2, token.check_md5(req(url), opts)) end
      assert.equal(403, status("/flv/b.flv?md5=" .. KAT.noip .. "&expires=2147483647"))
      assert.equal(403, status("/flv/a.mp4?md5=" .. KAT.noip .. "&expires=2147483647"))
      assert.equal(403, status("/flv/a.flv?md5=" .. KAT.noip .. "&expires=2147483646"))
      assert.equal(403, status("/flv/a.flv?md5=" .. KAT.noip .. "&expires=02147483647"))
      assert.equal(403, status("/flv/a.flv?md5=" .. KAT.ip .. "&expires=2147483647"))
      assert.is_nil((token.check_md5(req("/flv/a.flv?md5=" .. KAT.noip .. "&expires=2147483647"),
        { secret = "Secret" })))
    end)

    it("403 for tokens of the wrong length or that are not base64url", function()
      local function status(tok) return select(2, token.check_md5(req("/flv/a.flv?md5=" .. tok .. "&expires=2147483647"), opts)) end
      assert.equal(403, status(KAT.noip:sub(1, 21)))            -- short
      assert.equal(403, status(KAT.noip .. "A"))                -- 23 characters: not an encoding
      assert.equal(403, status(KAT.noip .. "AA"))               -- 17 bytes
      assert.equal(403, status(KAT.noip .. "%3D"))              -- wrong padding
      assert.equal(403, status(KAT.hmac))                       -- a 32-byte digest
      assert.equal(403, status((KAT.noip:gsub("-", "%%2B"))))    -- standard alphabet
      assert.equal(403, status(("A"):rep(5000)))
      assert.equal(403, status("%00%01"))
    end)

    it("403 for an expires that is not a positive decimal number", function()
      for _, e in ipairs({ "0", "-5", "+5", "12a", "1e9", " 5", "0x10", "99999999999999999" }) do
        local tok = KAT.noip
        local ok, st = token.check_md5(req("/flv/a.flv?md5=" .. tok .. "&expires=" .. e), opts)
        assert.is_nil(ok, e)
        assert.equal(403, st, e)
      end
    end)

    it("410 for a valid but expired token, 403 when it is expired and invalid too", function()
      local tok = token.md5_sign("/flv/a.flv", 1000, "secret")
      local url = "/flv/a.flv?md5=" .. tok .. "&expires=1000"
      assert.is_true(token.check_md5(req(url, { time = 999 }), opts))
      assert.is_true(token.check_md5(req(url, { time = 999.9 }), opts))
      assert.same({ nil, 410, "token expired" }, { token.check_md5(req(url, { time = 1000 }), opts) })
      assert.same({ nil, 410, "token expired" }, { token.check_md5(req(url, { time = 5000 }), opts) })
      local bad = "/flv/a.flv?md5=" .. KAT.noip .. "&expires=1000"
      assert.same({ nil, 403, "invalid token" }, { token.check_md5(req(bad, { time = 5000 }), opts) })
    end)

    it("the nginx expiry rule expires one second later", function()
      local tok = token.md5_sign("/flv/a.flv", 1000, "secret")
      local url = "/flv/a.flv?md5=" .. tok .. "&expires=1000"
      local o = { secret = "secret", expiry = "nginx" }
      assert.is_true(token.check_md5(req(url, { time = 1000 }), o))
      assert.is_true(token.check_md5(req(url, { time = 1000.7 }), o))
      assert.equal(410, select(2, token.check_md5(req(url, { time = 1001 }), o)))
    end)

    it("uses os.time() when the request has no time", function()
      local r = req("/flv/a.flv?md5=" .. KAT.noip .. "&expires=2147483647")
      r.time = nil
      assert.is_true(token.check_md5(r, opts))
      local past = os.time() - 10
      r = req(token.md5_url("/flv/a.flv", past, "secret"))
      r.time = nil
      assert.equal(410, select(2, token.check_md5(r, opts)))
    end)

    it("a directory token covers the files directly inside it only", function()
      local function check(path, o)
        return token.check_md5(req(path .. "?md5=" .. KAT.dir .. "&expires=2147483647"), o or opts)
      end
      assert.is_true(check("/flv/a.flv"))
      assert.is_true(check("/flv/other.flv"))
      assert.is_true(check("/flv/"))
      assert.is_nil(check("/flv/sub/a.flv"))
      assert.is_nil(check("/flvx/a.flv"))
      assert.is_nil(check("/a.flv"))
      -- bound to an IP
      local tok = token.md5_sign("/flv/", EXP, "secret", "10.1.2.3")
      assert.is_true(token.check_md5(req("/flv/x.flv?md5=" .. tok .. "&expires=2147483647",
        { client_ip = "10.1.2.3" }), ip_opts))
      assert.is_nil(token.check_md5(req("/flv/x.flv?md5=" .. tok .. "&expires=2147483647",
        { client_ip = "10.1.2.4" }), ip_opts))
    end)

    it("a file token does not cover its directory's other files", function()
      assert.is_nil(token.check_md5(req("/flv/?md5=" .. KAT.noip .. "&expires=2147483647"), opts))
    end)

    it("takes other argument names", function()
      local o = { secret = "secret", md5_arg = "h", expires_arg = "e" }
      assert.is_true(token.check_md5(req("/flv/a.flv?h=" .. KAT.noip .. "&e=2147483647"), o))
      assert.equal(403, select(2, token.check_md5(req("/flv/a.flv?md5=" .. KAT.noip .. "&expires=2147483647"), o)))
    end)

    it("raises on bad options, naming them", function()
      assert.has_error(function() token.check_md5(req("/"), {}) end, "token: secret must be a non-empty string, got nil")
      assert.has_error(function() token.check_md5(req("/"), { secret = "" }) end, 'token: secret must be a non-empty string, got ""')
      assert.has_error(function() token.check_md5(req("/"), { secret = "s", expiry = "soon" }) end,
        'token: expiry must be "gcore" or "nginx", got soon')
      assert.has_error(function() token.check_md5(req("/"), { secret = "s", scret = 1 }) end, 'token: unknown option "scret"')
      assert.has_error(function() token.check_md5(req("/"), { secret = "s", type = "hmac" }) end,
        'token: options say type = "hmac" but check_md5 was called')
      assert.has_error(function() token.check_md5(req("/"), { secret = "s", ip = "yes" }) end,
        "token: ip must be true or false, got string")
      assert.has_error(function() token.check_md5(req("/"), "secret") end, "token: options must be a table, got string")
      assert.has_error(function() token.new({ secret = "s", type = "sha1" }) end,
        'token: type must be "md5", "nginx" or "hmac", got sha1')
      assert.has_error(function() token.new({ secret = "s", expires_arg = false }) end,
        "token: expires_arg must be a non-empty string (false only for type nginx: no expiry)")
    end)
  end)

  describe("check_nginx", function()
    it("evaluates the template (nginx variables) and checks the md5", function()
      local o = { secret_template = "$secure_link_expires$uri$remote_addr$http_user_agent secret" }
      local r = req("/flv/a.flv?md5=" .. KAT.nginx_ua .. "&expires=2147483647", { headers = { ["User-Agent"] = "Mozilla" } })
      assert.is_true(token.check_nginx(r, o))
      r = req("/flv/a.flv?md5=" .. KAT.nginx_ua .. "&expires=2147483647", { headers = { ["User-Agent"] = "curl" } })
      assert.same({ nil, 403, "invalid token" }, { token.check_nginx(r, o) })
    end)

    it("the Gcore format is the nginx template $secure_link_expires$uri$remote_addr secret", function()
      local o = { secret_template = "${secure_link_expires}${uri}$remote_addr secret" }
      assert.is_true(token.check_nginx(req("/flv/a.flv?md5=" .. KAT.ip .. "&expires=2147483647"), o))
      -- the default template from secret and ip
      assert.is_true(token.check_nginx(req("/flv/a.flv?md5=" .. KAT.ip .. "&expires=2147483647"),
        { secret = "secret", ip = true }))
      assert.is_true(token.check_nginx(req("/flv/a.flv?md5=" .. KAT.noip .. "&expires=2147483647"),
        { secret = "secret" }))
    end)

    it("$arg_NAME reads a query argument", function()
      local tok = util.base64url_encode(util.md5("2147483647/flv/a.flvalice secret"))
      local o = { secret_template = "$secure_link_expires$uri$arg_user secret" }
      assert.is_true(token.check_nginx(req("/flv/a.flv?user=alice&md5=" .. tok .. "&expires=2147483647"), o))
      assert.is_nil(token.check_nginx(req("/flv/a.flv?user=bob&md5=" .. tok .. "&expires=2147483647"), o))
    end)

    it("follows nginx's parsing rules", function()
      local o = { secret = "secret" }
      local function st(q) return select(2, token.check_nginx(req("/flv/a.flv?" .. q), o)) end
      assert.is_nil(st("md5=" .. KAT.noip .. "==&expires=2147483647"))     -- 24 characters, padded
      assert.equal(403, st("md5=" .. KAT.noip .. "===&expires=2147483647")) -- 25 characters
      assert.equal(403, st("md5=" .. KAT.noip .. "&expires=0"))            -- expires <= 0
      assert.equal(403, st("md5=" .. KAT.noip .. "&expires=-1"))
      assert.equal(403, st("md5=" .. KAT.noip))                            -- "hash," -> no expires
      assert.equal(403, st("md5=" .. KAT.noip:sub(1, 20) .. "&expires=2147483647"))
      assert.equal(403, st("expires=2147483647"))
    end)

    it("expires with the nginx rule (expires < now), and never without an expires argument", function()
      local o = { secret = "secret" }
      local tok = token.md5_sign("/flv/a.flv", 1000, "secret")
      local url = "/flv/a.flv?md5=" .. tok .. "&expires=1000"
      assert.is_true(token.check_nginx(req(url, { time = 1000 }), o))
      assert.same({ nil, 410, "token expired" }, { token.check_nginx(req(url, { time = 1001 }), o) })
      local forever = { secret_template = "$uri secret", expires_arg = false }
      local t2 = util.base64url_encode(util.md5("/flv/a.flv secret"))
      assert.is_true(token.check_nginx(req("/flv/a.flv?md5=" .. t2, { time = 4e9 }), forever))
    end)

    it("raises on an unknown variable or a missing template", function()
      assert.has_error(function() token.check_nginx(req("/"), { secret_template = "$request_uri x" }) end,
        "token: secret_template: unknown variable $request_uri (known: $secure_link_expires, $uri, "
        .. "$remote_addr, $host, $arg_NAME, $http_NAME)")
      assert.has_error(function() token.check_nginx(req("/"), {}) end,
        "token: type nginx needs secret_template (or secret for the default template)")
      assert.has_error(function() token.new({ secret = "s", secret_template = "$uri s" }) end,
        "token: secret_template is only for type nginx")
    end)
  end)

  describe("check_hmac", function()
    local o = { secret = "secret" }
    it("admits a valid token, 403 for a wrong one, 410 when expired", function()
      assert.is_true(token.check_hmac(req("/flv/a.flv?token=" .. KAT.hmac .. "&expires=2147483647"), o))
      assert.is_true(token.check_hmac(req("/flv/a.flv?token=" .. KAT.hmacip .. "&expires=2147483647"),
        { secret = "secret", ip = true }))
      assert.equal(403, select(2, token.check_hmac(req("/flv/a.flv?token=" .. KAT.hmacip .. "&expires=2147483647"), o)))
      assert.equal(403, select(2, token.check_hmac(req("/flv/a.flv?token=" .. KAT.noip .. "&expires=2147483647"), o)))
      assert.equal(403, select(2, token.check_hmac(req("/flv/a.flv?md5=" .. KAT.hmac .. "&expires=2147483647"), o)))
      local tok = token.hmac_sign("/flv/a.flv", 1000, "secret")
      assert.same({ nil, 410, "token expired" },
        { token.check_hmac(req("/flv/a.flv?token=" .. tok .. "&expires=1000", { time = 1000 }), o) })
    end)

    it("supports directory tokens", function()
      local tok = token.hmac_sign("/flv/", EXP, "secret")
      assert.is_true(token.check_hmac(req("/flv/a.flv?token=" .. tok .. "&expires=2147483647"), o))
      assert.is_nil(token.check_hmac(req("/flv/x/a.flv?token=" .. tok .. "&expires=2147483647"), o))
    end)
  end)

  describe("check", function()
    it("dispatches on opts.type", function()
      assert.is_true(token.check(req("/flv/a.flv?md5=" .. KAT.noip .. "&expires=2147483647"), { secret = "secret" }))
      assert.is_true(token.check(req("/flv/a.flv?token=" .. KAT.hmac .. "&expires=2147483647"),
        { type = "hmac", secret = "secret" }))
      assert.is_true(token.check(req("/flv/a.flv?md5=" .. KAT.ip .. "&expires=2147483647"),
        { type = "nginx", secret_template = "$secure_link_expires$uri$remote_addr secret" }))
      assert.has_error(function() token.check(req("/"), { type = "jwt", secret = "s" }) end,
        'token: type must be "md5", "nginx" or "hmac", got jwt')
    end)

    it("a checker object from token.new", function()
      local c = token.new({ secret = "secret" })
      assert.is_true(c:check(req("/flv/a.flv?md5=" .. KAT.noip .. "&expires=2147483647")))
      assert.equal(403, select(2, c:check(req("/flv/a.flv?md5=x&expires=2147483647"))))
    end)

    it("a check function from token.checker, compiled once", function()
      local check = token.checker({ type = "hmac", secret = "secret" })
      assert.is_true(check(req("/flv/a.flv?token=" .. KAT.hmac .. "&expires=2147483647")))
      assert.same({ nil, 403, "invalid token" }, { check(req("/flv/a.flv?token=x&expires=2147483647")) })
      assert.same({ nil, 403, "missing token" }, { check(req("/flv/a.flv")) })
      assert.has_error(function() token.checker({ secret = "s", scret = 1 }) end, 'token: unknown option "scret"')
      assert.has_error(function() token.checker({ secret = "s", type = "md5" }, "hmac") end,
        'token: options say type = "md5" but check_hmac was called')
    end)
  end)
end)
