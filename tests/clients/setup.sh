#!/usr/bin/env bash
# Installs the git clients that are not git, for tests/libgit2.rs: pygit2 (libgit2, which
# fetches over protocol v0 only) from PyPI into a virtual environment under target/.
# Idempotent: does nothing, and needs no network, once the pinned version is installed.
# .ci/run calls it before the tests; run it by hand before `cargo test --test tests libgit2::`.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYGIT2_VERSION=1.21.0
venv=target/clients/venv

if [ -x "$venv/bin/python" ] &&
  "$venv/bin/python" -c "import pygit2, sys; sys.exit(pygit2.__version__ != '$PYGIT2_VERSION')" 2>/dev/null; then
  exit 0
fi

if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  echo "== installing python3 and python3-venv"
  apt-get update -qq && apt-get install -y -qq python3 python3-venv
fi

echo "== installing pygit2 $PYGIT2_VERSION into $venv"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
  "pygit2==$PYGIT2_VERSION"
"$venv/bin/python" -c 'import pygit2; print("pygit2", pygit2.__version__, "libgit2", pygit2.LIBGIT2_VERSION)'
