// `postern policy test`; see policy_cli.hpp. The stages run in the server's order with the
// server's meaning: a refused recipient is left out and the rest go on, a refused MAIL or an
// empty recipient list ends the transaction before data.
#include "proxy/admin/policy_cli.hpp"

#include <fcntl.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <fstream>
#include <iostream>
#include <sstream>

#include "filters/chain.hpp"
#include "filters/lua/lua_filter.hpp"
#include "proxy/config/cidr.hpp"
#include "proxy/config/config_loader.hpp"
#include "proxy/observe/log.hpp"

namespace postern::admin {

const char* const kPolicyUsage =
    "usage: postern policy test --script FILE --from ADDR --to ADDR[,ADDR...] [options]\n"
    "\n"
    "Runs the script's handlers as the server would (connect, helo, auth with --user,\n"
    "mail_from, rcpt_to per recipient, data, queued) and prints, per stage, the handlers run,\n"
    "their verdicts, log lines and changes (tags, route, recipients, headers).\n"
    "\n"
    "  --script FILE         the Lua policy script\n"
    "  --eml FILE            the message (default: a minimal one with From, To, Subject)\n"
    "  --from ADDR           envelope sender (\"\" or <> for the null sender)\n"
    "  --to ADDR[,ADDR...]   envelope recipients\n"
    "  --ip IP               client address (default 127.0.0.1)\n"
    "  --user NAME           authenticated user (runs the auth stage)\n"
    "  --helo NAME           HELO name (default client.example)\n"
    "  --listener NAME       listener name (default default)\n"
    "  --tag TAG             a listener tag (repeatable), as the listener key tags\n"
    "  --tls                 the client used TLS (TLSv1.3)\n"
    "  --script-config FILE  TOML file whose tables become postern.config\n"
    "  --config FILE         postern.toml: its routes are the ones tx:route accepts\n"
    "\n"
    "Exit code: 0 accepted (or discarded), 1 rejected, 2 tempfailed, 3 the script does not\n"
    "load, 64 usage error.\n";

namespace {

namespace asio = boost::asio;
using filters::Action;
using filters::Stage;

int usage(const std::string& problem) {
    std::cerr << "postern policy test: " << problem << "\n\n" << kPolicyUsage;
    return 64;
}

bool read_file(const std::string& path, std::string& out) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    std::stringstream buffer;
    buffer << in.rdbuf();
    out = buffer.str();
    return true;
}

// Line ends as the server stores them: CRLF.
std::string to_crlf(const std::string& text) {
    std::string out;
    out.reserve(text.size() + text.size() / 32);
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r')) out += '\r';
        out += text[i];
    }
    if (!out.empty() && out.back() != '\n') out += "\r\n";
    return out;
}

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> out;
    std::string item;
    std::istringstream in(text);
    while (std::getline(in, item, ',')) {
        while (!item.empty() && item.front() == ' ') item.erase(item.begin());
        while (!item.empty() && item.back() == ' ') item.pop_back();
        if (!item.empty()) out.push_back(item);
    }
    return out;
}

std::string strip_brackets(std::string a) {
    if (a.size() >= 2 && a.front() == '<' && a.back() == '>') a = a.substr(1, a.size() - 2);
    return a;
}

struct Runner {
    filters::Chain& chain;
    asio::io_context io;

    filters::Verdict run(filters::HookContext& ctx) {
        std::vector<std::string> trace;
        ctx.trace = &trace;
        auto future = asio::co_spawn(io, chain.run(ctx), asio::use_future);
        io.restart();
        io.run();
        filters::Verdict v = future.get();
        std::string head = std::string("stage ") + filters::stage_name(ctx.stage);
        if (ctx.rcpt) head += " <" + ctx.rcpt->address + ">";
        std::cout << head << ": " << describe(v) << "\n";
        for (const std::string& line : trace) std::cout << "  " << line << "\n";
        return v;
    }

    static std::string describe(const filters::Verdict& v) {
        std::string out = filters::action_name(v.action);
        if (v.reply) {
            out +=
                " " + std::to_string(v.reply->code) + " " + v.reply->enhanced + " " + v.reply->text;
        }
        if (!v.reason.empty()) out += " (" + v.reason + ")";
        return out;
    }
};

bool refused(const filters::Verdict& v) {
    return v.action == Action::kReject || v.action == Action::kTempfail ||
           v.action == Action::kDisconnect;
}

int exit_code(const filters::Verdict& v) {
    if (v.action == Action::kReject) return 1;
    if (v.action == Action::kDisconnect) return v.reply && v.reply->code / 100 == 5 ? 1 : 2;
    if (v.action == Action::kTempfail) return 2;
    return 0;
}

