-- recipient_domain_policy.lua: which recipient domains postern relays to.
--
-- For a relay whose applications should only ever write to certain domains (your own, a
-- partner's), or never to some (a competitor's, a test domain that must not see real mail).
-- The Postfix equivalent is check_recipient_access with a map of domains in
-- smtpd_recipient_restrictions.
--
-- postern.config keys ([filter.config] in postern.toml); give allow, deny or both:
--   allow  list of domains: only recipients in these domains are accepted
--   deny   list of domains: recipients in these domains are refused, even when allow matches
-- Each entry is a domain ("example.com": exactly that domain) or a wildcard ("*.example.com":
-- every subdomain of example.com, not example.com itself; list both to cover both). Case does
-- not matter. A single string works as a list of one.
--
--   [[filter]]
--   type = "lua"
--   name = "recipient_domains"
--   script = "scripts/recipient_domain_policy.lua"
--   [filter.config]
--   allow = ["example.com", "*.example.com", "partner.example.net"]
--   deny = ["legacy.example.com"]
--
-- What it does:
--   rcpt_to  a recipient whose domain is denied, or (with allow) not allowed, gets
--            550 5.7.1 Recipient domain DOMAIN is not allowed
--            and is not added to the transaction; the client may go on with other
--            recipients. Every other recipient continues to the next filter.
-- Without allow and deny the script refuses to load (check-config reports it), so that a
-- missing [filter.config] is not mistaken for a policy.

local config = postern.config

-- Checks a list of domain patterns from the configuration and returns it (or nil when unset).
local function domain_list(key)
    local list = config[key]
    if list == nil then
        return nil
    end
    if type(list) == "string" then
        list = { list }
    end
    if type(list) ~= "table" or #list == 0 then
        error("config." .. key .. " must be a non-empty list of domains")
    end
    for i, pattern in ipairs(list) do
        if type(pattern) ~= "string" or pattern == "" then
            error(("config.%s[%d] is not a domain"):format(key, i))
        end
        -- Only a leading "*." is a wildcard; anything else with "*" or "@" is a typo.
        local rest = pattern:match("^%*%.(.+)$") or pattern
        if rest:find("[*@%s]") then
            error(("config.%s[%d] \"%s\" is not a domain such as "
                .. "\"example.com\" or \"*.example.com\""):format(key, i, pattern))
        end
    end
    return list
end

local allow = domain_list("allow")
local deny = domain_list("deny")
if not allow and not deny then
    error("set allow and/or deny in [filter.config]")
end

local function refuse(rcpt)
    local what = rcpt.domain ~= "" and rcpt.domain or ("<" .. rcpt.address .. ">")
    return postern.reject(550, "5.7.1", "Recipient domain " .. what .. " is not allowed")
end

postern.on("rcpt_to", function(tx, rcpt)
    if deny and postern.match.domain(rcpt.domain, deny) then
        return refuse(rcpt)
    end
    if allow and not postern.match.domain(rcpt.domain, allow) then
        return refuse(rcpt)
    end
    -- Nothing returned: continue with the next filter.
end)
