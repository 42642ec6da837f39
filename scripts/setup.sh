#!/usr/bin/env bash
# Installs what pushfleet's build, demo and tests need on a fresh Debian machine, or
# (--check) only reports what is there. Every requirement is checked by the thing that
# is actually needed (a file, a Python module as the right interpreter imports it, a
# command), not by a neighbour that usually comes with it.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
Usage: scripts/setup.sh [--check | --help]

  (no option)  Install whatever requirement below is missing: Debian packages with
               apt-get (--no-install-recommends, every needed package named), Python
               packages with pip from tests/py/requirements.txt (into the python3 first
               in PATH; retried with --break-system-packages), npm packages with
               `npm ci` in the folder holding the package-lock.json. Then it runs the
               check below and fails if anything is still missing.
  --check      Install nothing. Print one line per requirement, "ok" or "missing",
               with the package that provides it; exit 1 if anything is missing,
               0 if everything is there.
  --help       This text.

Environment:
  PUSHFLEET_SETUP_ROOT  --check only: look for the absolute file paths under this
               directory instead of / (e.g. a container image's root file system
               being prepared). Commands and Python modules are still looked up on
               this machine.
EOF
}

# --- Requirements -------------------------------------------------------------------
# One row per requirement, driving both modes:
#   kind     file:    the path exists (absolute paths are looked up under
#                     $PUSHFLEET_SETUP_ROOT; a path may be a glob)
#            exec:    the path is an executable file (same lookup)
#            command: `command -v` finds it in PATH
#            python:  the python3 first in PATH (the one the tests run) can import the
#                     modules; after ":" a Python expression that must also be true
#            debpy:   the same, as Debian's /usr/bin/python3 (Graphite runs on it)
#   source   apt:     Debian package; pip: PyPI (pinned in tests/py/requirements.txt);
#            npm:     npm package (pinned in <folder>/package-lock.json, where
#                     <folder> is the part of the path before /node_modules/);
#            manual:  cannot be installed by this script
REQUIREMENTS='
# kind   | checked                                         | source | package
# Build: the etcd client (etcd-client crate) generates code with protoc, whose protos
# import the well-known types; ZeroMQ for the relay and publisher (zmq-sys finds
# libzmq with pkg-config).
command  | cargo                                           | manual | rustup (https://rustup.rs)
command  | protoc                                          | apt    | protobuf-compiler
file     | /usr/include/google/protobuf/descriptor.proto   | apt    | libprotobuf-dev
file     | /usr/include/google/protobuf/struct.proto       | apt    | libprotobuf-dev
command  | pkg-config                                      | apt    | pkg-config
file     | /usr/lib/*/pkgconfig/libzmq.pc                  | apt    | libzmq3-dev
file     | /usr/include/zmq.h                              | apt    | libzmq3-dev
# Tests and the local fleet: a real etcd and HAProxy, CPU pinning, the user data test.
command  | etcd                                            | apt    | etcd-server
command  | haproxy                                         | apt    | haproxy
command  | taskset                                         | apt    | util-linux
command  | curl                                            | apt    | curl
# Checks of deploy/systemd (systemd-analyze verify); absent in minimal containers.
command  | systemd-analyze                                 | apt    | systemd
# Python peers of the end-to-end tests, the AWS API stand-in, the template linter,
# the Prometheus text parser and the monitoring validator.
command  | python3                                         | apt    | python3
python   | pip                                             | apt    | python3-pip
python   | zmq: zmq.has("curve")                           | pip    | pyzmq
python   | websockets                                      | pip    | websockets
python   | moto.server                                     | pip    | moto[server]
python   | boto3                                           | pip    | boto3
python   | cfnlint                                         | pip    | cfn-lint
command  | cfn-lint                                        | pip    | cfn-lint
python   | prometheus_client                               | pip    | prometheus-client
python   | yaml                                            | pip    | PyYAML
python   | grafana_foundation_sdk                          | pip    | grafana-foundation-sdk
# The browser test (tests/tests/browser.rs): Debian Chromium driven by playwright-core.
command  | node                                            | apt    | nodejs
command  | npm                                             | apt    | npm
exec     | /usr/bin/chromium                               | apt    | chromium
file     | tests/browser/node_modules/playwright-core      | npm    | playwright-core
# Monitoring (monitoring/pipeline.sh, tests/tests/monitoring.rs): Etsy StatsD, and
# Graphite (carbon-cache; graphite-web served by gunicorn) on Debian own Python.
file     | monitoring/node_modules/statsd/stats.js         | npm    | statsd
exec     | /usr/bin/carbon-cache                           | apt    | graphite-carbon
file     | /usr/lib/python3/dist-packages/graphite/wsgi.py | apt    | graphite-web
exec     | /usr/bin/gunicorn                               | apt    | gunicorn
debpy    | graphite                                        | apt    | graphite-web
debpy    | carbon                                          | apt    | graphite-carbon
debpy    | whisper                                         | apt    | python3-whisper
debpy    | django                                          | apt    | python3-django
debpy    | tagging                                         | apt    | python3-django-tagging
debpy    | cairocffi                                       | apt    | python3-cairocffi
debpy    | pyparsing                                       | apt    | python3-pyparsing
debpy    | twisted                                         | apt    | python3-twisted
# Serves the Graphite UI static files (the render API works without it).
debpy    | whitenoise                                      | apt    | python3-whitenoise
'

ROOT=${PUSHFLEET_SETUP_ROOT:-}

trim() {
  local s=$1
  s=${s#"${s%%[![:space:]]*}"}
  printf '%s' "${s%"${s##*[![:space:]]}"}"
}

# Python source that imports the modules of "mod1, mod2[: condition]" and exits
# non-zero unless the condition holds.
python_code() {
  local modules=${1%%:*} condition=True
  [[ $1 == *:* ]] && condition=$(trim "${1#*:}")
  printf 'import sys\nimport %s\nsys.exit(0 if (%s) else 1)\n' "$modules" "$condition"
}

# Prints what is checked for a row, as the report shows it.
describe() {
  local kind=$1 checked=$2
  case $kind in
    file | exec) [[ $checked == /* ]] && checked=$ROOT$checked
                 printf '%s' "$checked" ;;
    command) printf 'command %s' "$checked" ;;
    python) printf 'python3: import %s' "${checked/:/;}" ;;
    debpy) printf '/usr/bin/python3: import %s' "${checked/:/;}" ;;
  esac
}

# Succeeds if the requirement of one row is met.
present() {
  local kind=$1 checked=$2 path
  case $kind in
    file | exec)
      local root=
      [[ $checked == /* ]] && root=$ROOT
      # The path may be a glob (a multiarch directory); any match will do.
      # shellcheck disable=SC2086 # $checked is split and expanded on purpose
      for path in "$root"$checked; do
        if [[ $kind == file && -e $path ]] || [[ $kind == exec && -f $path && -x $path ]]; then
          return 0
        fi
      done
      return 1 ;;
    command) command -v "$checked" >/dev/null 2>&1 ;;
    python) python3 -c "$(python_code "$checked")" >/dev/null 2>&1 ;;
    debpy) /usr/bin/python3 -c "$(python_code "$checked")" >/dev/null 2>&1 ;;
  esac
}

# Reads the table into rows_kind, rows_checked, rows_source, rows_package.
rows_kind=() rows_checked=() rows_source=() rows_package=()
while IFS='|' read -r kind checked source package; do
  kind=$(trim "$kind")
  [[ -z $kind || $kind == \#* ]] && continue
  case $kind in file | exec | command | python | debpy) ;;
    *) echo "setup: unknown requirement kind '$kind' in the table" >&2; exit 2 ;;
  esac
  rows_kind+=("$kind")
  rows_checked+=("$(trim "$checked")")
  rows_source+=("$(trim "$source")")
  rows_package+=("$(trim "$package")")
done <<<"$REQUIREMENTS"

# --- Check mode ---------------------------------------------------------------------
# Checks every row (in parallel: importing cfn-lint alone takes seconds) and prints
# one line per row in table order (with QUIET=1 only the missing ones). Sets total,
# missing and what installs them: missing_apt (packages), missing_pip (0/1) and
# missing_npm_dirs (folders to run `npm ci` in). Fails if anything is missing.
check_all() {
  local i dir what status results
  total=${#rows_kind[@]} missing=() missing_apt=() missing_pip=0 missing_npm_dirs=()
  results=$(mktemp -d)
  for i in "${!rows_kind[@]}"; do
    (
      status=0
      present "${rows_kind[i]}" "${rows_checked[i]}" || status=$?
      echo "$status" >"$results/$i"
    ) &
  done
  wait
  for i in "${!rows_kind[@]}"; do
    what="$(describe "${rows_kind[i]}" "${rows_checked[i]}") (${rows_source[i]}: ${rows_package[i]})"
    status=$(cat "$results/$i")
    if [[ $status == 0 ]]; then
      [[ ${QUIET:-0} == 1 ]] || printf '%-8s %s\n' ok "$what"
      continue
    fi
    printf '%-8s %s\n' missing "$what"
    missing+=("$what")
    case ${rows_source[i]} in
      apt) [[ " ${missing_apt[*]} " == *" ${rows_package[i]} "* ]] || missing_apt+=("${rows_package[i]}") ;;
      pip) missing_pip=1 ;;
      npm) dir=${rows_checked[i]%%/node_modules/*}
           [[ " ${missing_npm_dirs[*]} " == *" $dir "* ]] || missing_npm_dirs+=("$dir") ;;
    esac
  done
  rm -rf "$results"
  if [[ ${#missing[@]} -gt 0 ]]; then
    local list
    list=$(printf '%s; ' "${missing[@]}")
    echo "setup: ${#missing[@]} of $total requirements missing: ${list%; }" >&2
    return 1
  fi
  [[ ${QUIET:-0} == 1 ]] || echo "setup: all $total requirements present"
}

case ${1:-} in
  --check)
    check_all || exit 1
    exit 0 ;;
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

# --- Install mode -------------------------------------------------------------------
if [[ -n $ROOT ]]; then
  echo "setup: PUSHFLEET_SETUP_ROOT only applies to --check; unset it to install" >&2
  exit 2
fi

# Collect what is missing (silently: the installs below say what they do).
QUIET=1 check_all >/dev/null 2>&1 && exit 0

# Debian packages first: pip and npm below need python3-pip, nodejs and npm.
if [[ ${#missing_apt[@]} -gt 0 ]]; then
  echo "setup: apt-get install ${missing_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing_apt[@]}"
fi

if [[ $missing_pip == 1 ]]; then
  echo "setup: pip install -r tests/py/requirements.txt"
  python3 -m pip install -q --disable-pip-version-check -r tests/py/requirements.txt \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages \
      -r tests/py/requirements.txt
fi

for dir in "${missing_npm_dirs[@]}"; do
  echo "setup: npm ci in $dir"
  (cd "$dir" && npm ci --omit=optional --no-audit --no-fund --loglevel=error)
done

# An install that exits 0 without providing the file (a Recommends left out, a
# package that moved a path) is caught here rather than by a build much later.
if ! report=$(QUIET=1 check_all 2>&1); then
  printf '%s\n' "$report" >&2
  echo "setup: FAILED: the requirements above are still missing after installing" >&2
  exit 1
fi
echo "setup: installed; all ${#rows_kind[@]} requirements present (scripts/setup.sh --check lists them)"
