#!/usr/bin/env bash
# The Debian packages `make TARGET` needs, installed when missing: the one place that knows them.
#   tools/system.sh book   nothing beyond Python's venv
#   tools/system.sh grade  bubblewrap: every submission runs in a sandbox
#   tools/system.sh test   grade's, plus Chromium and its driver (the browser test reads the built
#                          book), emoji and CJK fonts (the build report's marks and the glossary's
#                          Chinese terms in the screenshots), and PostgreSQL started with the role
#                          the gradebook tests use
# As root it installs what is missing; as another user it stops with the command to run.
set -euo pipefail
target=${1:?usage: tools/system.sh book|grade|test}

missing=()
need() {  # need PACKAGE CHECK...: PACKAGE is missing unless CHECK succeeds
  local package=$1
  shift
  "$@" >/dev/null 2>&1 || missing+=("$package")
}
font() { [[ $(fc-list : family) == *"$1"* ]]; }

need python3-venv python3 -c "import ensurepip, venv"
case $target in
  book) ;;
  grade) need bubblewrap command -v bwrap ;;
  test)
    need bubblewrap command -v bwrap
    need chromium test -x /usr/bin/chromium
    need chromium-driver test -x /usr/bin/chromedriver
    need fontconfig command -v fc-list
    need fonts-noto-color-emoji font "Noto Color Emoji"
    need fonts-noto-cjk font "Noto Sans CJK"
    need postgresql command -v pg_ctlcluster
    ;;
  *) echo "tools/system.sh: unknown target '$target' (book, grade or test)" >&2; exit 2 ;;
esac

if ((${#missing[@]})); then
  if ((EUID != 0)); then
    echo "make $target needs Debian packages that are missing; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "make $target: installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
fi

# The gradebook tests' server: DLBB_POSTGRES_URL names another one, else the local cluster
# with role dlbb (tests/test_bookkeeping.py).
if [[ $target == test && -z ${DLBB_POSTGRES_URL:-} ]]; then
  reachable() { PGPASSWORD=dlbb psql -h 127.0.0.1 -U dlbb -d postgres -tAc "SELECT 1" >/dev/null 2>&1; }
  if ! reachable; then
    if ((EUID != 0)); then
      echo "make test needs PostgreSQL on 127.0.0.1:5432 with role dlbb (password dlbb); run: sudo tools/system.sh test" >&2
      exit 1
    fi
    read -r version cluster _ < <(pg_lsclusters --no-header)
    pg_ctlcluster "$version" "$cluster" start 2>/dev/null || true  # already running is fine
    su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname = 'dlbb'\"" | grep -q 1 ||
      su postgres -c "psql -qc \"CREATE ROLE dlbb LOGIN PASSWORD 'dlbb' CREATEDB\""
    reachable || { echo "make test: PostgreSQL still not reachable as dlbb on 127.0.0.1:5432" >&2; exit 1; }
  fi
fi
