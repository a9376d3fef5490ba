-- require_headers.lua: every message leaves with a Date: and a Message-ID:.
--
-- RFC 5322 3.6 requires Date: (and asks for Message-ID:); providers score messages without
-- them as spam or refuse them, and a missing Message-ID: makes threads and duplicates hard to
-- trace. Scripts and printers often leave both out. This script either adds what is missing or
-- refuses the message so that the application gets fixed. The Postfix equivalent of "add" is
-- always_add_missing_headers (with local_header_rewrite_clients).
--
-- postern.config keys:
--   mode     "add" (the default): add the missing headers; "reject": refuse the message
--   headers  optional list of the headers to require; default ["Message-ID", "Date"]. In
--            "reject" mode any header name may be listed; "add" can make only these two
--   domain   optional: the part after @ in added Message-IDs; default: postern.hostname, the
--            server's [server] hostname (the host that made the id, as RFC 5322 3.6.4
--            suggests), or "postern.invalid" where it is empty (`postern policy test`)
--
--   [[filter]]
--   type = "lua"
--   name = "require_headers"
--   script = "scripts/require_headers.lua"
--   [filter.config]
--   mode = "add"
--   domain = "relay.example.com"
--
-- What it does:
--   data  a header counts as missing when the message has no such field or only an empty
--         one. "reject": the end of data gets
--           550 5.6.0 Message lacks required headers: Message-ID, Date
--         (naming what is missing) and nothing is stored. "add": a missing Date: becomes the
--         current time in UTC ("Date: Tue, 03 Feb 2026 14:05:09 +0000") and a missing
--         Message-ID: becomes <SHA256@DOMAIN>, the SHA-256 of the queue id and the time;
--         the tag headers_added lists what was added.
-- "add" needs delivery = "queue": in passthrough the message is already on its way upstream
-- and the edit fails (451 4.3.0, filter_failed in the log). "reject" works in both modes.

local config = postern.config

local mode = config.mode or "add"
if mode ~= "add" and mode ~= "reject" then
    error("config.mode must be \"add\" or \"reject\", not " .. tostring(mode))
end

-- Dot-separated labels of letters, digits, "-" and "_".
local function is_domain(value)
    if type(value) ~= "string" or value == "" or #value > 255 then
        return false
    end
    for label in (value .. "."):gmatch("(.-)%.") do
        if not label:match("^[%w_%-]+$") then
            return false
        end
    end
    return true
end

local domain = config.domain
if domain ~= nil and not is_domain(domain) then
    error("config.domain must be a domain such as \"relay.example.com\"")
end
-- Without config.domain: this server's name.
local id_domain = postern.hostname ~= "" and postern.hostname or "postern.invalid"

-- How "add" makes each header it knows.
local makers = {
    ["date"] = function()
        return os.date("!%a, %d %b %Y %H:%M:%S +0000")
    end,
    ["message-id"] = function(tx)
        local right = domain or id_domain
        local hash = postern.hash.sha256(tx.id .. "/" .. os.time() .. "/" .. os.clock())
        return "<" .. hash .. "@" .. right .. ">"
    end,
}

local wanted = config.headers or { "Message-ID", "Date" }
if type(wanted) == "string" then
    wanted = { wanted }
end
if type(wanted) ~= "table" then
    error("config.headers must be a list of header names")
end
local required = {}
for i, name in ipairs(wanted) do
    if type(name) ~= "string" or not name:match("^[!-9;-~]+$") then
        error(("config.headers[%d] is not a header name"):format(i))
    end
    if mode == "add" and not makers[name:lower()] then
        error(("mode \"add\" can add Date and Message-ID, not %s"):format(name))
    end
    required[#required + 1] = name
end
if #required == 0 then
    error("config.headers is empty")
end

local function missing(msg, name)
    local value = msg:header(name)
    return value == nil or value == ""
end

postern.on("data", function(tx, msg)
    local absent = {}
    for _, name in ipairs(required) do
        if missing(msg, name) then
            absent[#absent + 1] = name
        end
    end
    if #absent == 0 then
        return
    end
    if mode == "reject" then
        local noun = #absent == 1 and "header" or "headers"
        return postern.reject(550, "5.6.0",
            ("Message lacks required %s: %s"):format(noun, table.concat(absent, ", ")))
    end
    for _, name in ipairs(absent) do
        msg:set_header(name, makers[name:lower()](tx))
    end
    tx.tags.headers_added = table.concat(absent, ",")
end)
