-- Run by the C core in each fresh policy state: loads the policies of one config generation and
-- returns the dispatch functions C calls per request. Not part of the policy API.
local jit = require "jit"

local type, tostring, tonumber, error, pairs = type, tostring, tonumber, error, pairs
local format, find, sub, match, gsub = string.format, string.find, string.sub, string.match,
  string.gsub
local concat = table.concat

local request, sandbox, charge -- required once package.path is set and the budget is bound

local _M = {}
local policies = {} -- [resource index] = policy table
local pending = {}  -- [request id] = req, kept from access to log so req.ctx is shared
local active        -- the req of the phase now running, detached by release() if the phase fails
local env           -- the sandbox: the globals of operator code
local PHASES = { access = 1, origin = 2, log = 4, cache = 8 }

-- Operator code: text only (no bytecode), in the sandbox. Unless compiled is true (the ready-made
-- policies, flvedge's own), it runs in LuaJIT's interpreter so the count hook can always stop it
-- (JIT-compiled loops never see hooks).
local function load_operator_file(path, compiled)
  local chunk, err = loadfile(path, "t", env)
  if not chunk then error(err, 0) end
  if not compiled then jit.off(chunk, true) end
  return chunk
end

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
  for name, bit in pairs(PHASES) do
    local f = p[name]
    if f ~= nil then
      if type(f) ~= "function" then
        error(format("resources[%d].policy.%s: expected a function, got %s", i, name, type(f)), 0)
      end
      bits = bits + bit
    end
  end
  policies[i] = p
  return bits
end

-- Returns a list of phase bits per resource, or raises with the reason. native: the meter and the
-- paying pattern functions from C (fe_lua.c).
function _M.load(config_path, quick_policy, nres, lua_dir, policy_dir, native)
  local config_dir = config_path and match(config_path, "^(.*/)") or "./"
  package.path = lua_dir .. "/?.lua;" .. lua_dir .. "/?/init.lua"
  local budget = require "flvedge.budget"
  budget.bind(native)
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

local function header_lines(headers)
  if headers == nil then return nil end
  if type(headers) ~= "table" then error("access: headers must be a table of name = value", 0) end
  local out = {}
  for k, v in pairs(headers) do
    k, v = tostring(k), tostring(v)
    if charge then charge(#k + #v) end
    -- CR, LF or NUL in a value would end the line early (C reads the lines as one string).
    if not find(k, "^[%w!#$%%&'*+.^_`|~-]+$") or find(v, "[%z\r\n]") then
      error(format("access: bad response header %q", k), 0)
    end
    out[#out + 1] = k .. ": " .. v .. "\r\n"
  end
  return concat(out)
end

-- Checks what access(req) returned to deny, as the server sends it: the status code, the body as
-- a string, the headers as "Name: value\r\n" lines. Raises with the reason; flvedge.testing
-- checks specs' answers with it too.
function _M.check_denial(status, body, headers)
  local code = tonumber(status)
  if not code or code < 100 or code > 599 or code % 1 ~= 0 then
    error(format("access: status must be an integer from 100 to 599, got %s", tostring(status)), 0)
  end
  if body ~= nil and type(body) ~= "string" then body = tostring(body) end
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

-- access(req) -> nil to admit, or status, body, header lines
function _M.access(i, id, view)
  local p = policies[i]
  local req = request.new(view)
  active = req
  if p.log then pending[id] = req end
  local status, body, headers = p.access(req)
  active = nil
  if not p.log then request.detach(req) end
  if status == nil then return nil end
  return _M.check_denial(status, body, headers)
end

function _M.origin(i, view, attempt, last_error)
  local req = request.new(view)
  active = req
  local url = policies[i].origin(req, attempt, last_error)
  active = nil
  request.detach(req)
  return _M.check_origin_url(url)
end

local function field_text(v)
  v = tostring(v)
  if find(v, '["\\%c]') then v = gsub(v, '["\\%c]', "_") end
  return v
end

function _M.log(i, id, view, status, bytes, duration, cache_status)
  local req = pending[id] or request.new(view)
  pending[id] = nil
  active = req
  local extra = policies[i].log(req, {
    status = status, bytes_sent = bytes, duration = duration, cache_status = cache_status,
  })
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
