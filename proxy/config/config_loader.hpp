// Reads the TOML configuration (toml++) into a Config. Every problem is reported, not only the
// first: unknown keys (with "did you mean"), wrong types, bad values, unknown route names, each
// naming file:line:col and the key.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "proxy/config/config.hpp"

namespace postern::config {

struct ConfigIssue {
    std::string file;
    unsigned line = 0;
    unsigned column = 0;
    std::string key;  // "listener[0].address"; empty for syntax errors
    std::string message;
    bool warning = false;

    std::string to_string() const;  // "file:line:col: key: message"
};

struct LoadResult {
    Config config;
    std::vector<ConfigIssue> issues;  // errors and warnings, in file order

    bool ok() const;
};

LoadResult load_config_file(const std::string& path);

// The same from text already in memory; `name` stands for the file in messages.
LoadResult load_config_text(std::string_view text, const std::string& name);

}  // namespace postern::config
