-- flvedge.acl: access lists compiled once, checked per request. Each takes
--   { policy = "allow" | "deny", values = { ... } }
-- with the Gcore meaning of the policy type:
--   "allow": allow everything except the listed values (the list is a block list);
--   "deny":  deny everything except the listed values (the list is an allow list).
-- The Gcore API names (policy_type, excepted_values) are accepted too, and enabled = false gives
-- a list that admits everything. :check(req) returns true, or nil, 403, reason.
-- Bad settings raise at compile time, naming the value, so a reload with a bad script is refused.
local util = require "flvedge.util"
local geo = require "flvedge.geo"
local budget = require "flvedge.budget"

local type, tostring, error, ipairs, pairs, setmetatable, pcall = type, tostring, error, ipairs,
  pairs, setmetatable, pcall
local format, find, sub, lower, match, byte, gsub = string.format, string.find, string.sub,
  string.lower, string.match, string.byte, string.gsub
local ip_in, check_keys = util.ip_in, util.check_keys
local charge, bounded_find = budget.charge, budget.find

local _M = {}

local KEYS = { policy = true, policy_type = true, values = true, excepted_values = true, enabled = true }
local REFERER_KEYS = { empty = true }
for k in pairs(KEYS) do REFERER_KEYS[k] = true end

-- The common part of every list's settings: returns block (true when the list blocks), values.
-- keys: the settings it knows (KEYS unless given).
local function settings(what, s, keys)
  if type(s) ~= "table" then error(format("acl.%s: settings must be a table, got %s", what, type(s)), 0) end
  check_keys(s, keys or KEYS, "acl." .. what, "setting")
  local policy = s.policy or s.policy_type
  if policy ~= "allow" and policy ~= "deny" then
    error(format('acl.%s: policy must be "allow" (block the listed values) or "deny" (admit only '
      .. 'the listed values), got %s', what, policy == nil and "nothing" or format("%q", tostring(policy))), 0)
  end
  local values = s.values or s.excepted_values
  if type(values) ~= "table" then
    error(format("acl.%s: values must be a list, got %s", what, type(values)), 0)
  end
  for k in pairs(values) do
    if type(k) ~= "number" or k < 1 or k > #values or k % 1 ~= 0 then
      error(format("acl.%s: values must be a list (found key %q)", what, tostring(k)), 0)
    end
  end
  for i, v in ipairs(values) do
    if type(v) ~= "string" then
      error(format("acl.%s: values[%d] must be a string, got %s", what, i, type(v)), 0)
    end
  end
  if s.enabled ~= nil and type(s.enabled) ~= "boolean" then
    error(format("acl.%s: enabled must be true or false", what), 0)
  end
  return policy == "allow", values, s.enabled == false
end

local acl_mt = { __index = {} }
-- listed(self, req) -> whether the request's value is in the list; block flips the meaning.
function acl_mt.__index.check(self, req)
  if self.disabled then return true end
  if self.listed(self, req) == self.block then return nil, 403, self.reason end
  return true
end

local function new(block, listed, reason, disabled)
  return setmetatable({ block = block, listed = listed, reason = reason, disabled = disabled }, acl_mt)
end

-- ---------------------------------------------------------------------------------------------
-- Referer

