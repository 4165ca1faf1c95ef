-- The checking policy of fuzz_request.c: reads the request as policies do and checks what it
-- sees; then admits, or denies as the x-fuzz-mode header asks ("deny": an answer fuzz_request.c
-- predicts from the request; "raw": status, body and a header straight from the query, which
-- the server must check). It also keeps each request past its phase, and the next request checks
-- that the finished one cannot be read any more.
local type, pairs, pcall, assert, tostring = type, pairs, pcall, assert, tostring
local find = string.find

local last -- the previous request, finished by now

local function finished(f)
  local ok, err = pcall(f)
  return not ok and type(err) == "string" and find(err, "request is finished", 1, true) ~= nil
end

return {
  access = function(req)
    if last then
      -- Fields and headers the previous request never read while it ran.
      assert(finished(function() return last.server_ip end), "a finished request was readable")
      assert(finished(function() return last.headers.x_never_read end), "finished headers were readable")
    end
    last = req
    local method, path, query = req.method, req.path, req.query
    assert(type(method) == "string" and type(path) == "string" and type(query) == "string")
    local n = 0
    for k, v in pairs(req.args) do
      assert(type(k) == "string" and k ~= "" and type(v) == "string", "a bad query argument")
      local h = req.headers[k] -- header names from the input, `_` for `-`
      assert(h == nil or type(h) == "string")
      n = n + 1
    end
    assert(req.args == req.args, "req.args is read once")
    local host, stream, resource, ip = req.host, req.stream, req.resource, req.client_ip
    assert(host == nil or type(host) == "string")
    assert(stream == nil or type(stream) == "string")
    assert(resource == "check" and type(ip) == "string" and type(req.time) == "number")
    assert(req.country == nil) -- no geoip_db
    req.ctx.n = n
    local mode = req.headers.x_fuzz_mode
    if mode == "deny" then
      return 403, method .. " " .. path .. "?" .. query .. "\n" .. (req.headers["X-Fuzz"] or "-"),
        { ["X-Args"] = tostring(n) }
    elseif mode == "raw" then
      local args = req.args
      return args.status, args.body, args.name and { [args.name] = args.value or "" }
    end
  end,
  log = function(req, res)
    assert(res.status == 200 and req.ctx.n ~= nil)
    local args = req.args
    return { path = req.path, query = req.query, [args.field or "field"] = req.headers.x_fuzz }
  end,
}
