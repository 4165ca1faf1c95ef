-- flvedge.util: small helpers the policy library is built on. Query parsing, base64url, hex,
-- constant-time comparison, MD5 / SHA-256 / HMAC-SHA256 (libmbedcrypto through the FFI), and
-- compiled IPv4/IPv6 CIDR matchers. Nothing here raises on bad request input: garbage in gives
-- nil or an empty result. Bad settings (a CIDR that does not parse) raise, at compile time.
-- Functions whose work grows with their input pay for it from the hook's budget (flvedge.budget).
local ffi = require "ffi"
local bit = require "bit"
local charge = require("flvedge.budget").charge

local type, tonumber, tostring, error, pcall, pairs, ipairs, setmetatable = type, tonumber, tostring,
  error, pcall, pairs, ipairs, setmetatable
local byte, char, sub, find, gsub, format, match = string.byte, string.char, string.sub,
  string.find, string.gsub, string.format, string.match
local band, bor, bxor, lshift, rshift = bit.band, bit.bor, bit.bxor, bit.lshift, bit.rshift
local ffi_string, ffi_new = ffi.string, ffi.new

local _M = {}

-- Each declaration on its own: another module may have declared the same function already.
local function cdef(decl) pcall(ffi.cdef, decl) end
cdef "int inet_pton(int af, const char *src, void *dst);"
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
  local la, lb = #a, #b
  charge(lb)
  local diff = la == lb and 0 or 1
  for i = 1, lb do
    -- a is read at a wrapped index so the loop always runs #b times with real loads.
    local ca = la > 0 and byte(a, (i - 1) % la + 1) or 0
    diff = bor(diff, bxor(ca, byte(b, i)))
  end
  return diff == 0
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

local ENC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local ENC_T = ffi_new("uint8_t[64]")
local DEC_T = ffi_new("int16_t[256]")
for i = 0, 255 do DEC_T[i] = -1 end
for i = 1, 64 do
  ENC_T[i - 1] = byte(ENC, i)
  DEC_T[byte(ENC, i)] = i - 1
end

-- One scratch buffer, grown as needed, for encode and decode (never held across calls).
local scratch, scratch_len = ffi_new("uint8_t[?]", 256), 256
local function buffer(n)
  if n > scratch_len then
    scratch_len = n * 2
    scratch = ffi_new("uint8_t[?]", scratch_len)
  end
  return scratch
end

-- Raw bytes -> base64url, without `=` padding unless pad is true.
function _M.base64url_encode(raw, pad)
  local n = #raw
  charge(n)
  local out = buffer(4 * math.ceil(n / 3) + 4)
  local o, i = 0, 1
  while i + 2 <= n do
    local a, b, c = byte(raw, i, i + 2)
    local v = bor(lshift(a, 16), lshift(b, 8), c)
    out[o] = ENC_T[rshift(v, 18)]
    out[o + 1] = ENC_T[band(rshift(v, 12), 63)]
    out[o + 2] = ENC_T[band(rshift(v, 6), 63)]
    out[o + 3] = ENC_T[band(v, 63)]
    o, i = o + 4, i + 3
  end
  local rest = n - i + 1
  if rest == 1 then
    local a = byte(raw, i)
    out[o] = ENC_T[rshift(a, 2)]
    out[o + 1] = ENC_T[lshift(band(a, 3), 4)]
    o = o + 2
    if pad then out[o], out[o + 1], o = 61, 61, o + 2 end
  elseif rest == 2 then
    local a, b = byte(raw, i, i + 1)
    local v = bor(lshift(a, 8), b)
    out[o] = ENC_T[rshift(v, 10)]
    out[o + 1] = ENC_T[band(rshift(v, 4), 63)]
    out[o + 2] = ENC_T[lshift(band(v, 15), 2)]
    o = o + 3
    if pad then out[o], o = 61, o + 1 end
  end
  return ffi_string(out, o)
end

