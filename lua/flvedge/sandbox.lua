-- flvedge.sandbox: the environment operator code runs in (the config file's policy part, policy
-- files, operator modules next to the config, the ready-made policies). It offers what a policy
-- needs to compute a decision and nothing that could get around the budget or the memory limit,
-- or reach outside the state (docs/policies.md, "The sandbox"):
--   * no load, loadstring, loadfile, dofile: code made at run time would escape the interpreter;
--   * no debug, jit, ffi, io, package, collectgarbage, newproxy (finalizers run without hooks),
--     getfenv, setfenv, module, print, gcinfo, string.dump, os.execute and the like;
--   * pairs honours a __pairs metamethod (req.args has one);
--   * pcall, xpcall and coroutine.resume raise the budget (or memory) error again instead of
--     returning it: once a call tripped, nothing in it can carry on;
--   * string.find/match/gmatch/gsub (also as methods on strings) are C matchers that pay every
--     step; the other string, table and os functions that work in proportion to their input pay
--     for it (flvedge.budget); string.rep refuses a result over the memory limit up front;
--   * require gives operator modules, the ready-made policies, the flvedge.* library and bit,
--     never the server's internals (flvedge.boot, request, budget, sandbox, testing) nor LuaJIT's
--     own modules.
-- Loaded by boot.lua in the server only, after flvedge.budget is bound.
local budget = require "flvedge.budget"

local type, error, select, pairs, ipairs, tostring, tonumber, unpack, pcall, xpcall, setmetatable,
  getmetatable, require = type, error, select, pairs, ipairs, tostring, tonumber, unpack, pcall,
  xpcall, setmetatable, getmetatable, require
local format, find, sub = string.format, string.find, string.sub
local floor, log = math.floor, math.log

local _M = {}

local BASE = { "assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget", "rawset", "select",
  "setmetatable", "getmetatable", "tostring", "type", "_VERSION" }
local OS = { "time", "clock", "difftime", "getenv" }
local INTERNAL = { ["flvedge.boot"] = true, ["flvedge.request"] = true, ["flvedge.budget"] = true,
  ["flvedge.sandbox"] = true, ["flvedge.testing"] = true }

-- LuaJIT's own modules (ffi, jit.*, debug, io, string.buffer, table.new ...): whatever is loaded or
-- preloaded before the library is.
local builtin = {}
for name in pairs(package.loaded) do
  if not find(name, "^flvedge%.") then builtin[name] = true end
end
for name in pairs(package.preload) do builtin[name] = true end
builtin.bit = nil -- the one that is offered

-- Returns the environment table, and installs its string functions as the string metatable's
-- methods. native: what C passed to boot.load; the budget must be bound to it already.
function _M.new(native)
  local charge, tripped = budget.charge, budget.tripped
  local memory_limit = native.memory_limit
  local env = {}
  for _, k in ipairs(BASE) do env[k] = _G[k] end
  env._G = env
  -- pairs honours __pairs (Lua 5.2's rule), so that pairs(req.args) sees every argument although
  -- req.args looks each up only when it is read.
  env.pairs = function(t)
    local mt = getmetatable(t)
    local p = type(mt) == "table" and rawget(mt, "__pairs")
    if p then return p(t) end
    return pairs(t)
  end

  -- Catching stops at a trip: the error comes back out.
  local function after(...)
    local err = tripped()
    if err then error(err, 0) end
    return ...
  end
  env.pcall = function(f, ...) return after(pcall(f, ...)) end
  env.xpcall = function(f, handler, ...) return after(xpcall(f, handler, ...)) end
  local resume = coroutine.resume
  env.coroutine = {
    create = coroutine.create, running = coroutine.running, status = coroutine.status,
    wrap = coroutine.wrap, yield = coroutine.yield,
    resume = function(co, ...) return after(resume(co, ...)) end,
  }

  local function paid(r)
    if type(r) == "string" then charge(#r) end
    return r
  end
  local function count(...)
    charge(select("#", ...))
    return ...
  end
  env.tonumber = function(v, base)
    if type(v) == "string" then charge(#v) end
    return tonumber(v, base)
  end
  env.unpack = function(t, i, j)
    if type(t) == "table" then
      local n = (type(j) == "number" and j or #t) - (type(i) == "number" and i or 1) + 1
      if n > 0 then charge(n) end
    end
    return unpack(t, i, j)
  end

  local S = {}
  S.find, S.match, S.gmatch, S.gsub = native.find, native.match, native.gmatch, native.gsub
  S.len = string.len
  local sbyte, schar, sformat, slower, supper, sreverse, ssub, srep = string.byte, string.char,
    string.format, string.lower, string.upper, string.reverse, string.sub, string.rep
  S.byte = function(s, i, j) return count(sbyte(s, i, j)) end
  S.char = function(...) charge(select("#", ...)) return schar(...) end
  S.format = function(...) return paid(sformat(...)) end
  S.lower = function(s) return paid(slower(s)) end
  S.upper = function(s) return paid(supper(s)) end
  S.reverse = function(s) return paid(sreverse(s)) end
  S.sub = function(s, i, j) return paid(ssub(s, i, j)) end
  S.rep = function(s, n, sep)
    if (type(s) == "string" or type(s) == "number") and type(n) == "number" and n > 0 then
      local size = (#tostring(s) + (type(sep) == "string" and #sep or 0)) * n
      if size > memory_limit then
        error(format("string.rep: a result of %.0f bytes is over lua_memory_limit (%d bytes)", size,
          memory_limit), 2)
      end
      charge(size)
    end
    return srep(s, n, sep)
  end
  env.string = S
  -- Methods on strings ("x"):find(...) are the same functions, for the library too (it uses its
  -- own locals). getmetatable("") gives false, so the table cannot be swapped.
  local smt = getmetatable("")
  smt.__index = S
  smt.__metatable = false

  local tconcat, tinsert, tremove, tsort = table.concat, table.insert, table.remove, table.sort
  env.table = {
    concat = function(t, sep, i, j)
      if type(t) == "table" then charge(#t) end
      return paid(tconcat(t, sep, i, j))
    end,
    insert = function(t, ...)
      if type(t) == "table" then charge(#t) end
      return tinsert(t, ...)
    end,
    remove = function(t, ...)
      if type(t) == "table" then charge(#t) end
      return tremove(t, ...)
    end,
    sort = function(t, cmp)
      if type(t) == "table" then
        local n = #t
        charge(n * (floor(log(n + 1) / log(2)) + 1))
      end
      return tsort(t, cmp)
    end,
  }

  local M = {}
  for k, v in pairs(math) do M[k] = v end
  env.math = M
  local B = {}
  for k, v in pairs(require "bit") do B[k] = v end
  env.bit = B
  local O = {}
  for _, k in ipairs(OS) do O[k] = os[k] end
  local odate = os.date
  O.date = function(fmt, t)
    if type(fmt) == "string" then charge(#fmt) end
    return paid(odate(fmt, t))
  end
  env.os = O

  env.require = function(name)
    if type(name) ~= "string" then
      error("require: expected a module name, got " .. type(name), 2)
    end
    if builtin[name] or INTERNAL[name] or find(name, "^jit%.") then
      error(format("require: module %q is not available to policies", name), 2)
    end
    return require(name)
  end
  return env
end

return _M
