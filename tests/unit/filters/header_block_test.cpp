// Unit tests for the editable header section (filters/header_block.hpp): the split of a message
// at its empty line, unfolding (RFC 5322 2.2.3), case-insensitive lookups, edits and their
// validation, and the promise that untouched fields stay byte for byte as received.
#include "filters/header_block.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace postern::filters {
namespace {

using Strings = std::vector<std::string>;

// ---- header_length ------------------------------------------------------------------------------

TEST(HeaderBlock, HeaderLengthEndsAfterTheLastFieldsCrlf) {
    const std::string message = "From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
    size_t n = HeaderBlock::header_length(message);
    EXPECT_EQ(message.substr(0, n), "From: a@example.com\r\nSubject: hi\r\n");
    EXPECT_EQ(message.substr(n), "\r\nbody\r\n");
}

TEST(HeaderBlock, HeaderLengthEdgeCases) {
    EXPECT_EQ(HeaderBlock::header_length("\r\nbody only\r\n"), 0u) << "no header at all";
    EXPECT_EQ(HeaderBlock::header_length(""), 0u);
    EXPECT_EQ(HeaderBlock::header_length("A: b\r\n"), 6u) << "no empty line: all header";
    EXPECT_EQ(HeaderBlock::header_length("A: b\r\n\r\n"), 6u);
    // The empty line is the first one: a blank line inside the body does not count twice.
    EXPECT_EQ(HeaderBlock::header_length("A: b\r\n\r\nx\r\n\r\ny"), 6u);
}

// ---- lookups ------------------------------------------------------------------------------------

TEST(HeaderBlock, FirstIsCaseInsensitiveAndTrimmed) {
    HeaderBlock h("Subject:   Hello there  \r\nX-Spam: no\r\n");
    EXPECT_EQ(h.first("Subject").value_or("?"), "Hello there");
    EXPECT_EQ(h.first("subject").value_or("?"), "Hello there");
    EXPECT_EQ(h.first("SUBJECT").value_or("?"), "Hello there");
    EXPECT_EQ(h.first("x-spam").value_or("?"), "no");
    EXPECT_FALSE(h.first("Subj").has_value()) << "whole names only";
    EXPECT_FALSE(h.first("Missing").has_value());
}

TEST(HeaderBlock, UnfoldsContinuationLines) {
    HeaderBlock h("Subject: a long\r\n subject\r\n\tline\r\nTo: b@example.com\r\n");
    // Unfolding removes the CRLF before white space and keeps the white space.
    EXPECT_EQ(h.first("Subject").value_or("?"), "a long subject\tline");
    EXPECT_EQ(h.first("To").value_or("?"), "b@example.com");
}

TEST(HeaderBlock, AllReturnsEveryFieldInOrder) {
    HeaderBlock h(
        "Received: from a\r\nSubject: x\r\nreceived: from b\r\n  by c\r\nRECEIVED:from d\r\n");
    EXPECT_EQ(h.all("Received"), (Strings{"from a", "from b  by c", "from d"}));
    EXPECT_EQ(h.first("Received").value_or("?"), "from a");
    EXPECT_TRUE(h.all("X-None").empty());
}

TEST(HeaderBlock, EmptyValueAndSpaceBeforeColon) {
    HeaderBlock h("X-Empty:\r\nSubject : obsolete syntax\r\n");
    EXPECT_EQ(h.first("X-Empty").value_or("?"), "");
    EXPECT_EQ(h.first("Subject").value_or("?"), "obsolete syntax") << "RFC 5322 4.5 obs-optional";
}

TEST(HeaderBlock, OddLinesAreKeptButNotFound) {
    // A continuation line without a field before it, a line without a colon, and a last line
    // without CRLF: kept as they are, matched by no name.
    const std::string section = " orphan: x\r\nno colon here\r\nA: 1\r\nB: 2";
    HeaderBlock h(section);
    EXPECT_FALSE(h.first("orphan").has_value());
    EXPECT_FALSE(h.first(" orphan").has_value());
    EXPECT_FALSE(h.first("no colon here").has_value());
    EXPECT_EQ(h.first("A").value_or("?"), "1");
    EXPECT_EQ(h.first("B").value_or("?"), "2");
    EXPECT_EQ(h.text(), section);
}

// ---- byte-exact text ----------------------------------------------------------------------------

TEST(HeaderBlock, UntouchedTextIsByteExact) {
    const std::string section =
        "Received: from x.example ([192.0.2.1])\r\n\tby y.example; Mon, 1 Jan 2024\r\n"
        "subject:no space\r\n"
        "X-Weird  :  spaced   \r\n"
        "DKIM-Signature: v=1; a=rsa-sha256;\r\n  b=abc\r\n   def\r\n"
        "X-Utf8: \xc3\xa9t\xc3\xa9\r\n";
    HeaderBlock h(section);
    EXPECT_EQ(h.text(), section);
    EXPECT_FALSE(h.changed());
    EXPECT_EQ(HeaderBlock().text(), "");
}

TEST(HeaderBlock, EditsLeaveOtherFieldsByteExact) {
    const std::string before = "Received: a\r\n\tfolded\r\n";
    const std::string after = "X-Keep :  kept  \r\n DKIM-ish continuation\r\n";
    HeaderBlock h(before + "Subject: old\r\n" + after);
    std::string error;
    ASSERT_TRUE(h.set("Subject", "new", error)) << error;
    EXPECT_EQ(h.text(), before + "Subject: new\r\n" + after);
}

// ---- edits --------------------------------------------------------------------------------------

TEST(HeaderBlock, AddAppendsAField) {
    HeaderBlock h("From: a@example.com\r\n");
    std::string error;
    ASSERT_TRUE(h.add("X-Policy", "checked", error)) << error;
    ASSERT_TRUE(h.add("X-Policy", "twice", error)) << error;
    EXPECT_TRUE(h.changed());
    EXPECT_EQ(h.text(), "From: a@example.com\r\nX-Policy: checked\r\nX-Policy: twice\r\n");
    EXPECT_EQ(h.all("x-policy"), (Strings{"checked", "twice"}));
}

TEST(HeaderBlock, SetReplacesTheFirstAndRemovesTheOthers) {
    HeaderBlock h("X-Tag: 1\r\nFrom: a@example.com\r\nx-tag: 2\r\n  folded\r\nX-TAG: 3\r\n");
    std::string error;
    ASSERT_TRUE(h.set("X-Tag", "only", error)) << error;
    EXPECT_EQ(h.text(), "X-Tag: only\r\nFrom: a@example.com\r\n");
    EXPECT_EQ(h.all("x-tag"), (Strings{"only"}));
    EXPECT_TRUE(h.changed());
}

TEST(HeaderBlock, SetAddsWhenAbsent) {
    HeaderBlock h("From: a@example.com\r\n");
    std::string error;
    ASSERT_TRUE(h.set("X-New", "v", error)) << error;
    EXPECT_EQ(h.text(), "From: a@example.com\r\nX-New: v\r\n");
}

TEST(HeaderBlock, RemoveCountsAndIsCaseInsensitive) {
    HeaderBlock h("X-A: 1\r\nFrom: f\r\nx-a: 2\r\n cont\r\nTo: t\r\n");
    EXPECT_EQ(h.remove("X-None"), 0u);
    EXPECT_FALSE(h.changed()) << "removing nothing changes nothing";
    EXPECT_EQ(h.remove("X-a"), 2u);
    EXPECT_TRUE(h.changed());
    EXPECT_EQ(h.text(), "From: f\r\nTo: t\r\n");
    EXPECT_FALSE(h.first("X-A").has_value());
}

TEST(HeaderBlock, NameValidation) {
    HeaderBlock h("From: a@example.com\r\n");
    std::string error;
    EXPECT_FALSE(h.add("X:Bad", "v", error));
    EXPECT_EQ(error, "a header name is printable US-ASCII without ':'");
    for (const std::string& bad :
         {std::string("Two words"), std::string("Tab\tName"), std::string("X-\x7f"),
          std::string("X-\xc3\xa9"), std::string("X-\r\nInjected"), std::string("X\0Y", 3)}) {
        error.clear();
        EXPECT_FALSE(h.add(bad, "v", error)) << bad;
        EXPECT_FALSE(error.empty()) << bad;
    }
    error.clear();
    EXPECT_FALSE(h.add("", "v", error));
    EXPECT_EQ(error, "a header name needs 1 to 76 characters");
    EXPECT_FALSE(h.add(std::string(77, 'X'), "v", error));
    EXPECT_TRUE(h.add(std::string(76, 'X'), "v", error)) << error;
    EXPECT_FALSE(h.set("Bad:Name", "v", error)) << "set checks like add";
}

TEST(HeaderBlock, ValueValidation) {
    HeaderBlock h("From: a@example.com\r\n");
    const std::string original = h.text();
    std::string error;
    for (const std::string& bad :
         {std::string("a\r\nBcc: victim@example.com"), std::string("cr\ronly"),
          std::string("lf\nonly"), std::string("nul\0here", 8)}) {
        error.clear();
        EXPECT_FALSE(h.add("X-Test", bad, error));
        EXPECT_EQ(error, "a header value cannot hold CR, LF or NUL");
        EXPECT_FALSE(h.set("From", bad, error));
    }
    EXPECT_FALSE(h.add("X-Test", std::string(901, 'v'), error));
    EXPECT_EQ(error, "a header value is at most 900 octets");
    EXPECT_FALSE(h.changed()) << "refused edits change nothing";
    EXPECT_EQ(h.text(), original);
    EXPECT_TRUE(h.add("X-Test", std::string(900, 'v'), error)) << error;
    EXPECT_TRUE(h.add("X-Empty", "", error)) << error;
    EXPECT_TRUE(h.add("X-Tab", "a\tb", error)) << "tabs are white space, not line ends";
}

TEST(HeaderBlock, EditsOnAnEmptyBlock) {
    HeaderBlock h;
    std::string error;
    EXPECT_FALSE(h.first("Subject").has_value());
    EXPECT_EQ(h.remove("Subject"), 0u);
    ASSERT_TRUE(h.set("Subject", "s", error)) << error;
    EXPECT_EQ(h.text(), "Subject: s\r\n");
    EXPECT_EQ(h.first("subject").value_or("?"), "s");
}

}  // namespace
}  // namespace postern::filters
