#!/usr/bin/env bash
# Debian packages the Rust build needs on a fresh machine: cmake for rdkafka's bundled librdkafka
# (`cmake-build`), and the curl headers, which librdkafka 2.12's rdkafka_conf.c includes even with
# curl switched off (librdkafka issues #5135/#5204). Nothing links against curl. Idempotent.
set -euo pipefail
missing=()
command -v cmake >/dev/null || missing+=(cmake)
[[ -f /usr/include/x86_64-linux-gnu/curl/curl.h || -f /usr/include/curl/curl.h ]] || missing+=(libcurl4-openssl-dev)
command -v c++ >/dev/null || missing+=(g++)
if ((${#missing[@]} > 0)); then
    printf 'build-deps: installing %s with apt-get\n' "${missing[*]}" >&2
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
