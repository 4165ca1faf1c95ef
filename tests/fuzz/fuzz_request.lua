-- The config fuzz_request.c loads policies from (fe_lua_open): resource 1 runs the checking
-- policy next to this file; the others are ready-made policies that read outside input (tokens
-- in the query, Referer, User-Agent, the client address). Every request of the input goes through
-- each of them.
return {
  listen = "127.0.0.1:0",
  resources = {
    { name = "check", prefix = "/check/", type = "live", origin = "http://127.0.0.1:1/",
      policy = "fuzz_request_policy.lua" },
    { name = "md5", prefix = "/md5/", type = "live", origin = "http://127.0.0.1:1/",
      policy = "secure_token", policy_settings = { secret = "s3cret", ip = true } },
    { name = "hmac", prefix = "/hmac/", type = "live", origin = "http://127.0.0.1:1/",
      policy = "secure_token", policy_settings = { type = "hmac", secret = "s3cret", expiry = "nginx" } },
    { name = "nginx", prefix = "/nginx/", type = "live", origin = "http://127.0.0.1:1/",
      policy = "secure_token",
      policy_settings = { type = "nginx", secret_template = "$secure_link_expires$uri$remote_addr$host$arg_a$http_x_b s" } },
    { name = "acl", prefix = "/acl/", type = "live", origin = "http://127.0.0.1:1/",
      policy = "access_control",
      policy_settings = {
        ip = { policy = "allow", values = { "10.0.0.0/8", "2001:db8::/32", "192.0.2.7" } },
        referer = { policy = "deny", values = { "example.com", "*.example.com" }, empty = "allow" },
        user_agent = { policy = "allow", values = { "~*bot", "curl/*", "" } },
      } },
  },
}
