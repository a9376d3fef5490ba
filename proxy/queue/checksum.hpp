// The checksum of a spooled message file: CRC-32 (zlib's, the one of gzip and PNG), kept in the
// envelope record so that a message file damaged on disk is found before it is sent.
#pragma once

#include <cstdint>
#include <string_view>

namespace postern::queue {

// The CRC-32 of `first` followed by `second`.
uint32_t content_crc32(std::string_view first, std::string_view second = {});

}  // namespace postern::queue
