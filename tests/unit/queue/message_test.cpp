// Unit tests for the envelope sidecar (proxy/queue/message.hpp): envelope_to_json is checked
// with a small strict JSON parser (RFC 8259) and against an exact expected document.
#include "proxy/queue/message.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "proxy/queue/checksum.hpp"
#include "proxy/smtp/address.hpp"

namespace postern::queue {
namespace {

// ---- a strict JSON reader, enough to check the sidecar ---------------------------------------

struct Json {
    enum class Type { kNull, kBool, kNumber, kString, kArray, kObject } type = Type::kNull;
    bool boolean = false;
    std::string text;  // a string's decoded value, or a number as written
    std::vector<Json> items;
    std::vector<std::pair<std::string, Json>> members;

    const Json* get(std::string_view key) const {
        for (const auto& [k, v] : members) {
            if (k == key) return &v;
        }
        return nullptr;
    }
    bool has(std::string_view key) const { return get(key) != nullptr; }
};

class JsonParser {
  public:
    explicit JsonParser(std::string_view s) : s_(s) {}

    // The document, or an error message in `error`.
    Json parse_document() {
        if (!postern::smtp::is_valid_utf8(s_)) fail("not UTF-8");
        Json v = value();
        ws();
        if (i_ != s_.size()) fail("trailing characters");
        return v;
    }
    std::string error;

