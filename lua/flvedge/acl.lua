-- flvedge.acl: access lists compiled once, checked per request. Each takes
--   { policy = "allow" | "deny", values = { ... } }
-- with the Gcore meaning of the policy type:
--   "allow": allow everything except the listed values (the list is a block list);
--   "deny":  deny everything except the listed values (the list is an allow list).
-- The Gcore API names (policy_type, excepted_values) are accepted too, and enabled = false gives
-- a list that admits everything. :check(req) returns true, or nil, 403, reason.
-- Bad settings raise at compile time, naming the value, so a reload with a bad script is refused.
-- What runs per request keeps to the rules that let LuaJIT compile it whole, on either build
-- (docs/policy-performance.md): no loops (they are in C, core/lua/fe_lua_ffi.c), no tail calls
-- (`local r = f(x); return r`), no Lua patterns.
local util = require "flvedge.util"
local geo = require "flvedge.geo"
local budget = require "flvedge.budget"

local type, tostring, error, ipairs, pairs, setmetatable, pcall = type, tostring, error, ipairs,
  pairs, setmetatable, pcall
local format, find, sub, lower, match, byte, gsub = string.format, string.find, string.sub,
  string.lower, string.match, string.byte, string.gsub
local ip_in, check_keys, blank = util.ip_in, util.check_keys, util.blank
local N, buffer, ffi_string = util.native, util.buffer, require("ffi").string
local concat, char = table.concat, string.char
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

-- The host of a Referer: scheme optional, userinfo and port dropped, lowercase, a trailing dot
-- dropped. "" when there is none ("http:///x", "?q").
local function referer_host(ref)
  local n = #ref
  charge(n)
  local out = buffer(n + 1)
  local r = ffi_string(out, N.fe_lua_ffi_referer_host(ref, n, out, n)); return r
end
_M.referer_host = referer_host

-- A host name has at most 253 characters (RFC 1035): a longer one is in no suffix list, and the
-- walk over its dots stays small (8 KB of "." in a Referer once took a whole lua_budget).
local MAX_HOST = 253

local function host_listed(self, host)
  if self.exact[host] then return true end
  local n, set = #host, self.suffix_set
  if n > MAX_HOST or set == nil then return false end
  charge(n + #set)
  return N.fe_lua_ffi_suffix_in(host, n, set, #set) == 1
end

local referer_mt = { __index = setmetatable({}, acl_mt) }
function referer_mt.__index.check(self, req)
  if self.disabled then return true end
  local ref = req.headers.referer
  if ref == nil or blank(ref) then
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
  -- The suffixes as fe_lua_ffi_suffix_in reads them: "\n.example.com\n.example.org\n".
  local list = {}
  for sfx in pairs(suffixes) do list[#list + 1] = sfx end
  if #list > 0 then a.suffix_set = "\n" .. concat(list, "\n") .. "\n" end
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

-- Patterns without magic characters are plain strings: one C scan looks for them all.
local function literal(p)
  return #p <= 255 and not find(p, "[%^%$%(%)%%%.%[%]%*%+%-%?]")
end

-- { "bot", "spider" } -> "\3bot\6spider" (fe_lua_ffi_find_any's set), or nil when empty.
local function literal_set(list)
  if #list == 0 then return nil end
  local parts = {}
  for i, lit in ipairs(list) do parts[i] = char(#lit) .. lit end
  return concat(parts)
end

local function ua_listed(self, req)
  local ua = req.headers.user_agent
  if ua == nil or ua == "" then return self.none end
  if self.exact[ua] then return true end
  local n = #ua
  local lits, ilits = self.literals, self.iliterals
  if lits then
    charge(n * self.nliterals)
    if N.fe_lua_ffi_find_any(ua, n, lits, #lits, 0) == 1 then return true end
  end
  if ilits then
    charge(n * self.niliterals)
    if N.fe_lua_ffi_find_any(ua, n, ilits, #ilits, 1) == 1 then return true end
  end
  -- The operator's other patterns on the client's header: matched by the paying matcher.
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
  local literals, iliterals = {}, {}
  for i, v in ipairs(values) do
    if v == "" then
      none = true
    elseif sub(v, 1, 2) == "~*" or sub(v, 1, 1) == "~" then
      local ci = sub(v, 1, 2) == "~*"
      local p = sub(v, ci and 3 or 2)
      local err = p == "" and "empty pattern" or check_pattern(p)
      if err then error(format("acl.user_agent: values[%d] = %q: bad Lua pattern: %s", i, v, err), 0) end
      if ci then
        p = lower_pattern(p)
        if literal(p) then iliterals[#iliterals + 1] = p else ipatterns[#ipatterns + 1] = p end
      elseif literal(p) then
        literals[#literals + 1] = p
      else
        patterns[#patterns + 1] = p
      end
    else
      exact[v] = true
    end
  end
  local a = new(block, ua_listed, "user agent not allowed", disabled)
  a.exact, a.patterns, a.ipatterns, a.none = exact, patterns, ipatterns, none
  a.literals, a.iliterals = literal_set(literals), literal_set(iliterals)
  a.nliterals, a.niliterals = #literals, #iliterals
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
  local r = ip_in(self.cidrs, req.client_ip); return r
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

-- One check over the lists compile() gave, in their order, the first refusal answering:
-- check(req) -> true | nil, 403, reason, or nil when there are no lists. Straight-line code over at
-- most four lists (compile gives one per kind), not a loop: a loop here is where LuaJIT stopped
-- the hook's trace (docs/policy-performance.md).
function _M.checker(lists)
  local n = #lists
  if n > 4 then error("acl.checker: at most four lists (one per kind, as compile gives)", 2) end
  if n == 0 then return nil end
  local l1, l2, l3, l4 = lists[1], lists[2], lists[3], lists[4]
  return function(req)
    local ok, status, reason = l1:check(req)
    if ok and l2 then ok, status, reason = l2:check(req) end
    if ok and l3 then ok, status, reason = l3:check(req) end
    if ok and l4 then ok, status, reason = l4:check(req) end
    return ok, status, reason
  end
end

return _M
