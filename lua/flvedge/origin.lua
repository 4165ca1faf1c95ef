-- flvedge.origin: origin pickers for a policy's origin(req, attempt, last_error) phase. Each
-- builder compiles its list once and returns such a function: attempt 1 picks an origin, attempt
-- 2, 3... (after a failure) move on to another one, and nil means "no more": give up (or, on
-- attempt 1, use the resource's own origin).
--
-- An entry is the URL the edge pulls. "{stream}" in it is replaced by req.stream
-- ("http://10.0.0.5/live/{stream}.flv"); without it the URL is used as written. When an entry
-- has "{stream}" and the request has no stream, the picker returns nil.
local bit = require "bit"
local charge = require("flvedge.budget").charge

local type, tostring, tonumber, error, ipairs, setmetatable = type, tostring, tonumber, error,
  ipairs, setmetatable
local format, find, sub, byte, match = string.format, string.find, string.sub, string.byte, string.match
local bxor, lshift, rshift, tobit = bit.bxor, bit.lshift, bit.rshift, bit.tobit
local floor = math.floor
local sort = table.sort

local _M = {}

-- ---------------------------------------------------------------------------------------------
-- Entries

local function compile_url(u, what)
  if type(u) ~= "string" or u == "" then
    error(format("%s: expected a URL string, got %s", what, u == "" and '""' or type(u)), 0)
  end
  local s, e = find(u, "{stream}", 1, true)
  if s and find(u, "{stream}", e + 1, true) then
    error(format("%s: %q has {stream} more than once", what, u), 0)
  end
  if not s then return { url = u } end
  return { url = u, pre = sub(u, 1, s - 1), post = sub(u, e + 1) }
end

local function expand(entry, req)
  if not entry.pre then return entry.url end
  local stream = req.stream
  if stream == nil or stream == "" then return nil end
  return entry.pre .. stream .. entry.post
end

-- A resource-style origin base as a pull URL template, the way the server builds its own:
-- "http://10.0.0.5/live/" -> "http://10.0.0.5/live/{stream}.flv". A URL that has {stream} or
-- ends in .flv (one file for every stream) is kept as it is.
function _M.stream_template(base)
  if type(base) ~= "string" or base == "" then
    error("origin.stream_template: expected a URL string, got " .. type(base), 2)
  end
  if find(base, "{stream}", 1, true) or find(base, "%.flv$") then return base end
  charge(#base)
  local n = #base
  while byte(base, n) == 47 do n = n - 1 end -- trailing slashes ("/+$" would be quadratic)
  return sub(base, 1, n) .. "/{stream}.flv"
end

-- The entries of a builder's argument: its list part, or t.urls / t.origins.
local function entries_of(t, what)
  if type(t) ~= "table" then error(format("%s: expected a table of origins, got %s", what, type(t)), 0) end
  local list = t.urls or t.origins or t
  if type(list) ~= "table" or #list == 0 then error(format("%s: needs at least one origin", what), 0) end
  return list
end

-- order[start] = indices of the distinct URLs, in list order from start, wrapping around.
local function rotations(entries)
  local order, n = {}, #entries
  for start = 1, n do
    local seen, o = {}, {}
    for k = 0, n - 1 do
      local i = (start - 1 + k) % n + 1
      local u = entries[i].url
      if not seen[u] then
        seen[u] = true
        o[#o + 1] = i
      end
    end
    order[start] = o
  end
  return order
end

-- ---------------------------------------------------------------------------------------------
-- ordered: the first, then the second after a failure, ...

function _M.ordered(t)
  local list = entries_of(t, "origin.ordered")
  local entries = {}
  for i, u in ipairs(list) do entries[i] = compile_url(u, format("origin.ordered[%d]", i)) end
  return function(req, attempt)
    local e = entries[attempt]
    return e and expand(e, req)
  end
end

-- ---------------------------------------------------------------------------------------------
-- weighted: smooth weighted round-robin (nginx's) on attempt 1; after a failure, the next
-- distinct origin in list order from the one picked. Weight 0 = only used after a failure.

-- Which entry attempt 1 picked per stream, for the attempts after it. The origin phase of each
-- attempt sees a fresh request (req.ctx is not kept), so the picker remembers; two generations
-- of at most RECENT entries keep that bounded. A stream forgotten meanwhile fails over in list
-- order from the first entry.
local RECENT = 1024

function _M.weighted(t)
  local list = entries_of(t, "origin.weighted")
  local entries, weights, current = {}, {}, {}
  local positive = false
  for i, o in ipairs(list) do
    local what = format("origin.weighted[%d]", i)
    local url, w = o, 1
    if type(o) == "table" then url, w = o.url, o.weight == nil and 1 or o.weight end
    if type(w) ~= "number" or w < 0 or w ~= w or w == math.huge then
      error(format("%s: weight must be a number >= 0, got %s", what, tostring(w)), 0)
    end
    entries[i], weights[i], current[i] = compile_url(url, what), w, 0
    positive = positive or w > 0
  end
  if not positive then error("origin.weighted: at least one origin needs a weight above 0", 0) end
  local n, order = #entries, rotations(entries)
  local recent, old, count = {}, {}, 0

  local function pick()
    charge(n)
    local best, total = nil, 0
    for i = 1, n do
      local w = weights[i]
      if w > 0 then
        current[i] = current[i] + w
        total = total + w
        if not best or current[i] > current[best] then best = i end
      end
    end
    current[best] = current[best] - total
    return best
  end

  return function(req, attempt)
    local key = req.stream or req.path or ""
    if attempt == 1 then
      local i = pick()
      if recent[key] == nil then
        count = count + 1
        if count > RECENT then recent, old, count = {}, recent, 1 end
      end
      recent[key] = i
      return expand(entries[i], req)
    end
    local start = recent[key] or old[key] or 1
    local i = order[start][attempt]
    return i and expand(entries[i], req)
  end
end

-- ---------------------------------------------------------------------------------------------
-- hash: consistent hashing of the stream name on a ring of virtual nodes, so that a stream's
-- origin is stable and adding or removing one of N origins moves only about 1/N of the streams.
-- After a failure: the next distinct origin clockwise on the ring.

-- A 32-bit multiply modulo 2^32 without losing bits in a double.
local function mul32(a, b)
  local bl, bh = b % 65536, floor(b / 65536)
  return tobit(a * bl + lshift(tobit(a * bh), 16))
end

-- FNV-1a (32 bit) with murmur3's finalizer for a good spread of short similar keys.
-- Returns an unsigned number in [0, 2^32).
local function hash32(s)
  charge(#s)
  local h = tobit(2166136261)
  for i = 1, #s do
    h = bxor(h, byte(s, i))
    h = tobit(lshift(h, 24) + h * 403) -- h * 16777619
  end
  h = bxor(h, rshift(h, 16))
  h = mul32(h, 0x85ebca6b)
  h = bxor(h, rshift(h, 13))
  h = mul32(h, 0xc2b2ae35)
  h = bxor(h, rshift(h, 16))
  return h % 4294967296
end
_M.hash32 = hash32

local MAX_HASH_ORIGINS = 1024

function _M.hash(t)
  local list = entries_of(t, "origin.hash")
  local replicas = type(t) == "table" and t.replicas or 160
  if type(replicas) ~= "number" or replicas < 1 or replicas > 10000 or replicas % 1 ~= 0 then
    error(format("origin.hash: replicas must be an integer from 1 to 10000, got %s", tostring(replicas)), 0)
  end
  if #list > MAX_HASH_ORIGINS then error("origin.hash: at most 1024 origins", 0) end
  local entries, seen, keys = {}, {}, {}
  for i, u in ipairs(list) do
    local what = format("origin.hash[%d]", i)
    entries[i] = compile_url(u, what)
    if seen[u] then error(format("%s: %q is listed twice", what, u), 0) end
    seen[u] = true
    -- Points depend on the URL only: other origins' points stay put when one is added.
    for r = 0, replicas - 1 do
      keys[#keys + 1] = hash32(u .. "#" .. r) * MAX_HASH_ORIGINS + (i - 1)
    end
  end
  sort(keys)
  local npoints, points, owners = #keys, {}, {}
  for k = 1, npoints do
    owners[k] = keys[k] % MAX_HASH_ORIGINS + 1
    points[k] = floor(keys[k] / MAX_HASH_ORIGINS)
  end
  local n = #entries
  local stamp, seen_at = 0, {}

  -- The first point at or after h (wrapping to the first).
  local function locate(h)
    local lo, hi = 1, npoints
    if h > points[npoints] then return 1 end
    while lo < hi do
      local mid = floor((lo + hi) / 2)
      if points[mid] < h then lo = mid + 1 else hi = mid end
    end
    return lo
  end

  return function(req, attempt)
    if attempt > n then return nil end
    local key = req.stream or req.path or ""
    local pos = locate(hash32(key))
    stamp = stamp + 1
    local found = 0
    for k = 1, npoints do
      local o = owners[pos]
      if seen_at[o] ~= stamp then
        seen_at[o] = stamp
        found = found + 1
        if found == attempt then
          charge(k)
          return expand(entries[o], req)
        end
      end
      pos = pos == npoints and 1 or pos + 1
    end
    charge(npoints)
    return nil
  end
end

-- ---------------------------------------------------------------------------------------------
-- Which failures move on to the next origin. last_error is what the server reports:
-- "unreachable", "timeout" or "status NNN" at any stage; in the middle of a live stream also
-- "stall" (nothing for origin_read_timeout), "broken" (connection lost, bad FLV), "ended" (a clean
-- end: nil then ends the stream) and "down" (the URL just given is marked down; the next one?).

local ERROR_ALIAS = { error = "unreachable", unreachable = "unreachable", timeout = "timeout",
  stall = "stall", broken = "broken", ended = "ended", down = "down" }

-- { "unreachable", "timeout", "stall", "broken", "ended", "down", "5xx", "404", "status 429",
--   "http_503" } -> a compiled set.
function _M.errors(list)
  if type(list) ~= "table" then error("origin.errors: expected a list, got " .. type(list), 2) end
  local set = { exact = {}, class = {} }
  for i, v in ipairs(list) do
    local s = type(v) == "string" and v or ""
    local class = match(s, "^([45])xx$")
    local code = match(s, "^status ([1-5]%d%d)$") or match(s, "^http_([1-5]%d%d)$")
      or match(s, "^([1-5]%d%d)$")
    if ERROR_ALIAS[s] then
      set.exact[ERROR_ALIAS[s]] = true
    elseif class then
      set.class[tonumber(class)] = true
    elseif code then
      set.exact["status " .. code] = true
    else
      error(format('origin.errors[%d]: %s is not "unreachable", "timeout", "stall", "broken", '
        .. '"ended", "down", "4xx", "5xx" or a status code', i,
        type(v) == "string" and format("%q", v) or type(v)), 2)
    end
  end
  return set
end

local compiled_errors = setmetatable({}, { __mode = "k" })

-- Whether last_error is one of set (a list, or origin.errors(list)).
function _M.failover_on(last_error, set)
  if type(last_error) ~= "string" then return false end
  if not set.exact then
    local c = compiled_errors[set]
    if not c then
      c = _M.errors(set)
      compiled_errors[set] = c
    end
    set = c
  end
  if set.exact[last_error] then return true end
  if #last_error ~= 10 or sub(last_error, 1, 7) ~= "status " then return false end
  return set.class[byte(last_error, 8) - 48] == true
end

return _M
