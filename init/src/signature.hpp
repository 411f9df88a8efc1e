#pragma once
// OpenPGP signatures checked with gpgv, as apt and dnf do: apt's Release files, dnf's
// repomd.xml.asc and RPM header signatures.

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

// Checks `signed_data` (a clear-signed text, or any bytes with their detached `signature`,
// binary or armoured) with gpgv against `keys`: each a keyring file's path or an armoured key
// block given inline; an armoured file is dearmoured first (gpgv reads binary keyrings only).
// `what` names the signed input in messages.
// Errors: data error (65) when the signature does not verify (also when it is made by a key
// none of `keys` holds); configuration error (78) when `keys` is empty, a key cannot be read,
// or gpgv is missing.
Result<void> verify_with(const std::vector<std::string>& keys, const std::string& what,
                         const std::string& signed_data, const std::optional<std::string>& signature);

// Checks `signed_text` (an InRelease file, or a Release file with its detached `signature`)
// against the repository's keyrings (keyring_sources), unless the repository is trusted=yes.
// Errors: as verify_with's; the configuration error names Signed-By and trusted=yes.
Result<void> verify(const apt::Repo& repo, const fs::path& apt_root, const std::string& what,
                    const std::string& signed_text, const std::optional<std::string>& signature);

}  // namespace kmodkit::init::signature
