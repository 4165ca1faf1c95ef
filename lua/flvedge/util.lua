-- flvedge.util: small helpers the policy library is built on. Query parsing, base64url, hex,
-- constant-time comparison, MD5 / SHA-256 / HMAC-SHA256 (libmbedcrypto through the FFI), and
-- compiled IPv4/IPv6 CIDR matchers. Nothing here raises on bad request input: garbage in gives
-- nil or an empty result. Bad settings (a CIDR that does not parse) raise, at compile time.
-- Functions whose work grows with their input pay for it from the hook's budget (flvedge.budget).
-- What runs per request keeps to the rules that let LuaJIT compile it whole, on either build
-- (docs/policy-performance.md): no loops (they are in C, core/lua/fe_lua_ffi.c), no tail calls
-- (`local r = f(x); return r`), no Lua patterns.
local ffi = require "ffi"
local bit = require "bit"
local charge = require("flvedge.budget").charge

local type, tonumber, tostring, error, pcall, pairs, ipairs, setmetatable = type, tonumber, tostring,
  error, pcall, pairs, ipairs, setmetatable
local byte, char, sub, find, gsub, format, match = string.byte, string.char, string.sub,
  string.find, string.gsub, string.format, string.match
local band, bor, lshift, rshift = bit.band, bit.bor, bit.lshift, bit.rshift
local ffi_string, ffi_new = ffi.string, ffi.new

local _M = {}

-- Each declaration on its own: another module may have declared the same function already.
local function cdef(decl) pcall(ffi.cdef, decl) end
-- The loops of this library, in C (core/lua/fe_lua_ffi.h): loops in Lua on the request path are
-- where LuaJIT's traces abort and get blacklisted (docs/policy-performance.md).
cdef [[
int fe_lua_ffi_b64url_decode(const char *s, size_t n, unsigned char *out);
size_t fe_lua_ffi_b64url_encode(const unsigned char *raw, size_t n, int pad, char *out);
int fe_lua_ffi_ct_equal(const void *a, size_t la, const void *b, size_t lb);
int fe_lua_ffi_digits(const char *s, size_t n);
int fe_lua_ffi_blank(const char *s, size_t n);
int fe_lua_ffi_dir_len(const char *path, size_t n);
int fe_lua_ffi_query_arg(const char *q, size_t qlen, const char *name, size_t nlen, char *out);
int fe_lua_ffi_ip_parse(const char *s, size_t n, uint32_t w[4]);
int fe_lua_ffi_ip_in(const uint32_t *nets, int n, const char *s, size_t len);
int fe_lua_ffi_referer_host(const char *ref, size_t len, char *out, size_t cap);
int fe_lua_ffi_suffix_in(const char *host, size_t len, const char *set, size_t setlen);
int fe_lua_ffi_find_any(const char *s, size_t len, const char *set, size_t setlen, int ci);
]]
cdef "int mbedtls_md5_ret(const char *input, size_t ilen, unsigned char output[16]);"
cdef "int mbedtls_md5(const char *input, size_t ilen, unsigned char output[16]);"
cdef "int mbedtls_sha256_ret(const char *input, size_t ilen, unsigned char output[32], int is224);"
cdef "int mbedtls_sha256(const char *input, size_t ilen, unsigned char output[32], int is224);"
cdef "typedef struct mbedtls_md_info_t mbedtls_md_info_t;"
cdef "const mbedtls_md_info_t *mbedtls_md_info_from_type(int md_type);"
cdef [[int mbedtls_md_hmac(const mbedtls_md_info_t *md_info, const char *key, size_t keylen,
                           const char *input, size_t ilen, unsigned char *output);]]

-- ---------------------------------------------------------------------------------------------
-- Strings

