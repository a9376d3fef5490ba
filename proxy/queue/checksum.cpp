// Message checksums; see checksum.hpp.
#include "proxy/queue/checksum.hpp"

#include <zlib.h>

namespace postern::queue {

uint32_t content_crc32(std::string_view first, std::string_view second) {
    uLong crc = crc32_z(0L, Z_NULL, 0);
    for (std::string_view piece : {first, second}) {
        // A null pointer would reset the CRC (zlib): empty pieces are skipped.
        if (piece.empty()) continue;
        crc = crc32_z(crc, reinterpret_cast<const Bytef*>(piece.data()), piece.size());
    }
    return static_cast<uint32_t>(crc);
}

}  // namespace postern::queue
