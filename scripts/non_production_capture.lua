-- non_production_capture.lua: mail from test and staging systems never reaches real people.
--
-- Staging systems run with copies of production data: one forgotten cron job and customers
-- get test invoices. Give the non-production applications a listener of their own with
-- tags = ["non-production"]; this script then sends every message of such a listener to a
-- capture route (an outbox directory you can look into) instead of its real recipients,
-- unless every recipient is in a domain you allow (your own team's, say). The Postfix
-- equivalent is a separate smtpd service whose transport_maps send everything to a
-- discard/file transport, or smtp_generic_maps to rewrite the recipients.
--
-- postern.config keys:
--   capture_route  the [route.NAME] that receives captured mail, normally an outbox route
--                  (required)
--   allow_domains  optional list: when every recipient's domain is in it, the message goes
--                  out normally. "example.com" or "*.example.com" (subdomains only). Without
--                  it, every message of a tagged transaction is captured
--   tag            optional: the tag that marks non-production transactions; default
--                  "non-production"
--
--   [[listener]]
--   name = "staging"
--   address = "10.20.0.5:2525"
--   trusted_networks = ["10.20.0.0/16"]
--   tags = ["non-production"]
--
--   [route.capture]
--   outbox = "/var/spool/postern/capture"
--
--   [[filter]]
--   type = "lua"
--   name = "capture"
--   script = "scripts/non_production_capture.lua"
--   [filter.config]
--   capture_route = "capture"
--   allow_domains = ["qa.example.com"]
--
-- What it does:
--   data  for a transaction carrying the tag (tx.tags["non-production"] == "true", set by
--         the listener's tags): when some recipient's domain is not in allow_domains, the
--         whole message goes to capture_route (tx:route), with the tag captured = "true"
--         and a log line naming the first recipient that caused it. The client gets the
--         usual 250. Untagged transactions, and tagged ones whose recipients are all
--         allowed, are not touched.
-- The decision waits for the data stage so that every recipient is known (tx.rcpts: those
-- the client gave, with the changes earlier filters made with tx:add_rcpt and
-- tx:remove_rcpt). That needs the listener's delivery = "queue": in passthrough
-- (tx.passthrough) the recipients have already gone upstream and the route can no longer
-- change. When capturing is impossible there, the message gets 451 4.3.5 and an error log
-- line, never a delivery to the real recipients, whatever the filter's on_error says.
-- A capture_route that is not a [route.NAME] of the configuration (postern.routes) stops the
-- script from loading, so check-config reports it.
-- Put this filter last among those that choose routes or change recipients: a later
-- filter's tx:route() would override the capture, and recipients it adds would not be
-- judged.

local config = postern.config

local capture_route = config.capture_route
if type(capture_route) ~= "string" or capture_route == "" then
    error("set capture_route = \"NAME\" (a [route.NAME], usually an outbox)")
end
-- postern.routes is empty only where no configuration names the routes (postern policy test
-- without --config).
if #postern.routes > 0 then
    local known = false
    for _, name in ipairs(postern.routes) do
        known = known or name == capture_route
    end
    if not known then
        error(("config.capture_route: no [route.%s] (routes: %s)")
            :format(capture_route, table.concat(postern.routes, ", ")))
    end
end

local tag = config.tag or "non-production"
if type(tag) ~= "string" or tag == "" then
    error("config.tag must be a tag name")
end

local allow_domains = config.allow_domains
if type(allow_domains) == "string" then
    allow_domains = { allow_domains }
end
if allow_domains ~= nil then
    if type(allow_domains) ~= "table" or #allow_domains == 0 then
        error("config.allow_domains must be a non-empty list of domains")
    end
    for i, pattern in ipairs(allow_domains) do
        if type(pattern) ~= "string" or pattern == "" then
            error(("config.allow_domains[%d] is not a domain"):format(i))
        end
    end
end

-- The first recipient that is not allowed, or nil when all are.
local function first_outsider(rcpts)
    for _, rcpt in ipairs(rcpts) do
        if not allow_domains or not postern.match.domain(rcpt.domain, allow_domains) then
            return rcpt.address
        end
    end
    return nil
end

postern.on("data", function(tx)
    if tx.tags[tag] ~= "true" then
        return
    end
    local outsider = first_outsider(tx.rcpts)
    if not outsider then
        return
    end
    local problem
    if tx.passthrough then
        problem = "the listener relays live (delivery = \"passthrough\")"
    else
        -- Fails on a passthrough listener whose route stores (the route is fixed at RCPT).
        local ok, err = pcall(tx.route, tx, capture_route)
        problem = not ok and err or nil
    end
    if problem then
        postern.log.error("non-production message not captured, refused:", problem)
        return postern.tempfail(451, "4.3.5",
            "Mail from this system cannot be captured; try again later")
    end
    tx.tags.captured = "true"
    postern.log.info(("captured into route %s: %d recipient(s), first not allowed: %s")
        :format(capture_route, #tx.rcpts, outsider))
end)
