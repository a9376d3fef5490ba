// Every fixed SMTP reply postern sends, in one place, with its RFC 3463 enhanced code. The
// troubleshooting page of docs/ lists the same texts.
#pragma once

#include "proxy/smtp/reply.hpp"

namespace postern::smtp::replies {

// Sequence and syntax (RFC 5321 4.2.3, 4.3.2).
inline const Reply kOk{250, "2.0.0", "Ok"};
inline const Reply kSenderOk{250, "2.1.0", "Ok"};
inline const Reply kRecipientOk{250, "2.1.5", "Ok"};
inline const Reply kStartData{354, "", "End data with <CR><LF>.<CR><LF>"};
inline const Reply kBye{221, "2.0.0", "Bye"};
inline const Reply kCannotVrfy{252, "2.5.0",
                               "Cannot VRFY user, but will accept message and attempt delivery"};
inline const Reply kExpnDisabled{502, "5.5.1", "EXPN is not supported"};
inline const Reply kNotImplemented{502, "5.5.1", "Command not implemented"};
// STARTTLS (RFC 3207).
inline const Reply kReadyForTls{220, "2.0.0", "Ready to start TLS"};
inline const Reply kTlsActive{503, "5.5.1", "Error: TLS already active"};
inline const Reply kTlsNotOffered{502, "5.5.1", "Error: STARTTLS is not offered here"};
inline const Reply kStarttlsArgs{501, "5.5.4", "Syntax: STARTTLS (no parameters)"};
inline const Reply kStarttlsInTransaction{503, "5.5.1", "Error: MAIL transaction in progress"};
inline const Reply kTlsRequired{530, "5.7.0", "Must issue a STARTTLS command first"};
// AUTH (RFC 4954).
inline const Reply kAuthOk{235, "2.7.0", "Authentication successful"};
inline const Reply kAuthFailed{535, "5.7.8", "Authentication credentials invalid"};
inline const Reply kAuthCancelled{501, "5.0.0", "Authentication cancelled"};
inline const Reply kAuthBadResponse{501, "5.5.2", "Cannot decode the AUTH response"};
inline const Reply kAuthSyntax{501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"};
inline const Reply kAuthUnknownMechanism{504, "5.5.4",
                                         "Unrecognized authentication type (PLAIN, LOGIN)"};
inline const Reply kAuthAlready{503, "5.5.1", "Error: already authenticated"};
inline const Reply kAuthNeedsEhlo{503, "5.5.1", "Error: AUTH needs EHLO, not HELO"};
inline const Reply kAuthInTransaction{503, "5.5.1",
                                      "Error: AUTH not permitted during a mail transaction"};
inline const Reply kAuthNeedsTls{538, "5.7.11",
                                 "Encryption required for requested authentication mechanism"};
inline const Reply kAuthLockout{421, "4.7.0",
                                "Too many failed authentications from your address; try later"};
inline const Reply kAuthLineTooLong{500, "5.5.6", "AUTH response too long"};
inline const Reply kBadAuthParam{501, "5.5.4", "Bad AUTH= parameter (xtext or <>)"};
inline const Reply kUnknownCommand{500, "5.5.2", "Error: command not recognized"};
inline const Reply kLineTooLong{500, "5.5.6", "Error: command line too long"};
inline const Reply kBadCommandOctets{500, "5.5.2",
                                     "Error: bare <CR>, bare <LF> or control character in command"};
inline const Reply kNeedHelo{503, "5.5.1", "Error: send EHLO or HELO first"};
inline const Reply kNestedMail{503, "5.5.1", "Error: nested MAIL command"};
inline const Reply kNeedMail{503, "5.5.1", "Error: need MAIL command"};
inline const Reply kNeedRcpt{503, "5.5.1", "Error: need RCPT command"};
inline const Reply kBdatInProgress{503, "5.5.1", "Error: BDAT transfer in progress"};
inline const Reply kHeloSyntax{501, "5.5.4", "Syntax: EHLO or HELO domain-or-address-literal"};
inline const Reply kNoArguments{501, "5.5.4", "Syntax error: no arguments allowed"};
inline const Reply kMailSyntax{501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]"};
inline const Reply kRcptSyntax{501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]"};
inline const Reply kVrfySyntax{501, "5.5.4", "Syntax: VRFY address"};
inline const Reply kBdatSyntax{501, "5.5.4", "Syntax: BDAT size [LAST]"};
inline const Reply kBadSender{501, "5.1.7", "Bad sender address syntax"};
inline const Reply kBadRecipient{501, "5.1.3", "Bad recipient address syntax"};
inline const Reply kSenderPathTooLong{501, "5.1.7", "Sender address too long (RFC 5321 4.5.3.1)"};
inline const Reply kRecipientPathTooLong{501, "5.1.3",
                                         "Recipient address too long (RFC 5321 4.5.3.1)"};
inline const Reply kUtf8NeedsSmtputf8{553, "5.6.7",
                                      "Non-ASCII address requires the SMTPUTF8 parameter"};
inline const Reply kBadParameterSyntax{501, "5.5.4", "Malformed ESMTP parameter"};
inline const Reply kDuplicateParameter{501, "5.5.4", "Duplicate ESMTP parameter"};
inline const Reply kUnknownParameter{555, "5.5.4", "Unsupported ESMTP parameter"};
inline const Reply kParamsNeedEhlo{555, "5.5.4", "ESMTP parameters require EHLO"};
inline const Reply kBdatNeedsEhlo{503, "5.5.1", "Error: BDAT requires EHLO"};
inline const Reply kBadSize{501, "5.5.4", "Bad SIZE parameter"};
inline const Reply kBadBody{501, "5.5.4", "Bad BODY parameter: use 7BIT or 8BITMIME"};
inline const Reply kBadSmtputf8{501, "5.5.4", "SMTPUTF8 takes no value"};
inline const Reply kBadRet{501, "5.5.4", "Bad RET parameter: use FULL or HDRS"};
inline const Reply kBadEnvid{501, "5.5.4", "Bad ENVID parameter: xtext of at most 100 characters"};
inline const Reply kBadNotify{501, "5.5.4",
                              "Bad NOTIFY parameter: NEVER, or SUCCESS, FAILURE, DELAY"};
inline const Reply kBadOrcpt{501, "5.5.4", "Bad ORCPT parameter: addr-type;xtext"};

// Limits (RFC 5321 4.5.3.1.10, RFC 1870).
inline const Reply kMessageTooBig{552, "5.3.4", "Message size exceeds fixed maximum message size"};
inline const Reply kTooManyRecipients{452, "4.5.3", "Error: too many recipients"};
inline const Reply kTimeout{421, "4.4.2", "Error: timeout exceeded"};
inline const Reply kTooManyErrors{421, "4.7.0", "Error: too many errors"};
inline const Reply kTooManyConnections{421, "4.7.0", "Error: too many connections"};
inline const Reply kTooManyConnectionsFromIp{421, "4.7.0",
                                             "Error: too many connections from your address"};
inline const Reply kShuttingDown{421, "4.3.2", "Service shutting down, closing connection"};

// Message content (strict framing, SMTP smuggling defence).
inline const Reply kBareLineEnd{550, "5.6.0",
                                "Message rejected: bare <CR> or <LF> in message data "
                                "(lines must end with <CR><LF>)"};
inline const Reply kNulInData{550, "5.6.0", "Message rejected: NUL octet in message data"};
inline const Reply kDataLineTooLong{550, "5.6.0",
                                    "Message rejected: a line is longer than 998 octets "
                                    "(RFC 5322 2.1.1)"};

// Policy and storage.
inline const Reply kRelayDenied{554, "5.7.1", "Relay access denied"};
inline const Reply kAuthRequired{530, "5.7.0", "Authentication required"};
inline const Reply kInsufficientStorage{452, "4.3.1", "Insufficient system storage"};
inline const Reply kStorageFailed{451, "4.3.0",
                                  "Error: local error in processing, try again later"};

// Routes and upstreams (passthrough).
inline const Reply kOtherRoute{452, "4.5.3",
                               "Recipient takes another route: send it in a separate "
                               "transaction"};
inline const Reply kNoValidRecipients{554, "5.5.1", "Error: no valid recipients"};
// The text after "Upstream unavailable: " names the reason; see docs/troubleshooting.md.
inline constexpr int kUpstreamUnavailableCode = 451;
inline constexpr const char* kUpstreamUnavailableEnhanced = "4.4.1";

}  // namespace postern::smtp::replies
