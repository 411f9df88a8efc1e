#pragma once
// OpenPGP signatures of repository Release files, checked with gpgv as apt does.

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "apt.hpp"
#include "kmodkit/result.hpp"

namespace kmodkit::init::signature {

namespace fs = std::filesystem;

// The keyrings a repository's Release must be signed with: its Signed-By (files, or a key
// block given inline), else apt's trusted keyrings under `apt_root`.
std::vector<std::string> keyring_sources(const apt::Repo& repo, const fs::path& apt_root);

// Checks `signed_text` (an InRelease file, or a Release file with its detached `signature`)
// against the repository's keyrings with gpgv.
// Errors: data error (65) when the signature does not verify; configuration error (78) when
// there is no keyring to check it with or gpgv is missing.
Result<void> verify(const apt::Repo& repo, const fs::path& apt_root, const std::string& what,
                    const std::string& signed_text, const std::optional<std::string>& signature);

}  // namespace kmodkit::init::signature
