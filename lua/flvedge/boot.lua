-- Run by the C core in each fresh policy state: loads the policies of one config generation and
-- returns the dispatch functions C calls per request. Not part of the policy API.
local jit = require "jit"

local type, tostring, tonumber, error, pairs, next = type, tostring, tonumber, error, pairs, next
local format, find, sub, match, gsub, lower, byte = string.format, string.find, string.sub,
  string.match, string.gsub, string.lower, string.byte
local concat = table.concat

local request, sandbox, charge -- required once package.path is set and the budget is bound

local _M = {}
local policies = {} -- [resource index] = policy table
local pending = {}  -- [request id] = req, kept from access (or cache) to log so req.ctx is shared
local active        -- the req of the phase now running, detached by release() if the phase fails
local env           -- the sandbox: the globals of operator code
local PHASES = { access = 1, origin = 2, log = 4, cache = 8 }

-- Operator code: text only (no bytecode), in the sandbox. Unless compiled is true (the ready-made
-- policies, flvedge's own), it runs in LuaJIT's interpreter so the count hook can always stop it
-- (JIT-compiled loops never see hooks).
local interpreted_sources = {} -- chunk names ("@path") of the operator code loaded so far

local function load_operator_file(path, compiled)
  local chunk, err = loadfile(path, "t", env)
  if not chunk then error(err, 0) end
  if not compiled then
    jit.off(chunk, true)
    interpreted_sources["@" .. path] = true
  end
  return chunk
end

-- Phase functions of operator code are called through C (native.call): a trace of the dispatch
-- below that reached one would abort (the JIT may not compile it), and after a few aborts
-- LuaJIT blacklists the dispatch itself, for every resource. A call to a C function ends the
-- trace cleanly instead (LuaJIT stitches a new one after it).
local interpreted = {} -- [resource index] = { [phase name] = true }
local call_interpreted

-- Modules for require: the operator's (next to the config) first, then the ready-made policies,
-- then the flvedge.* library; no C modules, and nothing from the system's Lua paths.
local function install_loaders(config_dir, policy_dir)
  local loaders = package.loaders
  local preload, library = loaders[1], loaders[2]
  for i = #loaders, 1, -1 do loaders[i] = nil end
  loaders[1] = preload
  loaders[2] = function(name)
    local path, err = package.searchpath(name, config_dir .. "?.lua")
    if not path then return err end
    return load_operator_file(path)
  end
  loaders[3] = function(name)
    local path, err = package.searchpath(name, policy_dir .. "/?.lua")
    if not path then return err end
    return load_operator_file(path, true)
  end
  loaders[4] = library
  package.cpath = ""
end

local function resolve(i, spec, settings, config_dir)
  local p = spec
  if type(p) == "string" then
    if find(p, "%.lua$") then
      p = load_operator_file(sub(p, 1, 1) == "/" and p or config_dir .. p)()
    else
      p = env.require(p)
    end
  end
  if type(p) == "function" then p = p(settings or {}) end
  if type(p) ~= "table" then
    error(format("resources[%d].policy: expected a policy table (or a module returning one), got %s", i, type(p)), 0)
  end
  local bits = 0
  local interp = {}
  for name, bit in pairs(PHASES) do
    local f = p[name]
    if f ~= nil then
      if type(f) ~= "function" then
        error(format("resources[%d].policy.%s: expected a function, got %s", i, name, type(f)), 0)
      end
      bits = bits + bit
      interp[name] = interpreted_sources[require("jit.util").funcinfo(f).source] == true
    end
  end
  policies[i], interpreted[i] = p, interp
  return bits
end

-- The LuaJIT build running this state: "<version> (OpenResty luajit2|LuaJIT), GC64|GC32".
local function luajit_build()
  local openresty = jit.prngstate ~= nil or (pcall(require, "table.nkeys"))
  local gc64 = require("ffi").abi("gc64")
  return format("%s (%s, %s)", jit.version, openresty and "OpenResty luajit2" or "LuaJIT",
    gc64 and "GC64" or "GC32")
end
_M.luajit_build = luajit_build

-- FLVEDGE_JIT_LOG=<file>: the JIT's trace events of every state, a line each, for the benchmarks
-- (tests/bench/policy_bench.py, docs/policy-performance.md):
--   build <text>                     once per state
--   stop <n> <where>                 a trace compiled
--   abort <n> <where> -- <reason> at <where> [blacklisted]
--   flush
-- "blacklisted": the JIT gave up on the trace's start for good (that code stays interpreted).
-- Unset, nothing is attached; in a steady state nothing is written.
local function jit_log(path, params)
  local f = io.open(path, "a")
  if not f then return end
  f:setvbuf("line")
  local util, vmdef, band = require "jit.util", require "jit.vmdef", require("bit").band
  local function where(func, pc)
    local fi = util.funcinfo(func, pc)
    if fi.loc then return fi.loc end
    return fi.addr and format("C:%x", fi.addr) or "?"
  end
  local function opname(func, pc)
    local ins = util.funcbc(func, pc)
    if not ins then return "" end
    local op = band(ins, 0xff)
    return (gsub(sub(vmdef.bcnames, op * 6 + 1, op * 6 + 6), " +$", ""))
  end
  local starts = {} -- [trace number] = { func, pc, side }
  local BLACKLISTED = { ILOOP = true, IFORL = true, IITERL = true, IFUNCF = true, IFUNCV = true }
  f:write("build ", luajit_build(), "\n", "params ", params, "\n")
  jit.attach(function(what, tr, func, pc, otr, oex)
    if what == "start" then
      starts[tr] = { func, pc, otr ~= nil }
    elseif what == "stop" then
      local s = starts[tr]
      f:write(format("stop %d %s\n", tr, s and where(s[1], s[2]) or "?"))
    elseif what == "abort" then
      local s = starts[tr]
      local reason = otr
      if type(otr) == "number" then
        local info = oex
        if type(info) == "function" then info = where(info, 0) end
        reason = format(vmdef.traceerr[otr], info)
      end
      -- The penalty is paid before this event: a root start turned into its I-form (ILOOP,
      -- IFUNCF ...) is blacklisted.
      local black = s and not s[3] and BLACKLISTED[opname(s[1], s[2])]
      f:write(format("abort %d %s -- %s at %s%s\n", tr, s and where(s[1], s[2]) or "?",
        tostring(reason), where(func, pc), black and " blacklisted" or ""))
    else
      f:write(what, "\n")
    end
  end, "trace")
end

-- The JIT's limits, the same on every build: Debian's LuaJIT and OpenResty's luajit2 ship
-- different defaults (maxtrace 1000 / 8000, maxrecord 4000 / 16000, minstitch 0 / 3, maxmcode
-- 512 / 40960 KB), so that a long hook's trace could run out of room ("trace too long") and be
-- blacklisted on one build and not on the other (docs/policy-performance.md). These are
-- luajit2's, with room for more constants and snapshots. FLVEDGE_JIT_OPT="name=value,..."
-- overrides them (for measuring).
local JIT_OPT = { "maxtrace=8000", "maxrecord=16000", "maxirconst=1000", "maxsnap=1000",
  "minstitch=3", "maxmcode=40960" }

local function jit_params()
  local opt = {}
  for i = 1, #JIT_OPT do opt[i] = JIT_OPT[i] end
  local extra = os.getenv("FLVEDGE_JIT_OPT")
  if extra then
    for item in string.gmatch(extra, "[^,%s]+") do opt[#opt + 1] = item end
  end
  jit.opt.start(unpack(opt))
  return concat(opt, " ")
end

-- Returns a list of phase bits per resource, or raises with the reason. native: the meter and the
-- paying pattern functions from C (fe_lua.c).
function _M.load(config_path, quick_policy, nres, lua_dir, policy_dir, native)
  local params = jit_params()
  local log_path = os.getenv("FLVEDGE_JIT_LOG")
  if log_path and log_path ~= "" then jit_log(log_path, params) end
  -- FLVEDGE_JIT_PROFILE=<file>: LuaJIT's profiler (-jp) over this state's life, written when the
  -- state closes (FLVEDGE_JIT_PROFILE_MODE: its flags).
  local prof_path = os.getenv("FLVEDGE_JIT_PROFILE")
  if prof_path and prof_path ~= "" then
    local p = require "jit.p"
    p.start(os.getenv("FLVEDGE_JIT_PROFILE_MODE") or "Fl", prof_path)
    local sentinel = newproxy(true)
    getmetatable(sentinel).__gc = function() p.stop() end
    _M.profile_sentinel = sentinel
  end
  -- FLVEDGE_JIT_DUMP=<file>: LuaJIT's -jdump of this state (FLVEDGE_JIT_DUMP_MODE: its flags).
  local dump_path = os.getenv("FLVEDGE_JIT_DUMP")
  if dump_path and dump_path ~= "" then
    require("jit.dump").on(os.getenv("FLVEDGE_JIT_DUMP_MODE") or "tbisrmX", dump_path)
  end
  local config_dir = config_path and match(config_path, "^(.*/)") or "./"
  package.path = lua_dir .. "/?.lua;" .. lua_dir .. "/?/init.lua"
  local budget = require "flvedge.budget"
  budget.bind(native)
  call_interpreted = native.call
  charge = budget.charge
  sandbox = require "flvedge.sandbox"
  request = require "flvedge.request"
  env = sandbox.new(native)
  install_loaders(config_dir, policy_dir)

  local resources = {}
  if config_path then
    local cfg = load_operator_file(config_path)()
    resources = type(cfg) == "table" and type(cfg.resources) == "table" and cfg.resources or {}
  end
  local bits = {}
  for i = 1, nres do
    local spec, settings
    if quick_policy then
      spec = quick_policy
    elseif type(resources[i]) == "table" then
      spec, settings = resources[i].policy, resources[i].policy_settings
    end
    bits[i] = spec ~= nil and resolve(i, spec, settings, config_dir) or 0
  end
  return bits
end

-- The server frames the answer: a policy's header must not say how long it is or what the
-- connection does next (a second Content-Length desyncs a keep-alive client).
local FRAMING = {
  ["content-length"] = true, ["transfer-encoding"] = true, connection = true, upgrade = true,
  ["keep-alive"] = true, trailer = true,
}

-- Text for a log line or an error message, as nginx's escape=default writes it: `"`, `\`, control
-- bytes, DEL and bytes from 0x80 as \xHH (what the server does to its own access-log fields).
local function hex_byte(c) return format("\\x%02X", byte(c)) end
local function escaped(s)
  if find(s, '[%z\1-\31\127-\255"\\]') then s = gsub(s, '[%z\1-\31\127-\255"\\]', hex_byte) end
  return s
end

local function shown(name)
  return '"' .. escaped(name) .. '"'
end

local function header_lines(headers)
  if headers == nil then return nil end
  if type(headers) ~= "table" then error("access: headers must be a table of name = value", 0) end
  local out = {}
  for k, v in pairs(headers) do
    k, v = tostring(k), tostring(v)
    if charge then charge(#k + #v) end
    if not find(k, "^[%w!#$%%&'*+.^_`|~-]+$") then
      error(format("access: bad response header %s", shown(k)), 0)
    end
    if FRAMING[lower(k)] then
      error(format("access: response header %s frames the answer: the server sets it, not a policy",
        shown(k)), 0)
    end
    -- NUL, CR, LF and the other control bytes but HTAB, and DEL: they would end the head early.
    if find(v, "[%z\1-\8\10-\31\127]") then
      error(format("access: bad response header %s: a control byte in its value", shown(k)), 0)
    end
    out[#out + 1] = k .. ": " .. v .. "\r\n"
  end
  return concat(out)
end

-- Checks what access(req) returned to deny, as the server sends it: the status code, the body as
-- a string (nil for 204 and 304, which have none), the headers as "Name: value\r\n" lines.
-- Raises with the reason; flvedge.testing checks specs' answers with it too.
function _M.check_denial(status, body, headers)
  local code = tonumber(status)
  if not code or code < 200 or code > 599 or code % 1 ~= 0 then
    error(format("access: status must be an integer from 200 to 599 (a 1xx is no answer), got %s",
      tostring(status)), 0)
  end
  if code == 204 or code == 304 then
    body = nil
  elseif body ~= nil and type(body) ~= "string" then
    body = tostring(body)
  end
  return code, body, header_lines(headers)
end

-- What origin(...) returned: a URL string, or nil to use the resource's own / give up.
function _M.check_origin_url(url)
  if url == nil or url == false then return nil end
  if type(url) ~= "string" then
    error(format("origin: expected a URL string or nil, got %s", type(url)), 0)
  end
  return url
end

-- What cache(req, res) may return: the lookup call (res == nil) and the answer call.
local CACHE_FIELDS = {
  lookup = { key = "string", keep_query = "boolean", bypass = "boolean" },
  answer = { ttl = "number", cacheable = "boolean", bypass = "boolean" },
}
local CACHE_KNOWN = { lookup = "key, keep_query, bypass", answer = "ttl, cacheable, bypass" }
local KEY_MAX = 511 -- fe_lua_cache_out.key holds 511 bytes and a NUL

-- Checks what cache(req, res) returned: nil (keep the defaults) or a table of the fields its call
-- may set (call: "lookup" or "answer"). Raises with the reason; flvedge.testing checks specs'
-- answers with it too. Returns the table, or nil.
function _M.check_cache(d, call)
  if d == nil then return nil end
  if type(d) ~= "table" then
    error(format("cache: expected a table or nil, got %s", type(d)), 0)
  end
  local fields = CACHE_FIELDS[call]
  local k, v = next(d)
  while k ~= nil do
    local want = fields[k]
    if not want then
      error(format("cache: unknown field %s in the %s call's answer (it may set %s)",
        type(k) == "string" and shown(k) or tostring(k), call, CACHE_KNOWN[call]), 0)
    end
    if type(v) ~= want then
      error(format("cache: %s must be a %s, got %s", k, want, type(v)), 0)
    end
    k, v = next(d, k)
  end
  local key = d.key
  if key ~= nil then
    if #key < 1 or #key > KEY_MAX then
      error(format("cache: key must be 1 to %d bytes, got %d", KEY_MAX, #key), 0)
    end
    local bad = find(key, "[^\33-\126]")
    if bad then
      error(format("cache: key must be visible ASCII (no space, control or 8-bit byte): byte %d is "
        .. "\\x%02X", bad, byte(key, bad)), 0)
    end
  end
  local ttl = d.ttl
  if ttl ~= nil and not (ttl >= 0 and ttl < math.huge) then -- NaN fails both
    error(format("cache: ttl must be a finite number of seconds >= 0, got %s", tostring(ttl)), 0)
  end
  return d
end

-- access(req) -> nil to admit, or status, body, header lines
function _M.access(i, id, view)
  local p = policies[i]
  local req = request.new(view)
  local keep = p.log or p.cache -- later phases of this request get the same req and req.ctx
  active = req
  if keep then pending[id] = req end
  local status, body, headers
  if interpreted[i].access then
    status, body, headers = call_interpreted(p.access, req)
  else
    status, body, headers = p.access(req)
  end
  active = nil
  if not keep then request.detach(req) end
  if status == nil then return nil end
  local code, text, lines = _M.check_denial(status, body, headers); return code, text, lines
end

function _M.origin(i, view, attempt, last_error)
  local req = request.new(view)
  active = req
  local url
  if interpreted[i].origin then
    url = call_interpreted(policies[i].origin, req, attempt, last_error)
  else
    url = policies[i].origin(req, attempt, last_error)
  end
  active = nil
  request.detach(req)
  return _M.check_origin_url(url)
end

-- cache(req, res): status is nil for the lookup call. Returns key, keep_query, bypass (lookup) or
-- ttl, cacheable, bypass (answer), each nil where the hook left the default.
function _M.cache(i, id, view, status, size, content_type, etag, last_modified, cache_control)
  local p = policies[i]
  local req = pending[id]
  local kept = req ~= nil
  if not kept then
    req = request.new(view)
    -- The lookup call runs while its request does, so the request's log phase (or its end, see
    -- fe_lua_log) releases it; an answer call may come after (a fetch outlives its first viewer),
    -- so it never starts keeping one.
    if status == nil and id ~= 0 then
      pending[id] = req
      kept = true
    end
  end
  local res
  if status ~= nil then
    res = {
      status = status, size = size > 0 and size or nil, content_type = content_type, etag = etag,
      last_modified = last_modified, cache_control = cache_control,
    }
  end
  active = req
  local d
  if interpreted[i].cache then d = call_interpreted(p.cache, req, res) else d = p.cache(req, res) end
  active = nil
  if not kept then request.detach(req) end
  d = _M.check_cache(d, res and "answer" or "lookup")
  if d == nil then return nil end
  if res then return d.ttl, d.cacheable, d.bypass end
  return d.key, d.keep_query, d.bypass
end

local function field_text(v)
  return escaped(tostring(v))
end

function _M.log(i, id, view, status, bytes, duration, cache_status)
  local req = pending[id] or request.new(view)
  pending[id] = nil
  active = req
  local res = { status = status, bytes_sent = bytes, duration = duration, cache_status = cache_status }
  local extra
  if interpreted[i].log then
    extra = call_interpreted(policies[i].log, req, res)
  else
    extra = policies[i].log(req, res)
  end
  active = nil
  request.detach(req)
  if type(extra) ~= "table" then return nil end
  local out = {}
  for k, v in pairs(extra) do
    k, v = field_text(k), field_text(v)
    charge(#k + #v)
    out[#out + 1] = format(' %s="%s"', k, v)
  end
  return concat(out)
end

-- After a phase failed: detaches the request it ran with and, given an id, the one kept for log.
function _M.release(id)
  if active then
    request.detach(active)
    active = nil
  end
  local req = id and pending[id]
  if req then
    pending[id] = nil
    request.detach(req)
  end
end

return _M