-- The host of a Referer: scheme optional, userinfo and port dropped, lowercase. "" when there
-- is none ("http:///x", "?q").
local function referer_host(ref)
  charge(#ref)
  local s = find(ref, "://", 1, true)
  local rest = ref
  if s and not find(sub(ref, 1, s - 1), "[^%w+.-]") then rest = sub(ref, s + 3) end
  local host = match(rest, "^[^/?#]*")
  local at = find(host, "@[^@]*$")
  if at then host = sub(host, at + 1) end
  if byte(host, 1) == 91 then -- [ipv6]:port
    host = match(host, "^(%[[^%]]*%])") or ""
  else
    host = match(host, "^[^:]*")
  end
  if find(host, "%u") then host = lower(host) end
  if byte(host, -1) == 46 then host = sub(host, 1, -2) end -- trailing dot
  return host
end
_M.referer_host = referer_host

-- A host name has at most 253 characters (RFC 1035): a longer one is in no suffix list, and the
-- walk below, a substring per dot, stays small (it is quadratic in the dots: 8 KB of "." in a
-- Referer took a whole lua_budget, and the request a 500).
local MAX_HOST = 253

local function host_listed(self, host)
  if self.exact[host] then return true end
  if #host > MAX_HOST then return false end
  local suffixes = self.suffixes
  local pos = find(host, ".", 1, true)
  while pos do
    charge(#host - pos)
    if suffixes[sub(host, pos)] then return true end
    pos = find(host, ".", pos + 1, true)
  end
  return false
end

local referer_mt = { __index = setmetatable({}, acl_mt) }
function referer_mt.__index.check(self, req)
  if self.disabled then return true end
  local ref = req.headers.referer
  if ref == nil or ref == "" or not find(ref, "%S") then
    if self.empty_denied then return nil, 403, self.reason end
    return true
  end
  if host_listed(self, referer_host(ref)) == self.block then return nil, 403, self.reason end
  return true
end

-- values: "example.com" (that host exactly) or "*.example.com" (every subdomain of it, not
-- example.com itself: list both for both). empty = "allow" | "deny": what a request without a
-- Referer (or with an empty one) gets, whatever the policy; "allow" when not given.
function _M.referer(s)
  local block, values, disabled = settings("referer", s, REFERER_KEYS)
  local empty = s.empty
  if empty == nil then empty = "allow" end
  if empty ~= "allow" and empty ~= "deny" then
    error(format('acl.referer: empty must be "allow" or "deny", got %q', tostring(empty)), 0)
  end
  local exact, suffixes = {}, {}
  for i, v in ipairs(values) do
    local host = lower(v)
    if host == "" then
      error(format('acl.referer: values[%d] is empty; use empty = "allow" | "deny" for requests '
        .. "without a Referer", i), 0)
    end
    local sfx = match(host, "^%*(%..+)$")
    local check = sfx and sub(sfx, 2) or host
    if find(check, "[^%w.-]") or find(check, "^%.") or find(check, "%.%.") or find(check, "%.$") then
      error(format('acl.referer: values[%d] = %q is not a host name or "*.domain" (no scheme, '
        .. "port or path)", i, v), 0)
    end
    if sfx then suffixes[sfx] = true else exact[host] = true end
  end
  local a = new(block, nil, "referer not allowed", disabled)
  a.exact, a.suffixes, a.empty_denied = exact, suffixes, empty == "deny"
  return setmetatable(a, referer_mt)
end

-- ---------------------------------------------------------------------------------------------
-- User-Agent

-- Lowercases the literal characters of a Lua pattern, leaving %-escapes (%S, %A, %W) alone.
local function lower_pattern(p)
  return (gsub(p, "(%%?)(.)", function(pct, c)
    if pct == "" then return lower(c) end
    return pct .. c
  end))
end

-- Skips the set starting at p[i] == "[" the way Lua's matcher reads it (the first character may
-- be "]"). Returns the index after it, or nil.
local function skip_set(p, i)
  local n = #p
  i = i + 1
  if sub(p, i, i) == "^" then i = i + 1 end
  repeat
    if i > n then return nil end
    local c = sub(p, i, i)
    i = i + 1
    if c == "%" and i <= n then i = i + 1 end
  until sub(p, i, i) == "]"
  return i + 1
end

-- Finds the errors Lua would raise only when a match reaches them (unbalanced captures, a
-- trailing %, an open set, a back reference to no capture), and `|` used as if it were PCRE.
local function check_pattern(p)
  local i, n, open, closed, ncap = 1, #p, 0, {}, 0
  while i <= n do
    local c = sub(p, i, i)
    if c == "%" then
      local nx = sub(p, i + 1, i + 1)
      if nx == "" then return "ends with '%'" end
      if nx == "b" then
        if i + 3 > n then return "%b needs two characters" end
        i = i + 4
      elseif nx == "f" then
        if sub(p, i + 2, i + 2) ~= "[" then return "%f needs a [set]" end
        i = skip_set(p, i + 2)
        if not i then return "missing ']'" end
      else
        local k = find(nx, "%d") and byte(nx) - 48
        if k and (k == 0 or not closed[k]) then return "back reference %" .. nx .. " to no closed capture" end
        i = i + 2
      end
    elseif c == "[" then
      i = skip_set(p, i)
      if not i then return "missing ']'" end
    elseif c == "(" then
      ncap = ncap + 1
      if ncap > 32 then return "too many captures" end
      open = open + 1
      closed[ncap] = false
      i = i + 1
    elseif c == ")" then
      if open == 0 then return "')' without '('" end
      for k = ncap, 1, -1 do
        if closed[k] == false then closed[k] = true; break end
      end
      open = open - 1
      i = i + 1
    elseif c == "|" then
      return "'|' is not alternation in Lua patterns (list each value separately, or write %|)"
    else
      i = i + 1
    end
  end
  if open > 0 then return "unfinished capture" end
  local ok, err = pcall(find, "", p)
  if not ok then return err end
  return nil
end
_M.check_pattern = check_pattern

local function ua_listed(self, req)
  local ua = req.headers.user_agent
  if ua == nil or ua == "" then return self.none end
  if self.exact[ua] then return true end
  -- The operator's patterns on the client's header: matched by the paying matcher.
  local pats = self.patterns
  for i = 1, #pats do
    if bounded_find(ua, pats[i], 1) then return true end
  end
  local ipats = self.ipatterns
  if #ipats > 0 then
    charge(#ua)
    local lua = lower(ua)
    for i = 1, #ipats do
      if bounded_find(lua, ipats[i], 1) then return true end
    end
  end
  return false
end

-- values: exact strings (case-sensitive); "~pat" and "~*pat" (case-insensitive) are Lua
-- patterns, not PCRE, matched anywhere in the header; "" means "no User-Agent header" (a missing
-- or empty one).
function _M.user_agent(s)
  local block, values, disabled = settings("user_agent", s)
  local exact, patterns, ipatterns, none = {}, {}, {}, false
  for i, v in ipairs(values) do
    if v == "" then
      none = true
    elseif sub(v, 1, 2) == "~*" or sub(v, 1, 1) == "~" then
      local ci = sub(v, 1, 2) == "~*"
      local p = sub(v, ci and 3 or 2)
      local err = p == "" and "empty pattern" or check_pattern(p)
      if err then error(format("acl.user_agent: values[%d] = %q: bad Lua pattern: %s", i, v, err), 0) end
      if ci then ipatterns[#ipatterns + 1] = lower_pattern(p) else patterns[#patterns + 1] = p end
    else
      exact[v] = true
    end
  end
  local a = new(block, ua_listed, "user agent not allowed", disabled)
  a.exact, a.patterns, a.ipatterns, a.none = exact, patterns, ipatterns, none
  return a
end

-- ---------------------------------------------------------------------------------------------
-- Country

local function country_listed(self, req)
  local c = req.country
  return c ~= nil and self.set[c] == true
end

-- values: ISO 3166-1 alpha-2 codes (any case). A client whose country is unknown is in no list:
-- admitted by "allow", denied by "deny".
function _M.country(s)
  local block, values, disabled = settings("country", s)
  local a = new(block, country_listed, "country not allowed", disabled)
  a.set = geo.set(values, "acl.country: values")
  return a
end

-- ---------------------------------------------------------------------------------------------
-- IP

local function ip_listed(self, req)
  return ip_in(self.cidrs, req.client_ip)
end

-- values: CIDRs, IPv4 or IPv6 ("10.0.0.0/8", "2001:db8::/32"; a bare address is a /32 or
-- /128). An IPv4 rule also matches the IPv4-mapped form (::ffff:10.1.2.3).
function _M.ip(s)
  local block, values, disabled = settings("ip", s)
  local a = new(block, ip_listed, "address not allowed", disabled)
  a.cidrs = util.compile_cidrs(values, "acl.ip: values")
  return a
end

-- ---------------------------------------------------------------------------------------------
-- Several lists from one settings table: { ip = {...}, referer = {...}, user_agent = {...},
-- country = {...} } -> the enabled ones, cheapest first (the country lookup costs the most).
-- who prefixes the error messages.

local ORDER = { "ip", "referer", "user_agent", "country" }
local LISTS = { ip = true, referer = true, user_agent = true, country = true }

function _M.compile(lists, who)
  who = who or "acl"
  if type(lists) ~= "table" then error(format("%s: expected a table of lists, got %s", who, type(lists)), 0) end
  check_keys(lists, LISTS, who, "list", " (known: ip, referer, user_agent, country)")
  local out = {}
  for _, name in ipairs(ORDER) do
    if lists[name] ~= nil then
      local ok, a = pcall(_M[name], lists[name])
      if not ok then error(who .. ": " .. tostring(a), 0) end
      if not a.disabled then out[#out + 1] = a end
    end
  end
  return out
end

return _M
