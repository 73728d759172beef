#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests when it is missing (needs root, as on CI),
# and kcat (librdkafka's producer: the non-Python-producer tests skip, saying so, without it).
set -euo pipefail
need_chromium=0; need_kcat=0
command -v chromium >/dev/null 2>&1 || need_chromium=1
command -v kcat >/dev/null 2>&1 || need_kcat=1
if [ "$need_chromium$need_kcat" = "00" ]; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  if [ "$need_kcat" = "1" ]; then
    echo "kcat is missing (the non-Python producer tests will skip): sudo apt-get install -y kcat" >&2
  fi
  if [ "$need_chromium" = "1" ]; then
    echo "chromium is missing; install it with: sudo apt-get install -y chromium chromium-driver" >&2
    exit 1
  fi
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ "$need_chromium" = "1" ]; then
  echo "==> installing chromium (Debian package) for the browser tests"
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if [ "$need_kcat" = "1" ]; then
  echo "==> installing kcat (Debian package) for the non-Python producer tests"
  apt-get install -y -qq kcat >/dev/null || echo "kcat could not be installed; those tests will skip" >&2
fi
