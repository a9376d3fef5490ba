// Command verb table and line split; see command.hpp.
#include "proxy/smtp/command.hpp"

#include <array>
#include <utility>

namespace postern::smtp {
namespace {

constexpr std::array<std::pair<std::string_view, Verb>, 14> kVerbs = {{
    {"EHLO", Verb::kEhlo},
    {"HELO", Verb::kHelo},
    {"MAIL", Verb::kMail},
    {"RCPT", Verb::kRcpt},
    {"DATA", Verb::kData},
    {"BDAT", Verb::kBdat},
    {"RSET", Verb::kRset},
    {"NOOP", Verb::kNoop},
    {"QUIT", Verb::kQuit},
    {"VRFY", Verb::kVrfy},
    {"HELP", Verb::kHelp},
    {"EXPN", Verb::kExpn},
    {"STARTTLS", Verb::kStarttls},
    {"AUTH", Verb::kAuth},
}};

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        char x = a[i];
        if (x >= 'a' && x <= 'z') x = static_cast<char>(x - 'a' + 'A');
        if (x != b[i]) return false;
    }
    return true;
}

}  // namespace

Command parse_command(std::string_view line) {
    Command command;
    size_t space = line.find(' ');
    command.name = line.substr(0, space);
    if (space != std::string_view::npos) command.args = line.substr(space + 1);
    for (const auto& [name, verb] : kVerbs) {
        if (iequals(command.name, name)) {
            command.verb = verb;
            break;
        }
    }
    return command;
}

std::string_view verb_name(Verb verb) {
    for (const auto& [name, v] : kVerbs) {
        if (v == verb) return name;
    }
    return "UNKNOWN";
}

bool is_command_octet(unsigned char c) {
    return c >= 0x20 && c != 0x7f;
}

}  // namespace postern::smtp
