-- The benchmark's policy (tests/bench/bench_policy.py): five rules over three hooks, each a
-- typical operator check; every message of the benchmark passes all of them.
local denied_senders = { "spam.example", "*.blocked.example" }
local allowed_domains = { "dest.example", "*.dest.example", "partner.example", "corp.example" }

postern.on("mail_from", function(tx)
  -- 1. senders from denied domains are refused
  if postern.match.domain(tx.mail_from.domain, denied_senders) then
    return postern.reject(550, "5.7.1", "Sender domain is not allowed")
  end
  -- 2. tag the message with the app (the authenticated user, or the sender's domain)
  tx.tags.app = tx.conn.auth_user or tx.mail_from.domain
end)

postern.on("rcpt_to", function(tx, rcpt)
  -- 3. recipients only in the allowed domains
  if not postern.match.domain(rcpt.domain, allowed_domains) then
    return postern.reject(550, "5.7.1", "Recipient domain " .. rcpt.domain .. " is not allowed")
  end
end)

postern.on("data", function(tx, msg)
  -- 4. a message needs a Subject
  if not msg:header("Subject") and not msg:header("From") then
    return postern.reject(550, "5.6.0", "Message has no Subject or From header")
  end
  -- 5. say which policy passed it
  msg:add_header("X-Policy", "policy5; app=" .. (tx.tags.app or "-"))
end)
