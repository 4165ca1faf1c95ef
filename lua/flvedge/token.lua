-- flvedge.token: signed URLs. Three formats:
--   md5   the Gcore secure token: ?md5=<b64url(MD5("{expires}{path}{ip} {secret}"))>&expires=<unix>
--   nginx nginx secure_link / secure_link_md5 with a template of nginx variables
--   hmac  ?token=<b64url(HMAC-SHA256(secret, "{expires}{path}{ip}"))>&expires=<unix>
-- A check returns true, or nil, status, reason: 403 when the token is missing or wrong, 410 when
-- it is right but expired. Expiry is checked against req.time (the request's arrival), once: an
-- open live stream is never cut when its token expires.
-- What runs per request keeps to the rules that let LuaJIT compile it whole, on either build
-- (docs/policy-performance.md): no loops (they are in C, core/lua/fe_lua_ffi.c), no tail calls
-- (`local r = f(x); return r`), no Lua patterns.
local ffi = require "ffi"
local util = require "flvedge.util"
local charge = require("flvedge.budget").charge

local type, tostring, tonumber, error, pairs, ipairs, setmetatable = type, tostring, tonumber, error,
  pairs, ipairs, setmetatable
local format, find, sub, match = string.format, string.find, string.sub, string.match
local concat = table.concat
local floor = math.floor
local os_time = os.time
local md5, hmac_sha256, ct_equal = util.md5, util.hmac_sha256, util.ct_equal -- signing, nginx type
local b64enc, unmap_ipv4 = util.base64url_encode, util.unmap_ipv4
local check_keys, digits, dir_of, N = util.check_keys, util.digits, util.dir_of, util.native

local _M = {}

local MISSING, INVALID, EXPIRED = "missing token", "invalid token", "token expired"

-- The expires argument: decimal digits only, > 0 (nginx's rule; 0 and signs are invalid).
local function parse_expires(s)
  if not digits(s) then return nil end
  local n = tonumber(s)
  if n <= 0 then return nil end
  return n
end

local function expires_text(expires)
  if type(expires) == "number" and expires > 0 and expires % 1 == 0 then
    return format("%d", expires)
  elseif type(expires) == "string" and parse_expires(expires) then
    return expires
  end
  error(format("expires must be a positive integer (Unix seconds), got %s", tostring(expires)), 3)
end

local function check_str(v, what)
  if type(v) ~= "string" or v == "" then
    error(format("%s must be a non-empty string, got %s", what, type(v) == "string" and '""' or type(v)), 3)
  end
end

-- ---------------------------------------------------------------------------------------------
-- Signing (for tests, examples and operators' own tools)

-- The md5 value of a Gcore secure token. path is the URI path without the query (a directory
-- token ends in `/`); ip, when given, binds the token to that client address.
function _M.md5_sign(path, expires, secret, ip)
  check_str(path, "md5_sign: path")
  check_str(secret, "md5_sign: secret")
  return b64enc(md5(expires_text(expires) .. path .. (ip or "") .. " " .. secret))
end

-- "path?md5=...&expires=..."
function _M.md5_url(path, expires, secret, ip)
  return path .. "?md5=" .. _M.md5_sign(path, expires, secret, ip) .. "&expires=" .. expires_text(expires)
end

-- The token value of the HMAC-SHA256 format.
function _M.hmac_sign(path, expires, secret, ip)
  check_str(path, "hmac_sign: path")
  check_str(secret, "hmac_sign: secret")
  return b64enc(hmac_sha256(secret, expires_text(expires) .. path .. (ip or "")))
end

-- ---------------------------------------------------------------------------------------------
-- Checking. Options are compiled once per opts table (cached weakly by the table): build a new
-- table to change them.

local OPTION = {
  type = true, secret = true, ip = true, expiry = true, md5_arg = true, expires_arg = true,
  token_arg = true, secret_template = true,
}
local DIGEST_LEN = { md5 = 16, nginx = 16, hmac = 32 }

local function now_of(req)
  local r = floor(tonumber(req.time) or os_time()); return r
end

-- 410 or true, by the configured rule: gcore expires at `expires`, nginx one second later.
local function expiry(c, req, expires)
  local now = now_of(req)
  if c.nginx_rule then
    if expires < now then return nil, 410, EXPIRED end
  elseif now >= expires then
    return nil, 410, EXPIRED
  end
  return true
end

local function client_ip(c, req)
  if not c.ip then return "" end
  local r = unmap_ipv4(req.client_ip) or ""; return r
end

-- The client's token decoded, and the digest to compare it with: buffers of this module, so
-- that a check makes no string of either (digests of at most 32 bytes; a token is refused past
-- c.max_len = 44 characters, which decode to at most 33 bytes).
local raw_buf, digest_buf = ffi.new("uint8_t[48]"), ffi.new("uint8_t[32]")

-- md5 and hmac: the exact path first, then (for a file) its directory.
local function check_signed(c, req)
  local args = req.args
  local tok, etext = args[c.hash_arg], args[c.expires_arg]
  if tok == nil or tok == "" or etext == nil then return nil, 403, MISSING end
  local expires = parse_expires(etext)
  local n, len = #tok, c.digest_len
  local raw_len = -1
  if n <= c.max_len then
    charge(n)
    raw_len = N.fe_lua_ffi_b64url_decode(tok, n, raw_buf)
  end
  local path = req.path
  if not expires or raw_len ~= len or type(path) ~= "string" then
    return nil, 403, INVALID
  end
  local ip = client_ip(c, req)
  charge(#path)
  local digest_into, secret, tail = c.digest_into, c.secret, c.tail
  digest_into(secret, etext .. path .. ip .. tail, digest_buf)
  local ok = N.fe_lua_ffi_ct_equal(raw_buf, len, digest_buf, len) == 1
  if not ok then
    local dir = dir_of(path)
    if dir ~= nil then
      digest_into(secret, etext .. dir .. ip .. tail, digest_buf)
      ok = N.fe_lua_ffi_ct_equal(raw_buf, len, digest_buf, len) == 1
    end
  end
  if not ok then return nil, 403, INVALID end
  local ok2, status, reason = expiry(c, req, expires); return ok2, status, reason
end

local function md5_into(_, msg, out) util.md5_into(msg, out) end

-- nginx: secure_link $arg_<md5_arg>,$arg_<expires_arg>; secure_link_md5 "<template>".
local function check_template(c, req)
  local args = req.args
  local tok = args[c.hash_arg]
  if tok == nil or tok == "" then return nil, 403, MISSING end
  local expires, etext = nil, ""
  if c.expires_arg then
    etext = args[c.expires_arg]
    expires = parse_expires(etext)
    if not expires then return nil, 403, INVALID end
  end
  local n = #tok
  local raw_len = -1
  if n <= 24 then
    charge(n)
    raw_len = N.fe_lua_ffi_b64url_decode(tok, n, raw_buf)
  end
  if raw_len ~= 16 then return nil, 403, INVALID end
  util.md5_into(c.text(req, etext), digest_buf)
  local ok = N.fe_lua_ffi_ct_equal(raw_buf, 16, digest_buf, 16) == 1
  if not ok then return nil, 403, INVALID end
  if not expires then return true end
  local ok, status, reason = expiry(c, req, expires); return ok, status, reason
end

local function getter_arg(name) return function(req) return req.args[name] end end
local function getter_http(name) return function(req) return req.headers[name] end end
local VARS = {
  secure_link_expires = function(_, etext) return etext end,
  uri = function(req) return req.path end,
  remote_addr = function(req) return unmap_ipv4(req.client_ip) end,
  host = function(req) return req.host end,
}

-- The parts as one function text(req, etext) -> the string to hash: straight-line code for up to
-- six parts (a loop over them is where LuaJIT's trace would stop), a loop beyond.
local function template_text(parts)
  local g = {}
  for i, p in ipairs(parts) do
    if type(p) == "function" then
      g[i] = function(req, etext) return p(req, etext) or "" end
    else
      g[i] = function() return p end
    end
  end
  local n = #g
  if n > 6 then
    local buf = {}
    return function(req, etext)
      for i = 1, n do buf[i] = g[i](req, etext) end
      local s = concat(buf, "", 1, n); return s
    end
  end
  local empty = function() return "" end
  local g1, g2, g3, g4, g5, g6 = g[1] or empty, g[2] or empty, g[3] or empty, g[4] or empty,
    g[5] or empty, g[6] or empty
  return function(req, etext)
    local s = g1(req, etext) .. g2(req, etext) .. g3(req, etext) .. g4(req, etext)
      .. g5(req, etext) .. g6(req, etext)
    return s
  end
end

-- "$secure_link_expires$uri$remote_addr secret" -> { getter, getter, getter, " secret" }
local function compile_template(t)
  local parts, pos = {}, 1
  while pos <= #t do
    local s, e, name = find(t, "%$([%a_][%w_]*)", pos)
    local bs, be, bname = find(t, "%${([%a_][%w_]*)}", pos)
    if bs and (not s or bs <= s) then s, e, name = bs, be, bname end
    if not s then
      parts[#parts + 1] = sub(t, pos)
      break
    end
    if s > pos then parts[#parts + 1] = sub(t, pos, s - 1) end
    local get = VARS[name]
    if not get then
      local arg, hdr = match(name, "^arg_(.+)$"), match(name, "^http_(.+)$")
      if arg then get = getter_arg(arg) elseif hdr then get = getter_http(hdr) end
    end
    if not get then
      error(format("token: secret_template: unknown variable $%s (known: $secure_link_expires, $uri, "
        .. "$remote_addr, $host, $arg_NAME, $http_NAME)", name), 0)
    end
    parts[#parts + 1] = get
    pos = e + 1
  end
  return parts
end

local function compile(opts, kind)
  if type(opts) ~= "table" then error("token: options must be a table, got " .. type(opts), 0) end
  check_keys(opts, OPTION, "token", "option")
  local t = opts.type
  if t ~= nil and not DIGEST_LEN[t] then
    error(format('token: type must be "md5", "nginx" or "hmac", got %s', tostring(t)), 0)
  end
  if kind and t ~= nil and t ~= kind then
    error(format("token: options say type = %q but check_%s was called", t, kind), 0)
  end
  kind = kind or t or "md5"
  if opts.ip ~= nil and type(opts.ip) ~= "boolean" then
    error("token: ip must be true or false, got " .. type(opts.ip), 0)
  end
  local rule = opts.expiry or (kind == "nginx" and "nginx" or "gcore")
  if rule ~= "gcore" and rule ~= "nginx" then
    error(format('token: expiry must be "gcore" or "nginx", got %s', tostring(rule)), 0)
  end
  local hash_arg = kind == "hmac" and (opts.token_arg or "token") or (opts.md5_arg or "md5")
  local expires_arg = opts.expires_arg
  if expires_arg == nil then expires_arg = "expires" end
  if type(hash_arg) ~= "string" or hash_arg == "" then
    error("token: the token argument name must be a non-empty string", 0)
  end
  if not (expires_arg == false and kind == "nginx") and (type(expires_arg) ~= "string" or expires_arg == "") then
    error("token: expires_arg must be a non-empty string (false only for type nginx: no expiry)", 0)
  end
  local c = {
    kind = kind, ip = opts.ip == true, nginx_rule = rule == "nginx",
    hash_arg = hash_arg, expires_arg = expires_arg, digest_len = DIGEST_LEN[kind],
  }
  if kind == "nginx" then
    local tpl = opts.secret_template
    if tpl == nil then
      if type(opts.secret) ~= "string" or opts.secret == "" then
        error("token: type nginx needs secret_template (or secret for the default template)", 0)
      end
      tpl = (expires_arg and "$secure_link_expires" or "") .. "$uri" .. (c.ip and "$remote_addr" or "")
        .. " " .. opts.secret
    end
    if type(tpl) ~= "string" or tpl == "" then
      error("token: secret_template must be a non-empty string, got " .. type(tpl), 0)
    end
    c.text, c.check = template_text(compile_template(tpl)), check_template
  else
    if type(opts.secret) ~= "string" or opts.secret == "" then
      error(format("token: secret must be a non-empty string, got %s",
        opts.secret == "" and '""' or type(opts.secret)), 0)
    end
    if opts.secret_template ~= nil then error("token: secret_template is only for type nginx", 0) end
    c.check = check_signed
    if kind == "md5" then
      c.digest_into, c.secret, c.tail = md5_into, nil, " " .. opts.secret
    else
      c.digest_into, c.secret, c.tail = util.hmac_sha256_into, opts.secret, ""
    end
    -- The longest spelling of a digest: base64url with padding.
    c.max_len = 4 * math.ceil(c.digest_len / 3)
  end
  return c
end

-- Compiles opts into a check function: check(req) -> true | nil, status, reason. Raises on bad
-- options (use it at factory time). kind, when given, is the type opts must have.
function _M.checker(opts, kind)
  local c = compile(opts, kind)
  local check = c.check
  return function(req) local ok, status, reason = check(c, req); return ok, status, reason end
end

local checker_mt = { __index = { check = function(self, req)
  local ok, status, reason = self.fn(req); return ok, status, reason
end } }

-- The same as an object: checker:check(req); checker.opts are the options it was made from.
function _M.new(opts, kind)
  return setmetatable({ fn = _M.checker(opts, kind), opts = opts }, checker_mt)
end

local cache = { md5 = {}, nginx = {}, hmac = {}, any = {} }
for _, t in pairs(cache) do setmetatable(t, { __mode = "k" }) end

local function compiled(opts, kind)
  local per = cache[kind or "any"]
  local c = type(opts) == "table" and per[opts]
  if not c then
    c = compile(opts, kind)
    per[opts] = c
  end
  return c
end

-- (No tail calls on the request path: each counts towards LuaJIT's loop unroll limit, see
-- docs/policy-performance.md.)
local function check_as(kind, req, opts)
  local c = compiled(opts, kind)
  local ok, status, reason = c.check(c, req)
  return ok, status, reason
end

function _M.check_md5(req, opts)
  local ok, status, reason = check_as("md5", req, opts)
  return ok, status, reason
end
function _M.check_nginx(req, opts)
  local ok, status, reason = check_as("nginx", req, opts)
  return ok, status, reason
end
function _M.check_hmac(req, opts)
  local ok, status, reason = check_as("hmac", req, opts)
  return ok, status, reason
end
-- Dispatches on opts.type: "md5" (the default), "nginx" or "hmac".
function _M.check(req, opts)
  local ok, status, reason = check_as(nil, req, opts)
  return ok, status, reason
end

_M.MISSING, _M.INVALID, _M.EXPIRED = MISSING, INVALID, EXPIRED
return _M