-- A header name as the server looks it up: lowercase, `_` for `-` (req.headers.user_agent).
-- Memoised (up to 1024 names): the names come from policy code, a small set.
local header_keys, nheader_keys = {}, 0
function _M.header_key(name)
  local key = header_keys[name]
  if key then return key end
  charge(#name)
  key = string.lower(name)
  if find(key, "_", 1, true) then key = (gsub(key, "_", "-")) end
  if nheader_keys < 1024 then
    header_keys[name], nheader_keys = key, nheader_keys + 1
  end
  return key
end

-- The C side: the server's own symbols, or (busted, tools) libfe_lua_ffi.so from FLVEDGE_FFI_LIB or
-- the build directory next to lua/.
local function load_native()
  if pcall(function() return ffi.C.fe_lua_ffi_ct_equal end) then return ffi.C end
  local path = os.getenv("FLVEDGE_FFI_LIB")
  if not path or path == "" then
    local src = debug.getinfo(1, "S").source
    path = (match(src, "^@(.*)/lua/flvedge/util%.lua$") or ".") .. "/build/libfe_lua_ffi.so"
  end
  local ok, lib = pcall(ffi.load, path)
  if not ok then
    error("flvedge.util: the library's C side is missing: " .. tostring(lib)
      .. " (build it: cmake --build build --target fe_lua_ffi; or set FLVEDGE_FFI_LIB)", 0)
  end
  return lib
end
local N = load_native()
_M.native = N

-- One scratch buffer, grown as needed, for the C functions' output (never held across calls).
local scratch, scratch_len = ffi_new("uint8_t[?]", 256), 256
local function buffer(n)
  if n > scratch_len then
    scratch_len = n * 2
    scratch = ffi_new("uint8_t[?]", scratch_len)
  end
  return scratch
end
_M.buffer = buffer

-- Percent-decoding; `+` is a space only in query strings (plus = true). Bad escapes stay as sent.
local function hexpair(h) return char(tonumber(h, 16)) end

function _M.unescape(s, plus)
  if type(s) ~= "string" then return nil end
  charge(#s)
  if plus and find(s, "+", 1, true) then s = gsub(s, "+", " ") end
  if find(s, "%", 1, true) then s = gsub(s, "%%(%x%x)", hexpair) end
  return s
end
local unescape = _M.unescape

-- "a=1&b=x%20y&c" -> { a = "1", b = "x y", c = "" }. The last value of a name wins; empty pieces
-- are skipped. Never raises: anything that is not a string gives an empty table.
function _M.parse_query(q)
  local args = {}
  if type(q) ~= "string" or q == "" then return args end
  local pos, n = 1, #q
  charge(n)
  while pos <= n do
    local amp = find(q, "&", pos, true) or n + 1
    if amp > pos then
      local eq = find(q, "=", pos, true)
      local k, v
      if eq and eq < amp then
        k, v = sub(q, pos, eq - 1), sub(q, eq + 1, amp - 1)
      else
        k, v = sub(q, pos, amp - 1), ""
      end
      k = unescape(k, true)
      if k ~= "" then args[k] = unescape(v, true) end
    end
    pos = amp + 1
  end
  return args
end

-- The value of one query argument, as parse_query(q)[name] has it, without building the table:
-- what req.args[name] does in the server. nil when q has no such argument.
function _M.query_arg(q, name)
  if type(q) ~= "string" or type(name) ~= "string" then return nil end
  local n = #q
  charge(n)
  local out = buffer(n + 1)
  local len = N.fe_lua_ffi_query_arg(q, n, name, #name, out)
  if len < 0 then return nil end
  local r = ffi_string(out, len); return r
end

-- True when s is empty or only whitespace (%s: space, \t \n \v \f \r).
function _M.blank(s)
  charge(#s)
  return N.fe_lua_ffi_blank(s, #s) == 1
end

-- 1 to 15 decimal digits and nothing else.
function _M.digits(s)
  return type(s) == "string" and N.fe_lua_ffi_digits(s, #s) == 1
end

-- "/a/b/c.flv" -> "/a/b/": the directory of a file's path; nil for a directory ("/a/b/") or a
-- path without "/".
function _M.dir_of(path)
  if type(path) ~= "string" then return nil end
  charge(#path)
  local n = N.fe_lua_ffi_dir_len(path, #path)
  if n < 0 then return nil end
  local r = sub(path, 1, n); return r
end

-- Plain-text split (no patterns); empty fields are kept: split("a,,b", ",") -> {"a", "", "b"}.
function _M.split(s, sep)
  local out, pos, n = {}, 1, 0
  if type(s) ~= "string" then return out end
  sep = sep or ","
  if sep == "" then error("split: empty separator", 2) end
  charge(#s)
  while true do
    local i = find(s, sep, pos, true)
    n = n + 1
    if not i then
      out[n] = sub(s, pos)
      return out
    end
    out[n] = sub(s, pos, i - 1)
    pos = i + #sep
  end
end

-- Without the leading and trailing whitespace (%s: space, \t \n \v \f \r). Linear: the pattern
-- "^%s*(.-)%s*$" would be quadratic in a long run of inner spaces.
function _M.trim(s)
  if type(s) ~= "string" then return nil end
  charge(#s)
  local i = find(s, "%S")
  if not i then return "" end
  local j, b = #s, byte(s, -1)
  while b == 32 or (b >= 9 and b <= 13) do
    j = j - 1
    b = byte(s, j)
  end
  return sub(s, i, j)
end

local HEX = {}
for i = 0, 255 do HEX[char(i)] = format("%02x", i) end

-- Raw bytes -> lowercase hex.
function _M.hex(raw)
  charge(#raw)
  return (gsub(raw, ".", HEX))
end

-- Compares two strings in time that depends only on #b: pass the secret-derived value as b and
-- the client-supplied one as a. Returns true or false; anything that is not a string is false.
function _M.ct_equal(a, b)
  if type(a) ~= "string" or type(b) ~= "string" then return false end
  local lb = #b
  charge(lb)
  return N.fe_lua_ffi_ct_equal(a, #a, b, lb) == 1
end

local REASON = { [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [410] = "Gone", [429] = "Too Many Requests", [451] = "Unavailable For Legal Reasons" }
local bodies, nbodies = {}, 0

-- The plain-text body of a denial: deny_body(403, "invalid token") -> "403 Forbidden: invalid
-- token\n". Made once per (status, reason) and reused (the first 1024: reasons made per request
-- must not grow the cache for ever).
function _M.deny_body(status, reason)
  local per = bodies[status]
  local b = per and per[reason or ""]
  if b then return b end
  b = format("%d %s%s\n", status, REASON[status] or "Error", reason and ": " .. reason or "")
  charge(#b)
  if nbodies < 1024 then
    if not per then
      per = {}
      bodies[status] = per
    end
    per[reason or ""], nbodies = b, nbodies + 1
  end
  return b
end

-- Settings tables: raises "<what>: unknown <noun> "<key>"<hint>" for the first key of t that known
-- does not list. level counts as error()'s does, from the caller (0, the default: no position).
function _M.check_keys(t, known, what, noun, hint, level)
  for k in pairs(t) do
    if not known[k] then
      error(format("%s: unknown %s %q%s", what, noun, tostring(k), hint or ""),
        level and level > 0 and level + 1 or 0)
    end
  end
  return t
end

-- ---------------------------------------------------------------------------------------------
-- base64url (RFC 4648 section 5)

-- Raw bytes -> base64url, without `=` padding unless pad is true.
function _M.base64url_encode(raw, pad)
  local n = #raw
  charge(n)
  local out = buffer(4 * math.ceil(n / 3) + 4)
  local r = ffi_string(out, N.fe_lua_ffi_b64url_encode(raw, n, pad and 1 or 0, out)); return r
end

-- base64url -> raw bytes, with or without `=` padding. nil for anything else: characters outside
-- the URL alphabet (`+` and `/` included), wrong padding, a length no encoder makes, or unused
-- low bits that are not zero (so each value has exactly one accepted spelling).
function _M.base64url_decode(s)
  if type(s) ~= "string" then return nil end
  local n = #s
  charge(n)
  local out = buffer(n + 3)
  local len = N.fe_lua_ffi_b64url_decode(s, n, out)
  if len < 0 then return nil end
  local r = ffi_string(out, len); return r
end

-- ---------------------------------------------------------------------------------------------
-- Digests: libmbedcrypto, loaded by name so that busted works without the server.

local crypto
local function has(lib, name)
  return (pcall(function() return lib[name] end))
end

local function load_crypto()
  local names = { "mbedcrypto", "libmbedcrypto.so.7", "libmbedcrypto.so.16", "libmbedcrypto.so" }
  for _, name in ipairs(names) do
    local ok, lib = pcall(ffi.load, name)
    if ok then return lib end
  end
  -- Last resort: the symbols the flvedge binary itself links.
  if has(ffi.C, "mbedtls_md_hmac") then return ffi.C end
  error("flvedge.util: libmbedcrypto not found (install libmbedcrypto7)", 0)
end

crypto = load_crypto()
-- mbedTLS 2.x names the one-shot functions *_ret; 3.x dropped the suffix.
local md5_fn = has(crypto, "mbedtls_md5_ret") and crypto.mbedtls_md5_ret or crypto.mbedtls_md5
local sha256_fn = has(crypto, "mbedtls_sha256_ret") and crypto.mbedtls_sha256_ret or crypto.mbedtls_sha256
local MD_SHA256 = 6 -- mbedtls_md_type_t MBEDTLS_MD_SHA256 (md.h, 2.x and 3.x)
local sha256_info = crypto.mbedtls_md_info_from_type(MD_SHA256)
if sha256_info == nil then error("flvedge.util: libmbedcrypto has no SHA-256", 0) end

local digest = ffi_new("unsigned char[64]")

-- Raw 16-byte MD5 of s.
function _M.md5(s)
  charge(#s)
  md5_fn(s, #s, digest)
  local r = ffi_string(digest, 16); return r
end

-- The same into out (16 bytes, the caller's), without making a string.
function _M.md5_into(s, out)
  charge(#s)
  md5_fn(s, #s, out)
end

-- Raw 32-byte SHA-256 of s.
function _M.sha256(s)
  charge(#s)
  sha256_fn(s, #s, digest, 0)
  local r = ffi_string(digest, 32); return r
end

-- Raw 32-byte HMAC-SHA256(key, msg).
function _M.hmac_sha256(key, msg)
  charge(#key + #msg)
  if crypto.mbedtls_md_hmac(sha256_info, key, #key, msg, #msg, digest) ~= 0 then
    error("hmac_sha256: mbedtls_md_hmac failed", 2)
  end
  local r = ffi_string(digest, 32); return r
end

-- The same into out (32 bytes, the caller's), without making a string.
function _M.hmac_sha256_into(key, msg, out)
  charge(#key + #msg)
  if crypto.mbedtls_md_hmac(sha256_info, key, #key, msg, #msg, out) ~= 0 then
    error("hmac_sha256: mbedtls_md_hmac failed", 2)
  end
end

-- ---------------------------------------------------------------------------------------------
-- IP addresses and CIDR matching. Every address is held as four 32-bit words of its IPv6 form;
-- IPv4 is IPv4-mapped (::ffff:a.b.c.d), so an IPv4 rule matches a client seen as ::ffff:a.b.c.d.

local words = ffi_new("uint32_t[4]")

-- Parses an address into words (IPv6 form). Returns true, is_v4, or false.
local function pton(text)
  if type(text) ~= "string" then return false end
  local v = N.fe_lua_ffi_ip_parse(text, #text, words)
  if v == 0 then return false end
  return true, v == 4
end

-- The mask of 32 bits starting at bit `from` of a prefix of length `len`.
local function mask_word(len, from)
  local bits = len - from
  if bits >= 32 then return -1 end
  if bits <= 0 then return 0 end
  return lshift(-1, 32 - bits)
end

local cidr_mt = {}
cidr_mt.__index = cidr_mt

-- True when the (already parsed) address words are inside this network.
function cidr_mt:match_words(w1, w2, w3, w4)
  return band(w1, self[5]) == self[1] and band(w2, self[6]) == self[2]
    and band(w3, self[7]) == self[3] and band(w4, self[8]) == self[4]
end

-- The words as bit's signed 32-bit numbers (what match_words compares).
local function word(i) return bor(words[i], 0) end

function cidr_mt:match(ip_text)
  local ok = pton(ip_text)
  if not ok then return false end
  local r = self:match_words(word(0), word(1), word(2), word(3)); return r
end

cidr_mt.__tostring = function(self) return self.text end

-- "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128). Host bits below the prefix
-- are ignored (10.1.2.3/8 is 10.0.0.0/8). Returns a matcher, or nil and the reason.
function _M.parse_cidr(text)
  if type(text) ~= "string" then return nil, "expected a string, got " .. type(text) end
  charge(#text)
  local addr, plen = match(text, "^%s*([^/%s]+)/(%d+)%s*$")
  if not addr then
    addr = match(text, "^%s*([^/%s]+)%s*$")
    if not addr then return nil, format("bad CIDR %q", text) end
  end
  local ok, v4 = pton(addr)
  if not ok or find(addr, "%", 1, true) then return nil, format("bad address in CIDR %q", text) end
  local max = v4 and 32 or 128
  local len = plen and tonumber(plen) or max
  if #(plen or "") > 3 or len > max then
    return nil, format("bad prefix length in CIDR %q (0 to %d)", text, max)
  end
  if v4 then len = len + 96 end
  local m = { text = text, v4 = v4, prefix = plen and tonumber(plen) or max }
  for i = 1, 4 do
    local mask = mask_word(len, (i - 1) * 32)
    m[4 + i] = mask
    m[i] = band(word(i - 1), mask)
  end
  return setmetatable(m, cidr_mt)
end

-- A list's networks as C reads them (8 words each): made by compile_cidrs, or on a list's first
-- use, and again when its length changes.
local nets_of = setmetatable({}, { __mode = "k" })
local function nets(list)
  local c = nets_of[list]
  local n = #list
  if c and c.n == n then return c end
  c = { n = n, words = ffi_new("uint32_t[?]", n * 8 + 1) }
  for i = 1, n do
    local m = list[i]
    for k = 1, 8 do c.words[(i - 1) * 8 + k - 1] = m[k] end
  end
  nets_of[list] = c
  return c
end

-- Compiles a list of CIDR strings; raises naming the first bad one (what: where it came from).
function _M.compile_cidrs(list, what)
  what = what or "cidr"
  if type(list) ~= "table" then error(format("%s: expected a list of CIDRs, got %s", what, type(list)), 0) end
  local out = {}
  for i, text in ipairs(list) do
    local m, err = _M.parse_cidr(text)
    if not m then error(format("%s[%d]: %s", what, i, err), 0) end
    out[i] = m
  end
  nets(out) -- now rather than on the first request: the JIT would meet its loops there
  return out
end

-- True when ip_text is inside any matcher of the list (from parse_cidr / compile_cidrs).
-- An address that does not parse is in no list.
function _M.ip_in(list, ip_text)
  if type(ip_text) ~= "string" then return false end
  local c = nets(list)
  charge(c.n)
  return N.fe_lua_ffi_ip_in(c.words, c.n, ip_text, #ip_text) == 1
end

-- "::ffff:1.2.3.4" -> "1.2.3.4"; anything else unchanged. Used where an address is text that a
-- client signed (token IP binding): the client knows its IPv4 address, not the mapped form.
function _M.unmap_ipv4(ip)
  if type(ip) == "string" and #ip > 7 then
    charge(#ip)
    local v4 = match(ip, "^::[fF][fF][fF][fF]:(%d+%.%d+%.%d+%.%d+)$")
    if v4 then return v4 end
  end
  return ip
end

return _M
