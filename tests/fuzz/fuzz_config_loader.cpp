// Fuzzes the TOML configuration loader: any text gives a Config or issues, never a crash, and
// every issue names a position.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "proxy/config/config_loader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto result = postern::config::load_config_text(text, "fuzz.toml");
    for (const auto& issue : result.issues) {
        if (issue.message.empty()) std::abort();
    }
    return 0;
}
