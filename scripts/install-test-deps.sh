#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages, idempotently:
# Debian packages (redis-server for the Redis-broker test and the benchmark, dovecot-imapd for
# the email connector tests, espeak-ng for the device voice tests; the firmware core's cross
# build: gcc-xtensa-lx106, its binutils, picolibc and QEMU's Xtensa system emulator), and the
# offline sandbox test image (built from Debian's busybox-static; no registry needed).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# Dovecot's IMAP server for the email connector tests (dovecot-core, pulled in, ships dovecot-lda).
[ -x /usr/lib/dovecot/imap ] || need+=(dovecot-imapd)
# gcc with ASan/UBSan for the firmware core's C tests (the core, mc_model.c against tflite-micro,
# the core as a ctypes library against the gateway), make, and the 32-bit Xtensa (lx106) cross
# build run in QEMU.
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || need+=(make)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v xtensa-lx106-elf-gcc >/dev/null 2>&1 || need+=(gcc-xtensa-lx106)
command -v xtensa-lx106-elf-size >/dev/null 2>&1 || need+=(binutils-xtensa-lx106)
[ -f /usr/lib/xtensa-lx106-elf/picolibc.specs ] || need+=(picolibc-xtensa-lx106-elf)
command -v qemu-system-xtensa >/dev/null 2>&1 || need+=(qemu-system-misc)
# espeak-ng: the gateway's offline text to speech, and the spoken phrases of the voice tests.
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -x sandbox-image/build-test-image.sh ] || [ -f sandbox-image/build-test-image.sh ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    bash sandbox-image/build-test-image.sh
  elif [ -n "${CI:-}" ]; then
    echo "error: CI is set but the Docker engine is not reachable; sandbox tests cannot run" >&2
    exit 1
  else
    echo "warning: Docker engine not reachable; sandbox tests will be skipped" >&2
  fi
fi
