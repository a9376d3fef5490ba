-- sender_rewrite.lua: give each application's mail a proper sender, envelope and header From:.
--
-- Internal applications often send as "root@build-42.internal" or "noreply@localhost", in the
-- envelope (MAIL FROM) and in the header From:. Per application (the user it logged in as, or
-- the listener it used) this script replaces both with an address your domain can send from,
-- optionally with a Reply-To: and a Sender:, and keeps the original header in
-- X-Original-From:. The Postfix equivalent is sender_canonical_maps (canonical_classes =
-- envelope_sender, header_sender) per client, or smtp_generic_maps.
--
-- postern.config keys: two tables of rules, users (by conn.auth_user) and listeners (by
-- conn.listener: every client of that listener without a rule of its own as a user).
-- Each rule:
--   from           the new header From:, e.g. "Billing <billing@example.com>" (required)
--   envelope_from  optional: the new envelope sender (MAIL FROM), a plain address such as
--                  "bounces@example.com". Default: the address in `from`. "original": keep
--                  the envelope sender the client gave
--   reply_to       optional: an address for Reply-To: (replaces any Reply-To: the message
--                  has), or "original": the original From: becomes Reply-To:, unless the
--                  message has one
--   sender         optional: an address for Sender: (replaces any Sender: the message has)
-- The envelope sender must be a plain local@domain (dot-atom local part, a domain of letters,
-- digits, "-" and "_"): a `from` whose address is not, without envelope_from, stops the script
-- from loading.
--
--   [[filter]]
--   type = "lua"
--   name = "sender_rewrite"
--   script = "scripts/sender_rewrite.lua"
--   [filter.config.users.billing]
--   from = "Example Billing <billing@example.com>"
--   envelope_from = "billing-bounces@example.com"
--   reply_to = "accounts@example.com"
--   [filter.config.users.monitoring]
--   from = "Monitoring <alerts@example.com>"
--   reply_to = "original"
--   [filter.config.listeners.printers]
--   from = "Scanner <scanner@example.com>"
--   sender = "relay@example.com"
--
-- What it does:
--   mail_from  when a rule applies: the tag sender_rewrite = "user NAME" or "listener NAME"
--              records which rule, and the envelope sender becomes envelope_from (or the
--              address of `from`) with tx:set_mail_from(). Bounces and delivery reports go
--              to that address from then on, and the smarthost sees it (SPF, verified
--              senders). The null sender <> is left alone: a bounce stays a bounce. The log
--              has sender_rewritten (from, to).
--   data       when a rule applies: the first From: field is saved in X-Original-From: (an
--              X-Original-From: the client wrote itself is replaced or removed, so it cannot
--              be forged; a value over 900 octets is cut), From: is set to `from` (all From:
--              fields become this one), then Reply-To: and Sender: as configured.
--              Messages without a matching rule are not touched.
-- [user.NAME] allowed_senders and check_header_from judge what the client sent, before this
-- script runs.
-- Passthrough (delivery = "passthrough"): the envelope sender is rewritten (MAIL has not gone
-- upstream at mail_from), but the headers cannot be: the message is already on its way
-- upstream at data (tx.passthrough). The script then leaves the headers as they are and logs
-- a warning (event=lua) saying so; the message is relayed. Use delivery = "queue" for the
-- header rewrite.

local config = postern.config

-- A header value from the configuration: one line, not empty, within the header limit.
local function header_value(where, value)
    if type(value) ~= "string" or value == "" or #value > 900 or value:find("[%c]") then
        error(where .. " must be one line of text (at most 900 octets)")
    end
    return value
end

-- A plain local@domain as MAIL FROM takes it: a dot-atom local part and a domain.
local function is_mailbox(value)
    if #value > 254 then
        return false
    end
    local localpart, domain = value:match("^([^@]+)@([^@]+)$")
    if not localpart or #localpart > 64 then
        return false
    end
    for atom in (localpart .. "."):gmatch("(.-)%.") do
        if not atom:match("^[%w!#$%%&'*+/=?^_`{|}~-]+$") then
            return false
        end
    end
    for label in (domain .. "."):gmatch("(.-)%.") do
        if not label:match("^[%w_-]+$") or #label > 63 then
            return false
        end
    end
    return true
end

-- The address of a From: value: the one in <...> at its end, or the whole value.
local function address_of(value)
    return value:match("<([^<>]*)>%s*$") or value:match("^%s*(.-)%s*$")
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
            if key ~= "from" and key ~= "envelope_from" and key ~= "reply_to"
                and key ~= "sender" then
                error(("%s.%s is not a key (from, envelope_from, reply_to, sender)")
                    :format(where, key))
            end
        end
        local from = header_value(where .. ".from", rule.from)
        if not from:find("@", 1, true) then
            error(where .. ".from has no address")
        end
        local envelope
        if rule.envelope_from == nil then
            envelope = address_of(from)
            if not is_mailbox(envelope) then
                error(("%s.from: \"%s\" cannot be the envelope sender (a plain "
                    .. "local@domain); set envelope_from"):format(where, envelope))
            end
        elseif rule.envelope_from ~= "original" then
            envelope = rule.envelope_from
            if type(envelope) ~= "string" or not is_mailbox(envelope) then
                error(("%s.envelope_from must be an address such as \"bounces@example.com\" "
                    .. "or \"original\""):format(where))
            end
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
            envelope = envelope, -- nil: keep the client's envelope sender
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

local function rule_for(conn)
    return (conn.auth_user and by_user[conn.auth_user]) or by_listener[conn.listener]
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

postern.on("mail_from", function(tx)
    local rule = rule_for(tx.conn)
    if not rule then
        return
    end
    tx.tags.sender_rewrite = rule.label
    local current = tx.mail_from.address
    if rule.envelope and current ~= "" and current ~= rule.envelope then
        tx:set_mail_from(rule.envelope)
    end
end)

postern.on("data", function(tx, msg)
    local rule = rule_for(tx.conn)
    if not rule then
        return
    end
    if tx.passthrough then
        postern.log.warn(("%s: header From: not rewritten: the message is relayed live "
            .. "(delivery = \"passthrough\"); envelope sender <%s>")
            :format(rule.label, tx.mail_from.address))
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
end)
