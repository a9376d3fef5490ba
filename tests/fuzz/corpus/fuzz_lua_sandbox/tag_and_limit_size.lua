-- tag_and_limit_size.lua: name each application in its transactions and cap its message size.
--
-- One relay serves many applications; a listener's max_message_size is one limit for all of
-- them. This script gives each application (the user it logged in as) a limit of its own
-- below that, and tags its transactions with app = USER so that later filters and the log can
-- tell applications apart. The Postfix equivalent is message_size_limit per smtpd service in
-- master.cf, one service per limit.
--
-- postern.config keys:
--   limits         table: user name = size, for each application with a limit of its own
--   default_limit  optional size for every other client (other users, and clients that did
--                  not log in); without it they have no limit here (max_message_size still
--                  applies)
-- Sizes are written as in postern.toml: a number of bytes, or a string such as "25MiB",
-- "512KB" (units B, KB, MB, GB, KiB, MiB, GiB).
--
--   [[filter]]
--   type = "lua"
--   name = "app_size"
--   script = "scripts/tag_and_limit_size.lua"
--   [filter.config]
--   default_limit = "10MiB"
--   [filter.config.limits]
--   billing = "25MiB"
--   alerts = "256KiB"
--
-- What it does:
--   mail_from  a logged-in client gets the tag app = USER. When the client declared the
--              message size (MAIL FROM:<...> SIZE=N) and N is above its limit, MAIL gets
--              552 5.3.4 Message size exceeds the limit of LIMIT octets for user USER
--              at once, before any data is sent (RFC 1870).
--   data       the message's size as received (header section and body) is checked
--              against the same limit; above it, the end of data gets the same 552 5.3.4
--              and nothing is stored.

local config = postern.config

local kUnits = {
    B = 1,
    KB = 1000, MB = 1000 ^ 2, GB = 1000 ^ 3,
    KiB = 1024, MiB = 1024 ^ 2, GiB = 1024 ^ 3,
}

-- "25MiB", "512 KB", "1000" or 1000 -> 26214400, 512000, 1000, 1000.
local function parse_size(where, value)
    if math.type(value) == "integer" and value > 0 then
        return value
    end
    if type(value) == "string" then
        local digits, unit = value:match("^(%d+)%s*(%a*)$")
        local factor = digits and kUnits[unit == "" and "B" or unit]
        local size = factor and math.tointeger(tonumber(digits) * factor)
        if size and size > 0 then
            return size
        end
    end
    error(("%s: %s is not a size such as \"25MiB\", \"512KB\" or a number of bytes")
        :format(where, tostring(value)))
end

local limits = {}
if config.limits ~= nil then
    if type(config.limits) ~= "table" then
        error("config.limits must be a table of user = size")
    end
    for user, size in pairs(config.limits) do
        limits[user] = parse_size("config.limits." .. user, size)
    end
end
local default_limit
if config.default_limit ~= nil then
    default_limit = parse_size("config.default_limit", config.default_limit)
end
if next(limits) == nil and not default_limit then
    error("set [filter.config.limits] and/or default_limit")
end

-- The limit of this client and how the reply names it.
local function limit_of(conn)
    local user = conn.auth_user
    if user and limits[user] then
        return limits[user], "for user " .. user
    end
    if default_limit then
        return default_limit, user and ("for user " .. user) or "for this client"
    end
    return nil
end

local function too_big(limit, whom)
    return postern.reject(552, "5.3.4",
        ("Message size exceeds the limit of %d octets %s"):format(limit, whom))
end

postern.on("mail_from", function(tx)
    local user = tx.conn.auth_user
    if user then
        tx.tags.app = user
    end
    local limit, whom = limit_of(tx.conn)
    if not limit then
        return
    end
    -- tx.size is the SIZE= the client declared, or 0 when it declared none.
    if tx.size > limit then
        return too_big(limit, whom)
    end
end)

postern.on("data", function(tx, msg)
    local limit, whom = limit_of(tx.conn)
    if not limit then
        return
    end
    -- At data tx.size is the whole message as received: header section and body.
    local size = math.max(tx.size, msg:body_size())
    if size > limit then
        return too_big(limit, whom)
    end
end)
