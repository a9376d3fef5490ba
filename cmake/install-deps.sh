#!/usr/bin/env bash
# Installs the Debian 12 packages postern needs to build, run and test, when any is missing.
# Runs apt-get as root, through sudo otherwise. Idempotent and quiet when all is there.
set -euo pipefail

packages=(
    cmake ninja-build g++ pkg-config ccache
    libboost1.81-dev libssl-dev libtomlplusplus-dev libgtest-dev zlib1g-dev
    swaks libnet-ssleay-perl libio-socket-ssl-perl postfix python3-aiosmtpd openssl whois
    libcrypt-dev nodejs liblua5.4-dev
    clang-14 libfuzzer-14-dev
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
# Postfix is wanted only for smtp-source/smtp-sink: "No configuration" starts no mail system.
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