-- base64url -> raw bytes, with or without `=` padding. nil for anything else: characters outside
-- the URL alphabet (`+` and `/` included), wrong padding, a length no encoder makes, or unused
-- low bits that are not zero (so each value has exactly one accepted spelling).
function _M.base64url_decode(s)
  if type(s) ~= "string" then return nil end
  local n = #s
  charge(n)
  if n > 0 and byte(s, n) == 61 then
    if n % 4 ~= 0 then return nil end
    n = n - 1
    if byte(s, n) == 61 then n = n - 1 end
  end
  local tail = n % 4
  if tail == 1 then return nil end
  local out = buffer(3 * math.floor(n / 4) + 3)
  local o, i = 0, 1
  while i + 3 <= n do
    local a, b, c, d = byte(s, i, i + 3)
    a, b, c, d = DEC_T[a], DEC_T[b], DEC_T[c], DEC_T[d]
    if bor(a, b, c, d) < 0 then return nil end
    local v = bor(lshift(a, 18), lshift(b, 12), lshift(c, 6), d)
    out[o], out[o + 1], out[o + 2] = rshift(v, 16), band(rshift(v, 8), 255), band(v, 255)
    o, i = o + 3, i + 4
  end
  if tail == 2 then
    local a, b = byte(s, i, i + 1)
    a, b = DEC_T[a], DEC_T[b]
    if bor(a, b) < 0 or band(b, 15) ~= 0 then return nil end
    out[o] = bor(lshift(a, 2), rshift(b, 4))
    o = o + 1
  elseif tail == 3 then
    local a, b, c = byte(s, i, i + 2)
    a, b, c = DEC_T[a], DEC_T[b], DEC_T[c]
    if bor(a, b, c) < 0 or band(c, 3) ~= 0 then return nil end
    local v = bor(lshift(a, 10), lshift(b, 4), rshift(c, 2))
    out[o], out[o + 1] = rshift(v, 8), band(v, 255)
    o = o + 2
  end
  return ffi_string(out, o)
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
  return ffi_string(digest, 16)
end

-- Raw 32-byte SHA-256 of s.
function _M.sha256(s)
  charge(#s)
  sha256_fn(s, #s, digest, 0)
  return ffi_string(digest, 32)
end

-- Raw 32-byte HMAC-SHA256(key, msg).
function _M.hmac_sha256(key, msg)
  charge(#key + #msg)
  if crypto.mbedtls_md_hmac(sha256_info, key, #key, msg, #msg, digest) ~= 0 then
    error("hmac_sha256: mbedtls_md_hmac failed", 2)
  end
  return ffi_string(digest, 32)
end

-- ---------------------------------------------------------------------------------------------
-- IP addresses and CIDR matching. Every address is held as four 32-bit words of its IPv6 form;
-- IPv4 is IPv4-mapped (::ffff:a.b.c.d), so an IPv4 rule matches a client seen as ::ffff:a.b.c.d.

local AF_INET, AF_INET6 = 2, 10
local addr_buf = ffi_new("uint8_t[16]")

local function word(b, i)
  return bor(lshift(b[i], 24), lshift(b[i + 1], 16), lshift(b[i + 2], 8), b[i + 3])
end

-- Parses an address into addr_buf (IPv6 form). Returns true, is_v4, or false.
local function pton(text)
  if type(text) ~= "string" or #text == 0 or #text > 64 then return false end
  if find(text, ":", 1, true) then
    local pct = find(text, "%", 1, true) -- zone id (fe80::1%eth0): not part of the address
    if pct then text = sub(text, 1, pct - 1) end
    return ffi.C.inet_pton(AF_INET6, text, addr_buf) == 1, false
  end
  for i = 0, 9 do addr_buf[i] = 0 end
  addr_buf[10], addr_buf[11] = 255, 255
  return ffi.C.inet_pton(AF_INET, text, addr_buf + 12) == 1, true
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

function cidr_mt:match(ip_text)
  local ok = pton(ip_text)
  if not ok then return false end
  return self:match_words(word(addr_buf, 0), word(addr_buf, 4), word(addr_buf, 8), word(addr_buf, 12))
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
    m[i] = band(word(addr_buf, (i - 1) * 4), mask)
  end
  return setmetatable(m, cidr_mt)
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
  return out
end

-- True when ip_text is inside any matcher of the list (from parse_cidr / compile_cidrs).
-- An address that does not parse is in no list.
function _M.ip_in(list, ip_text)
  local ok = pton(ip_text)
  if not ok then return false end
  charge(#list)
  local w1, w2, w3, w4 = word(addr_buf, 0), word(addr_buf, 4), word(addr_buf, 8), word(addr_buf, 12)
  for i = 1, #list do
    if list[i]:match_words(w1, w2, w3, w4) then return true end
  end
  return false
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
