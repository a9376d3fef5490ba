// The admin API's queue JSON and the mailq-style text made from it.
#include "proxy/admin/queue_json.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "proxy/smtp/esmtp_params.hpp"

namespace postern::admin {
namespace {

using namespace std::chrono;
namespace json = boost::json;

queue::QueueEntry entry() {
    queue::QueueEntry e;
    e.envelope.queue_id = "01JDZ3K5Q7ABCD";
    e.envelope.route = "default";
    e.envelope.mail_from = smtp::parse_mail_from("FROM:<alice@example.com>", false).value;
    for (const char* to :
         {"TO:<bob@example.net>", "TO:<carol@example.net>", "TO:<dan@example.net>"})
        e.envelope.recipients.push_back(smtp::parse_rcpt_to(to, false).value);
    e.envelope.received_at = system_clock::time_point(seconds(1764362483));  // 2025-11-28 20:41:23
    e.size = 4096;
    e.recipients.resize(3);
    e.recipients[0].status = queue::RecipientStatus::kDelivered;
    e.recipients[0].reply = "250 2.0.0 Ok";
    e.recipients[1].reply = "451 4.3.0 busy";
    e.recipients[2].status = queue::RecipientStatus::kFailed;
    e.recipients[2].reply = "550 5.1.1 no such user";
    e.recipients[2].bounced = true;
    e.attempts = 2;
    e.last_error = "451 4.3.0 busy";
    e.state = "deferred";
    e.next_attempt_in = milliseconds(53'200);
    return e;
}

const system_clock::time_point kNow = system_clock::time_point(seconds(1764362483 + 90));

TEST(QueueJson, EntryFields) {
    json::object o = queue_entry_json(entry(), kNow);
    EXPECT_EQ(o["id"], "01JDZ3K5Q7ABCD");
    EXPECT_EQ(o["route"], "default");
    EXPECT_EQ(o["sender"], "alice@example.com");
    EXPECT_EQ(o["size"].to_number<int64_t>(), 4096);
    EXPECT_EQ(o["received_at"], "2025-11-28T20:41:23Z");
    EXPECT_EQ(o["age_s"].to_number<int64_t>(), 90);
    EXPECT_EQ(o["attempts"].to_number<int64_t>(), 2);
    EXPECT_EQ(o["state"], "deferred");
    EXPECT_EQ(o["next_attempt_in_s"].to_number<int64_t>(), 54);  // rounded up
    EXPECT_EQ(o["last_error"], "451 4.3.0 busy");
    const json::array& r = o["recipients"].as_array();
    ASSERT_EQ(r.size(), 3u);
    EXPECT_EQ(r[0].as_object().at("state"), "delivered");
    EXPECT_EQ(r[1].as_object().at("state"), "pending");
    EXPECT_EQ(r[1].as_object().at("address"), "carol@example.net");
    EXPECT_EQ(r[2].as_object().at("state"), "failed");
    EXPECT_EQ(r[2].as_object().at("notified"), true);
}

TEST(QueueJson, NothingScheduledIsNull) {
    queue::QueueEntry e = entry();
    e.next_attempt_in.reset();
    e.envelope.mail_from.sender.null = true;
    json::object o = queue_entry_json(e, kNow);
    EXPECT_TRUE(o["next_attempt_in_s"].is_null());
    EXPECT_EQ(o["sender"], "");
}

TEST(QueueJson, TableLikeMailq) {
    // Through text and back, as the command line gets it.
    json::value list = json::parse(json::serialize(queue_list_json({entry()}, kNow)));
    const std::string table = format_queue_table(list);
    EXPECT_EQ(table,
              "-Queue ID-      --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
              "01JDZ3K5Q7ABCD      4096 Fri Nov 28 20:41:23  alice@example.com\n"
              "(451 4.3.0 busy)\n"
              "(attempts 2, next attempt in 54s, route default)\n"
              "                                              carol@example.net\n"
              "\n"
              "-- 4 Kbytes in 1 Request.\n");
}

TEST(QueueJson, TableMarksHeldAndRunning) {
    queue::QueueEntry held = entry();
    held.state = "held";
    held.next_attempt_in.reset();
    queue::QueueEntry running = entry();
    running.envelope.queue_id = "01JDZ3K5Q7ABCE";
    running.state = "running";
    running.envelope.mail_from.sender.null = true;
    const std::string table = format_queue_table(queue_list_json({held, running}, kNow));
    EXPECT_NE(table.find("01JDZ3K5Q7ABCD! "), std::string::npos) << table;
    EXPECT_NE(table.find("(attempts 2, held, route default)"), std::string::npos) << table;
    EXPECT_NE(table.find("01JDZ3K5Q7ABCE* "), std::string::npos) << table;
    EXPECT_NE(table.find("MAILER-DAEMON"), std::string::npos) << table;
    EXPECT_NE(table.find("-- 8 Kbytes in 2 Requests."), std::string::npos) << table;
}

TEST(QueueJson, EmptyQueue) {
    EXPECT_EQ(format_queue_table(queue_list_json({}, kNow)), "Mail queue is empty\n");
    EXPECT_EQ(format_queue_table(json::value("nonsense")), "Mail queue is empty\n");
}

TEST(QueueJson, ShowListsEveryRecipient) {
    const std::string text = format_queue_entry(queue_entry_json(entry(), kNow));
    EXPECT_NE(text.find("  <bob@example.net> delivered: 250 2.0.0 Ok\n"), std::string::npos);
    EXPECT_NE(text.find("  <carol@example.net> pending: 451 4.3.0 busy\n"), std::string::npos);
    EXPECT_NE(text.find("  <dan@example.net> failed: 550 5.1.1 no such user\n"), std::string::npos);
    EXPECT_NE(text.find("received:    2025-11-28T20:41:23Z (90s ago)\n"), std::string::npos)
        << text;
}

}  // namespace
}  // namespace postern::admin
