// Unit tests for the SMTP verb table and command-line split (proxy/smtp/command.hpp).
#include "proxy/smtp/command.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace postern::smtp {
namespace {

const std::vector<std::pair<std::string, Verb>> kAllVerbs = {
    {"EHLO", Verb::kEhlo},         {"HELO", Verb::kHelo}, {"MAIL", Verb::kMail},
    {"RCPT", Verb::kRcpt},         {"DATA", Verb::kData}, {"BDAT", Verb::kBdat},
    {"RSET", Verb::kRset},         {"NOOP", Verb::kNoop}, {"QUIT", Verb::kQuit},
    {"VRFY", Verb::kVrfy},         {"HELP", Verb::kHelp}, {"EXPN", Verb::kExpn},
    {"STARTTLS", Verb::kStarttls}, {"AUTH", Verb::kAuth},
};

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    return s;
}

TEST(ParseCommand, EveryVerbInUpperCase) {
    for (const auto& [name, verb] : kAllVerbs) {
        Command c = parse_command(name);
        EXPECT_EQ(c.verb, verb) << name;
        EXPECT_EQ(c.name, name);
        EXPECT_TRUE(c.args.empty());
    }
}

TEST(ParseCommand, VerbsAreCaseInsensitive) {
    for (const auto& [name, verb] : kAllVerbs) {
        std::string l = lower(name);
        EXPECT_EQ(parse_command(l).verb, verb) << l;
        std::string mixed = name;
        for (size_t i = 0; i < mixed.size(); i += 2) mixed[i] = lower(std::string(1, mixed[i]))[0];
        Command c = parse_command(mixed);
        EXPECT_EQ(c.verb, verb) << mixed;
        EXPECT_EQ(c.name, mixed);  // as the client wrote it
    }
}

TEST(ParseCommand, ArgumentsAfterFirstSpace) {
    Command c = parse_command("MAIL FROM:<a@b> SIZE=10");
    EXPECT_EQ(c.verb, Verb::kMail);
    EXPECT_EQ(c.name, "MAIL");
    EXPECT_EQ(c.args, "FROM:<a@b> SIZE=10");
}

TEST(ParseCommand, OnlyTheFirstSpaceSeparates) {
    Command c = parse_command("EHLO  client.example ");
    EXPECT_EQ(c.verb, Verb::kEhlo);
    EXPECT_EQ(c.args, " client.example ");
}

TEST(ParseCommand, TrailingSpaceGivesEmptyArgs) {
    Command c = parse_command("QUIT ");
    EXPECT_EQ(c.verb, Verb::kQuit);
    EXPECT_EQ(c.name, "QUIT");
    EXPECT_EQ(c.args, "");
}

TEST(ParseCommand, ArgsPointIntoTheLine) {
    std::string line = "rcpt TO:<x@y>";
    Command c = parse_command(line);
    EXPECT_EQ(c.name.data(), line.data());
    EXPECT_EQ(c.args.data(), line.data() + 5);
}

TEST(ParseCommand, UnknownVerbs) {
    const char* cases[] = {"",       "X",       "MAI",        "MAILX",     "MAIL:FROM:<a@b>",
                           "EHL0 x", "HELO\tx", "STARTTL",    "STARTTLSX", " MAIL FROM:<a@b>",
                           "DATA\r", "KILL",    "\xc3\x89HLO"};
    for (const char* line : cases) {
        EXPECT_EQ(parse_command(line).verb, Verb::kUnknown) << "line: " << line;
    }
}

TEST(ParseCommand, UnknownVerbStillSplits) {
    Command c = parse_command("XCLIENT NAME=foo");
    EXPECT_EQ(c.verb, Verb::kUnknown);
    EXPECT_EQ(c.name, "XCLIENT");
    EXPECT_EQ(c.args, "NAME=foo");
}

TEST(ParseCommand, LeadingSpaceMeansEmptyName) {
    Command c = parse_command(" QUIT");
    EXPECT_EQ(c.verb, Verb::kUnknown);
    EXPECT_EQ(c.name, "");
    EXPECT_EQ(c.args, "QUIT");
}

TEST(VerbName, UpperCaseNames) {
    for (const auto& [name, verb] : kAllVerbs) {
        EXPECT_EQ(verb_name(verb), name);
    }
    EXPECT_EQ(verb_name(Verb::kUnknown), "UNKNOWN");
}

TEST(VerbName, RoundTripsThroughParse) {
    for (const auto& [name, verb] : kAllVerbs) {
        EXPECT_EQ(parse_command(verb_name(verb)).verb, verb);
    }
}

TEST(IsCommandOctet, Classes) {
    for (int c = 0; c < 0x20; ++c)
        EXPECT_FALSE(is_command_octet(static_cast<unsigned char>(c))) << c;
    EXPECT_FALSE(is_command_octet(0x7f));
    for (int c = 0x20; c < 0x7f; ++c)
        EXPECT_TRUE(is_command_octet(static_cast<unsigned char>(c))) << c;
    for (int c = 0x80; c <= 0xff; ++c)
        EXPECT_TRUE(is_command_octet(static_cast<unsigned char>(c))) << c;
}

}  // namespace
}  // namespace postern::smtp
