// SMTP command lines: the verb table and the split of a line into verb and argument
// (RFC 5321 4.1.1). Commands are case-insensitive; the argument follows one space.
#pragma once

#include <string_view>

namespace postern::smtp {

enum class Verb {
    kUnknown,
    kEhlo,
    kHelo,
    kMail,
    kRcpt,
    kData,
    kBdat,
    kRset,
    kNoop,
    kQuit,
    kVrfy,
    kHelp,
    kExpn,
    kStarttls,
    kAuth,
};

struct Command {
    Verb verb = Verb::kUnknown;
    std::string_view name;  // the verb as the client wrote it
    std::string_view args;  // everything after the first space; may be empty
};

Command parse_command(std::string_view line);

// The verb in upper case, for logs and HELP.
std::string_view verb_name(Verb verb);

// True for the characters a command line may hold: printable ASCII, space and, in arguments
// of MAIL/RCPT with SMTPUTF8, UTF-8 octets (RFC 6531). Controls (CR, LF, NUL, TAB...) are not.
bool is_command_octet(unsigned char c);

}  // namespace postern::smtp
