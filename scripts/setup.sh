#!/usr/bin/env bash
# Idempotent set-up: system C library (when too old for TFDV/MLMD wheels), then .venv from the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
LOCK=requirements.lock
SERVING_LOCK=requirements-serving.lock
KFP_LOCK=requirements-kfp.lock
STAMP="$VENV/.tlpipe-setup-stamp"
NEED_GLIBC=2.39
APT_ETC=${TLPIPE_APT_ETC:-/etc/apt}          # overridable so tests can run this safely
OS_RELEASE=${TLPIPE_OS_RELEASE:-/etc/os-release}

say() { printf '[setup] %s\n' "$*"; }

glibc_version() {
  local first; first=$(ldd --version 2>/dev/null | sed -n 1p || true)
  [[ "$first" =~ ([0-9]+\.[0-9]+)$ ]] && echo "${BASH_REMATCH[1]}" || echo 0
}
version_lt() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$1" ] && [ "$1" != "$2" ]; }

ensure_glibc() {
  local have; have=$(glibc_version)
  if ! version_lt "$have" "$NEED_GLIBC"; then
    say "glibc $have >= $NEED_GLIBC: system libraries are fine."
    return
  fi
  say "glibc $have < $NEED_GLIBC: TFDV 1.21 and ML Metadata 1.21 ship only manylinux_2_39 wheels."
  if ! grep -qs '^ID=debian' "$OS_RELEASE"; then
    say "ERROR: automatic glibc upgrade is only supported on Debian 12 (found: $(. "$OS_RELEASE" 2>/dev/null; echo "${PRETTY_NAME:-unknown}"))."
    say "Use a system with glibc >= $NEED_GLIBC (e.g. Ubuntu 24.04+, Debian 13) and run 'make setup' again."
    exit 1
  fi
  local SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  say "Adding the Debian 13 (trixie) suite at apt pin priority 100 (nothing else is upgraded from it),"
  say "then upgrading only libc6 and libstdc++6 from trixie."
  $SUDO tee "$APT_ETC/sources.list.d/tlpipe-trixie.sources" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $SUDO tee "$APT_ETC/preferences.d/tlpipe-trixie" >/dev/null <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q -t trixie \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold libc6 libstdc++6
  say "glibc is now $(glibc_version)."
}

ensure_venv() {
  if [ -f "$STAMP" ] && [ "$STAMP" -nt "$LOCK" ] && [ "$STAMP" -nt "$SERVING_LOCK" ] \
     && [ "$STAMP" -nt "$KFP_LOCK" ] && [ "$STAMP" -nt pyproject.toml ]; then
    say "$VENV is up to date with $LOCK."
    return
  fi
  [ -x "$VENV/bin/python" ] || { say "Creating $VENV with $($PY --version)"; $PY -m venv "$VENV"; }
  say "Installing the pinned TFX 1.21 stack from $LOCK (first time: several minutes)."
  quietly "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$LOCK"
  say "Installing the serving extras from $SERVING_LOCK without dependency resolution (see its header)."
  quietly "$VENV/bin/python" -m pip install -q --no-deps -r "$SERVING_LOCK"
  say "Installing kfp for 'tlpipe compile --kubeflow' from $KFP_LOCK without dependency resolution (see its header)."
  quietly "$VENV/bin/python" -m pip install -q --no-deps -r "$KFP_LOCK"
  quietly "$VENV/bin/python" -m pip install -q --no-deps -e .
  check_imports
  touch "$STAMP"
}

# Debian packages, non-interactively (no prompts, config files kept, stdin closed for CI).
apt_install() {
  local SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq </dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" </dev/null
}

# The HTML screenshot tests drive a headless Chromium.
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then
    say "chromium is on PATH: $(command -v chromium)."
    return
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    say "WARNING: chromium is not on PATH and this is not a Debian-like system: install Chromium yourself (the HTML screenshot tests need it)."
    return
  fi
  say "chromium is not on PATH: installing the Debian package chromium (HTML screenshot tests need it)."
  apt_install chromium
  say "chromium installed: $(command -v chromium || echo 'still not on PATH')."
}

# The ML Metadata on MySQL tests start their own MariaDB server (no system service is used).
ensure_mariadb() {
  local server=${TLPIPE_MARIADBD:-$(command -v mariadbd || echo /usr/sbin/mariadbd)}
  if [ -x "$server" ]; then
    say "MariaDB server is installed: $server."
    return
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    say "WARNING: mariadbd not found and this is not a Debian-like system: install MariaDB (the ML Metadata on MySQL tests need it)."
    return
  fi
  say "mariadbd not found: installing the Debian package mariadb-server (the ML Metadata on MySQL tests need it)."
  apt_install mariadb-server mariadb-client
  say "mariadb-server installed."
}

# Runs a noisy command, showing its output only when it fails.
quietly() {
  local log; log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then cat "$log"; rm -f "$log"; return 1; fi
  rm -f "$log"
}

check_imports() {
  local log; log=$(mktemp)
  if ! TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" - >"$log" 2>&1 <<'PY'
import tensorflow_data_validation, ml_metadata, tensorflow_transform, keras_tuner
from tfx import v1 as tfx
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2, prediction_service_pb2_grpc
import grpc_health.v1.health, grpc_reflection.v1alpha.reflection
import tensorflow as tf, keras
import tfx as tfx_package
print(f"[setup] imports OK: TFX {tfx_package.__version__}, TF {tf.__version__}, Keras {keras.__version__}")
PY
  then
    cat "$log"; rm -f "$log"
    say "ERROR: the installed stack does not import (see above)."; exit 1
  fi
  grep '^\[setup\]' "$log"; rm -f "$log"
}

# TLPIPE_SETUP_ONLY=glibc|chromium|mariadb runs one step (the tests use it with fake apt-get).
case "${TLPIPE_SETUP_ONLY:-}" in
  glibc) ensure_glibc ;;
  chromium) ensure_chromium ;;
  mariadb) ensure_mariadb ;;
  *) ensure_glibc; ensure_chromium; ensure_mariadb; ensure_venv ;;
esac
