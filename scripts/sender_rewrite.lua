-- sender_rewrite.lua: give each application's mail a proper header From:.
--
-- Internal applications often write "From: root@build-42.internal" or "noreply@localhost".
-- This script replaces the header From: per application (the user it logged in as, or the
-- listener it used) with an address your domain can send from, optionally with a Reply-To:
-- and a Sender:, and keeps the original in X-Original-From:. The Postfix equivalent is
-- smtp_header_checks or sender_canonical_maps with canonical_classes = header_sender.
--
-- What it does NOT change: the envelope sender (MAIL FROM, tx.mail_from). Policy scripts
-- cannot change it. Bounces and delivery reports still go to the address the application
-- gave in MAIL FROM, and a smarthost that checks the envelope sender (SPF, a provider's list
-- of verified senders) still sees it. To control the envelope sender, restrict it with
-- [user.NAME] allowed_senders so that each application must use an accepted one.
--
-- postern.config keys: two tables of rules, users (by conn.auth_user) and listeners (by
-- conn.listener: every client of that listener without a rule of its own as a user).
-- Each rule:
--   from      the new header From:, e.g. "Billing <billing@example.com>" (required)
--   reply_to  optional: an address for Reply-To: (replaces any Reply-To: the message has), or
--             "original": the original From: becomes Reply-To:, unless the message has one
--   sender    optional: an address for Sender: (replaces any Sender: the message has)
--
--   [[filter]]
--   type = "lua"
--   name = "sender_rewrite"
--   script = "scripts/sender_rewrite.lua"
--   [filter.config.users.billing]
--   from = "Example Billing <billing@example.com>"
--   reply_to = "accounts@example.com"
--   [filter.config.users.monitoring]
--   from = "Monitoring <alerts@example.com>"
--   reply_to = "original"
--   [filter.config.listeners.printers]
--   from = "Scanner <scanner@example.com>"
--   sender = "relay@example.com"
--
-- What it does:
--   data  when a rule applies: the first From: field is saved in X-Original-From: (an
--         X-Original-From: the client wrote itself is replaced or removed, so it cannot be
--         forged; a value over 900 octets is cut), From: is set to `from` (all From:
--         fields become this one), then Reply-To: and Sender: as configured. The tag
--         sender_rewrite = "user NAME" or "listener NAME" records which rule applied.
--         Messages without a matching rule are not touched.
-- Header edits need delivery = "queue": in passthrough the message is already on its way
-- upstream, and the edit fails (451 4.3.0, filter_failed in the log).

local config = postern.config

-- A header value from the configuration: one line, not empty, within the header limit.
local function header_value(where, value)
    if type(value) ~= "string" or value == "" or #value > 900 or value:find("[%c]") then
        error(where .. " must be one line of text (at most 900 octets)")
    end
    return value
end

-- Copies and checks the rules of config[kind] (users or listeners) into a plain table.
local function load_rules(kind)
    local rules = {}
    local section = config[kind]
    if section == nil then
        return rules
    end
    if type(section) ~= "table" then
        error("config." .. kind .. " must be a table of rules")
    end
    for name, rule in pairs(section) do
        local where = ("config.%s.%s"):format(kind, name)
        if type(rule) ~= "table" then
            error(where .. " must be a table with from = \"...\"")
        end
        for key in pairs(rule) do
            if key ~= "from" and key ~= "reply_to" and key ~= "sender" then
                error(("%s.%s is not a key (from, reply_to, sender)"):format(where, key))
            end
        end
        local from = header_value(where .. ".from", rule.from)
        if not from:find("@", 1, true) then
            error(where .. ".from has no address")
        end
        local reply_to, sender
        if rule.reply_to ~= nil then
            reply_to = header_value(where .. ".reply_to", rule.reply_to)
        end
        if rule.sender ~= nil then
            sender = header_value(where .. ".sender", rule.sender)
        end
        rules[name] = {
            label = (kind == "users" and "user " or "listener ") .. name,
            from = from,
            reply_to = reply_to,
            sender = sender,
        }
    end
    return rules
end

local by_user = load_rules("users")
local by_listener = load_rules("listeners")
if next(by_user) == nil and next(by_listener) == nil then
    error("no rules: add [filter.config.users.NAME] or [filter.config.listeners.NAME]")
end

-- A header value is at most 900 octets: longer originals are cut, on a UTF-8 boundary.
local function shorten(value)
    if #value <= 900 then
        return value
    end
    local cut = 900
    while cut > 1 and value:byte(cut + 1) >= 0x80 and value:byte(cut + 1) < 0xC0 do
        cut = cut - 1
    end
    return value:sub(1, cut)
end

postern.on("data", function(tx, msg)
    local conn = tx.conn
    local rule = (conn.auth_user and by_user[conn.auth_user]) or by_listener[conn.listener]
    if not rule then
        return
    end

    local original = msg:header("From")
    if original == "" then
        original = nil
    end
    if original and original ~= rule.from then
        msg:set_header("X-Original-From", shorten(original))
    else
        msg:remove_header("X-Original-From")
    end
    msg:set_header("From", rule.from)

    if rule.reply_to == "original" then
        if original and not msg:header("Reply-To") then
            msg:set_header("Reply-To", shorten(original))
        end
    elseif rule.reply_to then
        msg:set_header("Reply-To", rule.reply_to)
    end
    if rule.sender then
        msg:set_header("Sender", rule.sender)
    end
    tx.tags.sender_rewrite = rule.label
end)
