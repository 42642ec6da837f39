#!/usr/bin/env bash
# Installs what pushfleet's build, demo and tests need on a fresh Debian machine.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
# Build: libzmq for the relay's and publisher's ZeroMQ sockets (found with
# pkg-config), protoc for the etcd client's generated code.
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
pkg-config --exists libzmq 2>/dev/null || need_apt+=(libzmq3-dev)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
# Tests and the local fleet: a real etcd 3.4 and HAProxy 2.6.
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v haproxy >/dev/null || need_apt+=(haproxy)
# Checks of deploy/systemd (systemd-analyze verify); absent in minimal containers.
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! python3 -c 'import zmq, websockets, moto.server, boto3, cfnlint, prometheus_client' 2>/dev/null \
  || ! command -v cfn-lint >/dev/null; then
  echo "setup: pip install -r tests/py/requirements.txt"
  python3 -m pip install -q --disable-pip-version-check -r tests/py/requirements.txt \
    || python3 -m pip install -q --break-system-packages -r tests/py/requirements.txt
fi

# The browser test (tests/tests/browser.rs): Debian's Chromium, driven by
# playwright-core from npm (pinned in tests/browser/package-lock.json).
need_browser=()
command -v node >/dev/null || need_browser+=(nodejs)
command -v npm >/dev/null || need_browser+=(npm)
[ -x /usr/bin/chromium ] || need_browser+=(chromium)
if [ ${#need_browser[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_browser[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_browser[@]}"
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "setup: npm ci in tests/browser"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- Monitoring (monitoring/pipeline.sh, tests/tests/monitoring.rs) -----------------
# Graphite from Debian (carbon-cache; graphite-web served by gunicorn, both on Debian's
# own /usr/bin/python3), Etsy StatsD from npm (pinned in monitoring/package-lock.json),
# and the validator's Grafana SDK from PyPI (tests/py/requirements.txt).
need_monitoring=()
[ -x /usr/bin/carbon-cache ] || need_monitoring+=(graphite-carbon)
[ -f /usr/lib/python3/dist-packages/graphite/wsgi.py ] || need_monitoring+=(graphite-web)
[ -x /usr/bin/gunicorn ] || need_monitoring+=(gunicorn)
# Serves the Graphite UI's static files (the render API works without it).
/usr/bin/python3 -c 'import whitenoise' 2>/dev/null || need_monitoring+=(python3-whitenoise)
command -v node >/dev/null || need_monitoring+=(nodejs)
command -v npm >/dev/null || need_monitoring+=(npm)
# graphite-web's and carbon's Python dependencies, as Debian's Python imports them.
if ! /usr/bin/python3 -c 'import django, tagging, cairocffi, pyparsing, whisper, twisted, carbon, graphite' 2>/dev/null; then
  need_monitoring+=(graphite-web graphite-carbon python3-django python3-django-tagging
    python3-cairocffi python3-pyparsing python3-whisper python3-twisted)
fi
if [ ${#need_monitoring[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_monitoring[*]} (monitoring)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_monitoring[@]}"
fi
if [ ! -f monitoring/node_modules/statsd/stats.js ]; then
  echo "setup: npm ci in monitoring/ (Etsy StatsD)"
  (cd monitoring && npm ci --omit=optional --no-audit --no-fund --loglevel=error)
fi
if ! python3 -c 'import yaml, grafana_foundation_sdk' 2>/dev/null; then
  echo "setup: pip install -r tests/py/requirements.txt (monitoring validator)"
  python3 -m pip install -q --disable-pip-version-check -r tests/py/requirements.txt \
    || python3 -m pip install -q --break-system-packages -r tests/py/requirements.txt
fi

command -v cargo >/dev/null || { echo "setup: cargo is required (https://rustup.rs)" >&2; exit 1; }