  private:
    void fail(const std::string& why) {
        if (error.empty()) error = why + " at offset " + std::to_string(i_);
        i_ = s_.size();
    }
    void ws() {
        while (i_ < s_.size() &&
               (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) {
            ++i_;
        }
    }
    bool eat(char c) {
        ws();
        if (i_ < s_.size() && s_[i_] == c) {
            ++i_;
            return true;
        }
        return false;
    }
    bool literal(std::string_view word) {
        if (s_.substr(i_, word.size()) != word) return false;
        i_ += word.size();
        return true;
    }
    Json value() {
        Json v;
        ws();
        if (i_ >= s_.size()) {
            fail("unexpected end");
            return v;
        }
        char c = s_[i_];
        if (c == '{') {
            v.type = Json::Type::kObject;
            ++i_;
            if (eat('}')) return v;
            do {
                ws();
                if (i_ >= s_.size() || s_[i_] != '"') {
                    fail("expected a key");
                    return v;
                }
                std::string key = string();
                if (v.has(key)) fail("duplicate key " + key);
                if (!eat(':')) fail("expected ':'");
                v.members.emplace_back(key, value());
            } while (eat(','));
            if (!eat('}')) fail("expected '}'");
        } else if (c == '[') {
            v.type = Json::Type::kArray;
            ++i_;
            if (eat(']')) return v;
            do {
                v.items.push_back(value());
            } while (eat(','));
            if (!eat(']')) fail("expected ']'");
        } else if (c == '"') {
            v.type = Json::Type::kString;
            v.text = string();
        } else if (literal("true")) {
            v.type = Json::Type::kBool;
            v.boolean = true;
        } else if (literal("false")) {
            v.type = Json::Type::kBool;
        } else if (literal("null")) {
            v.type = Json::Type::kNull;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            v.type = Json::Type::kNumber;
            size_t start = i_;
            if (s_[i_] == '-') ++i_;
            if (i_ < s_.size() && s_[i_] == '0') {
                ++i_;
            } else if (i_ < s_.size() && s_[i_] >= '1' && s_[i_] <= '9') {
                while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
            } else {
                fail("bad number");
            }
            v.text = std::string(s_.substr(start, i_ - start));
        } else {
            fail(std::string("unexpected '") + c + "'");
        }
        return v;
    }
    static void append_utf8(std::string& out, unsigned cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xc0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else {
            out += static_cast<char>(0xe0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        }
    }
    std::string string() {
        std::string out;
        ++i_;  // opening quote
        while (i_ < s_.size()) {
            auto c = static_cast<unsigned char>(s_[i_++]);
            if (c == '"') return out;
            if (c < 0x20) {
                fail("raw control character in a string");
                return out;
            }
            if (c != '\\') {
                out += static_cast<char>(c);
                continue;
            }
            if (i_ >= s_.size()) break;
            char e = s_[i_++];
            switch (e) {
                case '"':
                    out += '"';
                    break;
                case '\\':
                    out += '\\';
                    break;
                case '/':
                    out += '/';
                    break;
                case 'b':
                    out += '\b';
                    break;
                case 'f':
                    out += '\f';
                    break;
                case 'n':
                    out += '\n';
                    break;
                case 'r':
                    out += '\r';
                    break;
                case 't':
                    out += '\t';
                    break;
                case 'u': {
                    if (i_ + 4 > s_.size()) {
                        fail("short \\u escape");
                        return out;
                    }
                    unsigned cp = 0;
                    for (int k = 0; k < 4; ++k) {
                        char h = s_[i_++];
                        cp <<= 4;
                        if (h >= '0' && h <= '9') {
                            cp |= static_cast<unsigned>(h - '0');
                        } else if (h >= 'a' && h <= 'f') {
                            cp |= static_cast<unsigned>(h - 'a' + 10);
                        } else if (h >= 'A' && h <= 'F') {
                            cp |= static_cast<unsigned>(h - 'A' + 10);
                        } else {
                            fail("bad \\u escape");
                            return out;
                        }
                    }
                    append_utf8(out, cp);
                    break;
                }
                default:
                    fail(std::string("bad escape \\") + e);
                    return out;
            }
        }
        fail("unterminated string");
        return out;
    }

    std::string_view s_;
    size_t i_ = 0;
};

Json parse_json(const std::string& text) {
    JsonParser p(text);
    Json v = p.parse_document();
    EXPECT_EQ(p.error, "") << "invalid JSON:\n" << text;
    return v;
}

std::string str(const Json& object, std::string_view key) {
    const Json* v = object.get(key);
    EXPECT_NE(v, nullptr) << "missing key " << key;
    if (!v) return {};
    EXPECT_EQ(v->type, Json::Type::kString) << key;
    return v->text;
}

std::string num(const Json& object, std::string_view key) {
    const Json* v = object.get(key);
    EXPECT_NE(v, nullptr) << "missing key " << key;
    if (!v) return {};
    EXPECT_EQ(v->type, Json::Type::kNumber) << key;
    return v->text;
}

TEST(JsonParserSelfTest, RejectsInvalidDocuments) {
    for (std::string bad :
         {"", "{", "{\"a\":1,}", "{\"a\" 1}", "[1 2]", "{\"a\":\"x\ny\"}", "{\"a\":\"\\x41\"}",
          "\"abc", "01", "{} {}", "{\"a\":1,\"a\":2}", "\"\xff\""}) {
        JsonParser p(bad);
        p.parse_document();
        EXPECT_NE(p.error, "") << bad;
    }
    JsonParser ok("{\"a\": [1, \"\\u00e9\\n\", true, null], \"b\": {}}");
    Json v = ok.parse_document();
    EXPECT_EQ(ok.error, "");
    EXPECT_EQ(v.get("a")->items[1].text, "\xc3\xa9\n");
}

// ---- envelopes -------------------------------------------------------------------------------

smtp::Address address(std::string local, std::string domain, bool utf8 = false) {
    smtp::Address a;
    a.local = std::move(local);
    a.domain = std::move(domain);
    a.utf8 = utf8;
    return a;
}

Envelope basic_envelope() {
    Envelope e;
    e.queue_id = "01HGW2N7EXAMPL";
    e.mail_from.sender = address("alice", "example.com");
    smtp::RcptTo r;
    r.recipient = address("bob", "example.net");
    e.recipients.push_back(r);
    e.client_ip = "192.0.2.10";
    e.client_port = 54321;
    e.helo = "client.example.com";
    e.protocol = "ESMTP";
    e.listener = "internal";
    // 2024-01-02T03:04:05Z
    e.received_at = std::chrono::system_clock::time_point(std::chrono::seconds(1704164645));
    return e;
}

TEST(EnvelopeToJson, ExactDocument) {
    EXPECT_EQ(envelope_to_json(basic_envelope(), 1234),
              "{\n"
              "  \"queue_id\": \"01HGW2N7EXAMPL\",\n"
              "  \"mail_from\": \"alice@example.com\",\n"
              "  \"mail_params\": {},\n"
              "  \"recipients\": [\n"
              "    {\"address\": \"bob@example.net\"}\n"
              "  ],\n"
              "  \"client_ip\": \"192.0.2.10\",\n"
              "  \"client_port\": 54321,\n"
              "  \"helo\": \"client.example.com\",\n"
              "  \"protocol\": \"ESMTP\",\n"
              "  \"listener\": \"internal\",\n"
              "  \"received_at\": \"2024-01-02T03:04:05Z\",\n"
              "  \"size\": 1234\n"
              "}\n");
}

TEST(EnvelopeToJson, ParsesWithEveryField) {
    Json doc = parse_json(envelope_to_json(basic_envelope(), 1234));
    ASSERT_EQ(doc.type, Json::Type::kObject);
    EXPECT_EQ(str(doc, "queue_id"), "01HGW2N7EXAMPL");
    EXPECT_EQ(str(doc, "mail_from"), "alice@example.com");
    EXPECT_EQ(str(doc, "client_ip"), "192.0.2.10");
    EXPECT_EQ(num(doc, "client_port"), "54321");
    EXPECT_EQ(str(doc, "helo"), "client.example.com");
    EXPECT_EQ(str(doc, "protocol"), "ESMTP");
    EXPECT_EQ(str(doc, "listener"), "internal");
    EXPECT_EQ(str(doc, "received_at"), "2024-01-02T03:04:05Z");
    EXPECT_EQ(num(doc, "size"), "1234");
    const Json* params = doc.get("mail_params");
    ASSERT_NE(params, nullptr);
    EXPECT_EQ(params->type, Json::Type::kObject);
    EXPECT_TRUE(params->members.empty()) << "params appear only when set";
    const Json* rcpts = doc.get("recipients");
    ASSERT_NE(rcpts, nullptr);
    ASSERT_EQ(rcpts->items.size(), 1u);
    EXPECT_EQ(str(rcpts->items[0], "address"), "bob@example.net");
    EXPECT_FALSE(rcpts->items[0].has("notify"));
    EXPECT_FALSE(rcpts->items[0].has("orcpt"));
}

TEST(EnvelopeToJson, NullSenderAndNoRecipients) {
    Envelope e = basic_envelope();
    e.mail_from.sender = smtp::Address{};
    e.mail_from.sender.null = true;
    e.recipients.clear();
    Json doc = parse_json(envelope_to_json(e, 0));
    EXPECT_EQ(str(doc, "mail_from"), "");
    ASSERT_NE(doc.get("recipients"), nullptr);
    EXPECT_EQ(doc.get("recipients")->type, Json::Type::kArray);
    EXPECT_TRUE(doc.get("recipients")->items.empty());
    EXPECT_EQ(num(doc, "size"), "0");
}

TEST(EnvelopeToJson, MailParamsOnlyWhenSet) {
    Envelope e = basic_envelope();
    smtp::MailParams& p = e.mail_from.params;
    p.size = 2048;
    p.body = smtp::BodyType::k8BitMime;
    p.smtputf8 = true;
    p.ret = smtp::DsnRet::kHdrs;
    p.envid = "QQ314159+2B1";
    Json doc = parse_json(envelope_to_json(e, 10));
    const Json* params = doc.get("mail_params");
    ASSERT_NE(params, nullptr);
    EXPECT_EQ(params->members.size(), 5u);
    EXPECT_EQ(num(*params, "size"), "2048");
    EXPECT_EQ(str(*params, "body"), "8BITMIME");
    ASSERT_TRUE(params->has("smtputf8"));
    EXPECT_EQ(params->get("smtputf8")->type, Json::Type::kBool);
    EXPECT_TRUE(params->get("smtputf8")->boolean);
    EXPECT_EQ(str(*params, "ret"), "HDRS");
    EXPECT_EQ(str(*params, "envid"), "QQ314159+2B1");

    Envelope only_body = basic_envelope();
    only_body.mail_from.params.body = smtp::BodyType::k7Bit;
    only_body.mail_from.params.ret = smtp::DsnRet::kFull;
    doc = parse_json(envelope_to_json(only_body, 10));
    params = doc.get("mail_params");
    ASSERT_NE(params, nullptr);
    EXPECT_EQ(params->members.size(), 2u);
    EXPECT_EQ(str(*params, "body"), "7BIT");
    EXPECT_EQ(str(*params, "ret"), "FULL");
    EXPECT_FALSE(params->has("size"));
    EXPECT_FALSE(params->has("smtputf8"));
    EXPECT_FALSE(params->has("envid"));
}

TEST(EnvelopeToJson, SizeZeroIsStillSet) {
    Envelope e = basic_envelope();
    e.mail_from.params.size = 0;
    Json doc = parse_json(envelope_to_json(e, 10));
    EXPECT_EQ(num(*doc.get("mail_params"), "size"), "0");
}

TEST(EnvelopeToJson, RecipientParams) {
    Envelope e = basic_envelope();
    smtp::RcptTo r2;
    r2.recipient = address("carol", "example.org");
    r2.params.notify = smtp::notify::kSuccess | smtp::notify::kDelay;
    r2.params.orcpt = "rfc822;carol@example.org";
    e.recipients.push_back(r2);
    smtp::RcptTo r3;
    r3.recipient = address("dave", "example.org");
    r3.params.notify = smtp::notify::kNever;
    e.recipients.push_back(r3);

    Json doc = parse_json(envelope_to_json(e, 10));
    const Json* rcpts = doc.get("recipients");
    ASSERT_NE(rcpts, nullptr);
    ASSERT_EQ(rcpts->items.size(), 3u);
    EXPECT_EQ(str(rcpts->items[0], "address"), "bob@example.net");
    EXPECT_EQ(rcpts->items[0].members.size(), 1u);
    EXPECT_EQ(str(rcpts->items[1], "address"), "carol@example.org");
    EXPECT_EQ(str(rcpts->items[1], "notify"), "SUCCESS,DELAY");
    EXPECT_EQ(str(rcpts->items[1], "orcpt"), "rfc822;carol@example.org");
    EXPECT_EQ(str(rcpts->items[2], "notify"), "NEVER");
    EXPECT_FALSE(rcpts->items[2].has("orcpt"));

    smtp::RcptTo all;
    all.recipient = address("e", "x.example");
    all.params.notify = smtp::notify::kSuccess | smtp::notify::kFailure | smtp::notify::kDelay;
    e.recipients = {all};
    doc = parse_json(envelope_to_json(e, 10));
    EXPECT_EQ(str(doc.get("recipients")->items[0], "notify"), "SUCCESS,FAILURE,DELAY");
}

TEST(EnvelopeToJson, Utf8AddressesKeptAsUtf8) {
    Envelope e = basic_envelope();
    e.mail_from.sender = address("j\xc3\xb6rg",
                                 "b\xc3\xbc"
                                 "cher.example",
                                 true);
    smtp::RcptTo r;
    r.recipient = address("\xe7\x94\xa8\xe6\x88\xb7",
                          "\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a", true);
    e.recipients = {r};
    std::string text = envelope_to_json(e, 10);
    // Raw UTF-8 in the document, not \u escapes.
    EXPECT_NE(text.find("\"j\xc3\xb6rg@b\xc3\xbc"
                        "cher.example\""),
              std::string::npos)
        << text;
    EXPECT_EQ(text.find("\\u"), std::string::npos) << text;
    Json doc = parse_json(text);
    EXPECT_EQ(str(doc, "mail_from"),
              "j\xc3\xb6rg@b\xc3\xbc"
              "cher.example");
    EXPECT_EQ(str(doc.get("recipients")->items[0], "address"),
              "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a");
}

TEST(EnvelopeToJson, QuotesAndBackslashesEscaped) {
    Envelope e = basic_envelope();
    // A quoted local part keeps its quotes and backslashes (RFC 5321 Quoted-string).
    e.mail_from.sender = address(R"("john \"jd\" doe\\")", "example.com");
    e.helo = "evil\"helo\\\r\n\x01";
    e.listener = "a\"b";
    smtp::RcptTo r;
    r.recipient = address(R"("x\\y")", "example.net");
    r.params.orcpt = "rfc822;\"q\"";
    e.recipients = {r};
    std::string text = envelope_to_json(e, 10);
    Json doc = parse_json(text);
    EXPECT_EQ(str(doc, "mail_from"), R"("john \"jd\" doe\\"@example.com)");
    EXPECT_EQ(str(doc, "helo"), "evil\"helo\\\r\n\x01");
    EXPECT_EQ(str(doc, "listener"), "a\"b");
    EXPECT_EQ(str(doc.get("recipients")->items[0], "address"), R"("x\\y"@example.net)");
    EXPECT_EQ(str(doc.get("recipients")->items[0], "orcpt"), "rfc822;\"q\"");
}

TEST(EnvelopeToJson, InvalidUtf8FromClientStillValidJson) {
    Envelope e = basic_envelope();
    e.helo = "bad\xff\xfe";
    std::string text = envelope_to_json(e, 10);
    Json doc = parse_json(text);
    EXPECT_EQ(str(doc, "helo"), "bad\xc3\xbf\xc3\xbe") << "high octets escaped as \\u00XX";
}

TEST(EnvelopeToJson, LargeValues) {
    Envelope e = basic_envelope();
    e.client_port = 65535;
    e.mail_from.params.size = UINT64_MAX;
    Json doc = parse_json(envelope_to_json(e, UINT64_MAX));
    EXPECT_EQ(num(doc, "client_port"), "65535");
    EXPECT_EQ(num(doc, "size"), "18446744073709551615");
    EXPECT_EQ(num(*doc.get("mail_params"), "size"), "18446744073709551615");
}

TEST(EnvelopeToJson, ReceivedAtIsUtc) {
    Envelope e = basic_envelope();
    e.received_at = std::chrono::system_clock::time_point(std::chrono::seconds(0));
    EXPECT_EQ(str(parse_json(envelope_to_json(e, 1)), "received_at"), "1970-01-01T00:00:00Z");
    e.received_at = std::chrono::system_clock::time_point(std::chrono::milliseconds(951782399999));
    EXPECT_EQ(str(parse_json(envelope_to_json(e, 1)), "received_at"), "2000-02-28T23:59:59Z");
}

TEST(EnvelopeToJson, PostmasterRecipient) {
    Envelope e = basic_envelope();
    smtp::RcptTo r;
    r.recipient.local = "Postmaster";
    e.recipients = {r};
    Json doc = parse_json(envelope_to_json(e, 1));
    EXPECT_EQ(str(doc.get("recipients")->items[0], "address"), "Postmaster");
}

// ---- envelope_from_json: the spool reads back what it wrote -----------------------------

TEST(EnvelopeFromJson, RoundTripOfEveryField) {
    Envelope e = basic_envelope();
    e.route = "smarthost";
    auto mail = smtp::parse_mail_from(
        "FROM:<\"odd local\"@example.com> SIZE=999 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x+2By",
        1 << 20);
    ASSERT_FALSE(mail.error);
    e.mail_from = mail.value;
    auto rcpt = smtp::parse_rcpt_to(
        "TO:<j\xc3\xb6rg@b\xc3\xbc"
        "cher.example> NOTIFY=SUCCESS,DELAY "
        "ORCPT=rfc822;a+2Bb@example.net",
        true);
    ASSERT_FALSE(rcpt.error);
    auto postmaster = smtp::parse_rcpt_to("TO:<Postmaster> NOTIFY=NEVER", false);
    ASSERT_FALSE(postmaster.error);
    e.recipients = {rcpt.value, postmaster.value};

    Envelope back;
    uint64_t size = 0;
    std::string error;
    ASSERT_TRUE(envelope_from_json(envelope_to_json(e, 4321), back, size, error)) << error;
    EXPECT_EQ(size, 4321u);
    EXPECT_EQ(back.queue_id, e.queue_id);
    EXPECT_EQ(back.route, "smarthost");
    EXPECT_EQ(back.mail_from.sender.mailbox(), "\"odd local\"@example.com");
    EXPECT_EQ(back.mail_from.params.size, std::optional<uint64_t>(999));
    EXPECT_EQ(back.mail_from.params.body, smtp::BodyType::k8BitMime);
    EXPECT_TRUE(back.mail_from.params.smtputf8);
    EXPECT_EQ(back.mail_from.params.ret, smtp::DsnRet::kHdrs);
    EXPECT_EQ(back.mail_from.params.envid, "x+2By");
    ASSERT_EQ(back.recipients.size(), 2u);
    EXPECT_EQ(back.recipients[0].recipient.mailbox(),
              "j\xc3\xb6rg@b\xc3\xbc"
              "cher.example");
    EXPECT_EQ(back.recipients[0].params.notify, smtp::notify::kSuccess | smtp::notify::kDelay);
    EXPECT_EQ(back.recipients[0].params.orcpt, "rfc822;a+2Bb@example.net");
    EXPECT_EQ(back.recipients[1].recipient.mailbox(), "Postmaster");  // as written
    EXPECT_EQ(back.recipients[1].params.notify, smtp::notify::kNever);
    EXPECT_EQ(back.client_ip, e.client_ip);
    EXPECT_EQ(back.client_port, e.client_port);
    EXPECT_EQ(back.helo, e.helo);
    EXPECT_EQ(back.protocol, e.protocol);
    EXPECT_EQ(back.listener, e.listener);
    EXPECT_EQ(back.received_at, e.received_at);
    // And what it writes again is what was read.
    EXPECT_EQ(envelope_to_json(back, 4321), envelope_to_json(e, 4321));
}

TEST(EnvelopeFromJson, NullSender) {
    Envelope e = basic_envelope();
    e.mail_from = smtp::parse_mail_from("FROM:<>", 1 << 20).value;
    Envelope back;
    uint64_t size = 0;
    std::string error;
    ASSERT_TRUE(envelope_from_json(envelope_to_json(e, 1), back, size, error)) << error;
    EXPECT_TRUE(back.mail_from.sender.null);
}

TEST(EnvelopeFromJson, DamagedRecordsAreRefusedWithAReason) {
    const std::string good = envelope_to_json(basic_envelope(), 10);
    Envelope back;
    uint64_t size = 0;
    std::string error;
    // Truncated anywhere: never accepted.
    for (size_t cut = 0; cut + 1 < good.size(); cut += 7) {
        error.clear();
        EXPECT_FALSE(envelope_from_json(good.substr(0, cut), back, size, error)) << cut;
        EXPECT_FALSE(error.empty());
    }
    auto without = [&](const std::string& key) {
        std::string text = good;
        size_t at = text.find("\"" + key + "\"");
        text.replace(at, key.size() + 2, "\"x" + key + "\"");
        return text;
    };
    for (const char* key : {"queue_id", "mail_from", "recipients", "size", "received_at"}) {
        EXPECT_FALSE(envelope_from_json(without(key), back, size, error)) << key;
    }
    std::string bad_address = good;
    bad_address.replace(bad_address.find("bob@example.net"), 15, "bob@@example.net");
    EXPECT_FALSE(envelope_from_json(bad_address, back, size, error));
    EXPECT_FALSE(envelope_from_json("[1, 2]", back, size, error));
    EXPECT_FALSE(envelope_from_json("", back, size, error));
}

TEST(EnvelopeFromJson, Crc32RoundTripAndAbsence) {
    Envelope e = basic_envelope();
    Envelope back;
    uint64_t size = 0;
    std::string error;
    std::optional<uint32_t> crc = 7;
    ASSERT_TRUE(envelope_from_json(envelope_to_json(e, 10, 0xCBF43926u), back, size, error, &crc))
        << error;
    EXPECT_EQ(crc, 0xCBF43926u);
    // Records without it (the outbox's, older spools) read as none.
    ASSERT_TRUE(envelope_from_json(envelope_to_json(e, 10), back, size, error, &crc)) << error;
    EXPECT_FALSE(crc.has_value());
    std::string bad = envelope_to_json(e, 10, 1);
    bad.replace(bad.find("\"crc32\": 1"), 10, "\"crc32\": \"1\"");
    EXPECT_FALSE(envelope_from_json(bad, back, size, error, &crc));
    EXPECT_EQ(error, "crc32 is not a number from 0 to 4294967295");
    for (const char* value : {"-1", "1.5", "4294967296"}) {
        bad = envelope_to_json(e, 10, 1);
        bad.replace(bad.find("\"crc32\": 1"), 10, std::string("\"crc32\": ") + value);
        EXPECT_FALSE(envelope_from_json(bad, back, size, error, &crc)) << value;
    }
    bad = envelope_to_json(e, 10, 1);
    bad.replace(bad.find("\"size\": 10"), 10, "\"size\": -10");
    EXPECT_FALSE(envelope_from_json(bad, back, size, error, &crc));
}

TEST(Checksum, Crc32OfTheCheckString) {
    // The CRC-32 check value of "123456789" (ISO-HDLC, as gzip and zlib).
    EXPECT_EQ(content_crc32("123456789"), 0xCBF43926u);
    EXPECT_EQ(content_crc32("1234", "56789"), 0xCBF43926u);
    EXPECT_EQ(content_crc32(""), 0u);
}

}  // namespace
}  // namespace postern::queue