int finish(const filters::Verdict& v, const std::string& where) {
    std::cout << "result: " << Runner::describe(v) << " at " << where << "\n";
    return exit_code(v);
}

}  // namespace

int run_policy_command(const std::vector<std::string>& args) {
    if (args.empty() || args[0] != "test") {
        return usage(args.empty() ? "missing subcommand (test)"
                                  : "unknown subcommand '" + args[0] + "'");
    }
    std::string script, eml, from, to, ip = "127.0.0.1", user, helo = "client.example",
                                       listener = "default", script_config, config_file;
    std::vector<std::string> tags;
    bool have_from = false, tls = false;
    for (size_t i = 1; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&](std::string& out) {
            if (i + 1 >= args.size()) return false;
            out = args[++i];
            return true;
        };
        bool ok = true;
        if (a == "--script") {
            ok = value(script);
        } else if (a == "--eml") {
            ok = value(eml);
        } else if (a == "--from") {
            ok = value(from);
            have_from = true;
        } else if (a == "--to") {
            ok = value(to);
        } else if (a == "--ip") {
            ok = value(ip);
        } else if (a == "--user") {
            ok = value(user);
        } else if (a == "--helo") {
            ok = value(helo);
        } else if (a == "--listener") {
            ok = value(listener);
        } else if (a == "--tag") {
            std::string tag;
            ok = value(tag);
            tags.push_back(tag);
        } else if (a == "--tls") {
            tls = true;
        } else if (a == "--script-config") {
            ok = value(script_config);
        } else if (a == "--config") {
            ok = value(config_file);
        } else {
            return usage("unknown option '" + a + "'");
        }
        if (!ok) return usage(a + " needs a value");
    }
    if (script.empty()) return usage("--script is required");
    if (!have_from) return usage("--from is required");
    std::vector<std::string> recipients = split_list(to);
    if (recipients.empty()) return usage("--to is required");
    if (!config::IpAddress::parse(ip)) return usage("--ip " + ip + " is not an IP address");

    filters::lua::LuaFilterOptions options;
    options.name = "policy-test";
    options.script = script;
    if (!script_config.empty() && !read_file(script_config, options.config_toml)) {
        return usage("cannot read " + script_config);
    }
    if (!config_file.empty()) {
        auto loaded = config::load_config_file(config_file);
        for (const auto& issue : loaded.issues) std::cerr << issue.to_string() << "\n";
        if (!loaded.ok()) return usage(config_file + " has errors");
        for (const auto& [name, route] : loaded.config.routes) options.routes.insert(name);
        options.hostname = loaded.config.server.hostname;
        for (const auto& l : loaded.config.listeners) {
            if (l.name == listener) tags.insert(tags.end(), l.tags.begin(), l.tags.end());
        }
    }
    std::string message;
    if (!eml.empty()) {
        if (!read_file(eml, message)) return usage("cannot read " + eml);
        message = to_crlf(message);
    }

    // The trace says what the server log would; the log itself would only repeat it.
    observe::configure_logging(config::LogLevel::kError, config::LogFormat::kLogfmt,
                               ::open("/dev/null", O_WRONLY | O_CLOEXEC));
    std::string error;
    auto lua = filters::lua::LuaFilter::create(options, error);
    if (!lua) {
        std::cout << "script does not load: " << error << "\n";
        return 3;
    }
    filters::lua::LuaFilter* lua_filter = lua.get();
    filters::Chain chain;
    chain.add(filters::Chain::Entry{"policy-test", std::move(lua), false});
    Runner runner{chain, {}};

    std::cout << "policy test: " << script << "\n";
    filters::Connection conn;
    conn.ip = ip;
    conn.port = 40000;
    conn.listener = listener;
    if (tls) {
        conn.tls_version = "TLSv1.3";
        conn.tls_cipher = "TLS_AES_256_GCM_SHA384";
    }
    filters::HookContext ctx;
    ctx.conn = &conn;
    ctx.stage = Stage::kConnect;
    filters::Verdict v = runner.run(ctx);
    if (refused(v)) {
        // The server answers a refusal at connect with 554 (5xx) or 421 in place of its greeting.
        std::cout << "  (the server's greeting would be "
                  << (v.reply && v.reply->code / 100 == 5 ? 554 : 421) << ")\n";
        return finish(v, "connect");
    }
    bool discard = v.action == Action::kDiscard;

    conn.helo = helo;
    ctx.stage = Stage::kHelo;
    v = runner.run(ctx);
    if (refused(v)) return finish(v, "helo");
    discard = discard || v.action == Action::kDiscard;

    if (!user.empty()) {
        conn.auth_user = user;
        ctx.stage = Stage::kAuth;
        v = runner.run(ctx);
        if (refused(v)) return finish(v, "auth");
        discard = discard || v.action == Action::kDiscard;
    }

    filters::Transaction tx;
    tx.conn = &conn;
    tx.id = "POLICYTEST01";
    from = strip_brackets(from);
    if (!from.empty()) tx.mail_from = filters::Address::from_mailbox(from);
    for (const std::string& tag : tags) tx.tags[tag] = "true";
    ctx.tx = &tx;
    ctx.stage = Stage::kMailFrom;
    v = runner.run(ctx);
    if (refused(v)) return finish(v, "mail_from");
    discard = discard || v.action == Action::kDiscard;

    filters::Verdict last_refusal;
    for (const std::string& r : recipients) {
        filters::Address rcpt = filters::Address::from_mailbox(strip_brackets(r));
        ctx.stage = Stage::kRcptTo;
        ctx.rcpt = &rcpt;
        const filters::Transaction before = tx;  // as the server: a refusal undoes the hook
        v = runner.run(ctx);
        ctx.rcpt = nullptr;
        if (refused(v)) {
            const bool changed = tx.tags != before.tags || tx.notes != before.notes ||
                                 tx.route != before.route ||
                                 tx.rcpt_changes.size() != before.rcpt_changes.size() ||
                                 tx.mail_from.address != before.mail_from.address;
            if (changed) {
                std::cout << "  (the changes of this hook are undone: the recipient was refused)\n";
            }
            tx = before;
            last_refusal = v;
            if (v.action == Action::kDisconnect) return finish(v, "rcpt_to <" + rcpt.address + ">");
            continue;
        }
        if (v.action != Action::kDiscard) tx.rcpts.push_back(rcpt);
    }
    if (tx.rcpts.empty() && refused(last_refusal)) {
        std::cout << "no recipient accepted: the data stage does not run\n";
        return finish(last_refusal, "rcpt_to");
    }

    if (message.empty()) {
        message = "From: <" + from + ">\r\nTo: ";
        for (size_t i = 0; i < tx.rcpts.size(); ++i) {
            message += (i ? ", <" : "<") + tx.rcpts[i].address + ">";
        }
        message += "\r\nSubject: postern policy test\r\n\r\nA test message.\r\n";
    }
    const size_t header_length = filters::HeaderBlock::header_length(message);
    const size_t blank = message.compare(header_length, 2, "\r\n") == 0 ? 2 : 0;
    filters::Message msg;
    msg.headers = filters::HeaderBlock(std::string_view(message).substr(0, header_length));
    msg.body = std::string_view(message).substr(std::min(message.size(), header_length + blank));
    msg.body_size = msg.body.size();
    tx.size = message.size();
    ctx.stage = Stage::kData;
    ctx.message = &msg;
    v = runner.run(ctx);
    if (refused(v)) return finish(v, "data");
    discard = discard || v.action == Action::kDiscard;

    if (msg.headers.changed()) {
        std::cout << "header section after the data stage:\n";
        std::istringstream lines(msg.headers.text());
        std::string line;
        while (std::getline(lines, line)) {
            if (!line.empty() && line.back() == '\r') line.pop_back();
            std::cout << "  | " << line << "\n";
        }
    }
    std::cout << "sender: <" << tx.mail_from.address << ">\n";
    std::cout << "recipients:";
    for (const auto& r : tx.rcpts) std::cout << " " << r.address;
    std::cout << "\n";
    if (!tx.route.empty()) std::cout << "route: " << tx.route << "\n";
    if (!tx.tags.empty()) {
        std::cout << "tags:";
        for (const auto& [k, val] : tx.tags) std::cout << " " << k << "=" << val;
        std::cout << "\n";
    }
    if (discard) {
        filters::Verdict d;
        d.action = Action::kDiscard;
        return finish(d, "the end (answered 250, nothing delivered)");
    }
    std::vector<std::string> trace;
    filters::DeliveryResult queued{"", "250 2.0.0 Ok: queued as " + tx.id, tx.route};
    lua_filter->notify_traced(filters::Event::kQueued, &conn, tx, queued, &trace);
    if (lua_filter->handles(filters::Event::kQueued)) {
        std::cout << "event queued\n";
        for (const std::string& line : trace) std::cout << "  " << line << "\n";
    }
    filters::Verdict accepted;
    accepted.action = Action::kAccept;
    return finish(accepted, "the end (the message would be queued)");
}

}  // namespace postern::admin
