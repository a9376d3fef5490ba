-- route_by_sender.lua: choose the route by who sends.
--
-- Send each application's mail through its own smarthost: bulk mail through a provider,
-- invoices through the company MTA, alerts through a second provider. The Postfix equivalent
-- is sender_dependent_relayhost_maps, which goes by the envelope sender only.
--
-- For the simple cases postern needs no script: [[route_rule]] sender_domain routes by the
-- sender's domain and [user.NAME] route by the logged-in user. Use this script when a rule
-- needs both (this user, but only for that domain), or as the starting point for routing the
-- built-in rules cannot express.
--
-- postern.config keys: rules, an ordered list; the first rule that matches wins. Each rule:
--   route          the [route.NAME] to use (required)
--   auth_user      optional: user name(s) the client logged in as (conn.auth_user)
--   sender_domain  optional: domain(s) of the envelope sender (MAIL FROM), "example.com" or
--                  "*.example.com" (subdomains only) as in [[route_rule]]. The sender as
--                  this filter sees it: after an earlier filter's tx:set_mail_from
-- A rule with both conditions needs both; each may be one string or a list (any entry
-- matches). A rule needs at least one condition. The null sender <> has no domain, so it
-- matches no sender_domain.
--
--   [[filter]]
--   type = "lua"
--   name = "route_by_sender"
--   script = "scripts/route_by_sender.lua"
--   [[filter.config.rules]]
--   auth_user = "newsletter"
--   sender_domain = "news.example.com"
--   route = "bulk"
--   [[filter.config.rules]]
--   sender_domain = ["example.com", "*.example.com"]
--   route = "corporate"
--
-- What it does:
--   mail_from  the first matching rule's route is chosen with tx:route(), which overrides
--              [[route_rule]] and the listener's route for the whole transaction, and the
--              tag sender_route = ROUTE is set. Without a match nothing changes: postern
--              routes as configured.
-- The route is chosen at MAIL, before any recipient, so it works in passthrough mode too.
-- A rule naming a route that is not a [route.NAME] of the configuration (postern.routes)
-- stops the script from loading: check-config names the rule.

local config = postern.config

-- A string or a non-empty list of strings from a rule, as a plain list (or nil when unset).
local function string_list(where, value)
    if value == nil then
        return nil
    end
    if type(value) == "string" then
        value = { value }
    end
    if type(value) ~= "table" or #value == 0 then
        error(where .. " must be a string or a non-empty list")
    end
    local list = {}
    for i, entry in ipairs(value) do
        if type(entry) ~= "string" or entry == "" then
            error(("%s[%d] must be a non-empty string"):format(where, i))
        end
        list[i] = entry
    end
    return list
end

local rules = {}
if type(config.rules) ~= "table" or #config.rules == 0 then
    error("no rules: add [[filter.config.rules]] tables with a route")
end
for i, rule in ipairs(config.rules) do
    local where = ("config.rules[%d]"):format(i)
    if type(rule) ~= "table" then
        error(where .. " must be a table")
    end
    for key in pairs(rule) do
        if key ~= "route" and key ~= "auth_user" and key ~= "sender_domain" then
            error(("%s.%s is not a key (route, auth_user, sender_domain)")
                :format(where, key))
        end
    end
    if type(rule.route) ~= "string" or rule.route == "" then
        error(where .. " needs route = \"NAME\"")
    end
    local users = string_list(where .. ".auth_user", rule.auth_user)
    local domains = string_list(where .. ".sender_domain", rule.sender_domain)
    if not users and not domains then
        error(where .. " needs auth_user or sender_domain")
    end
    rules[i] = { route = rule.route, users = users, domains = domains }
end

-- postern.routes is empty only where no configuration names the routes (postern policy test
-- without --config).
local known_routes = {}
for _, name in ipairs(postern.routes) do
    known_routes[name] = true
end
if #postern.routes > 0 then
    for i, rule in ipairs(rules) do
        if not known_routes[rule.route] then
            error(("config.rules[%d].route: no [route.%s] (routes: %s)")
                :format(i, rule.route, table.concat(postern.routes, ", ")))
        end
    end
end

local function contains(list, value)
    for _, entry in ipairs(list) do
        if entry == value then
            return true
        end
    end
    return false
end

local function matches(rule, user, sender_domain)
    if rule.users and not (user and contains(rule.users, user)) then
        return false
    end
    if rule.domains and not postern.match.domain(sender_domain, rule.domains) then
        return false
    end
    return true
end

postern.on("mail_from", function(tx)
    local user = tx.conn.auth_user
    local sender_domain = tx.mail_from.domain
    for _, rule in ipairs(rules) do
        if matches(rule, user, sender_domain) then
            tx:route(rule.route)
            tx.tags.sender_route = rule.route
            return
        end
    end
end)
