#!/usr/bin/env bash
# System packages the node agent's runtimes need, installed only when missing. Idempotent,
# quiet when all is there.
#
#   scripts/system-deps.sh runtime   bubblewrap (the "sandbox" runtime)
#   scripts/system-deps.sh test      also docker.io and busybox-static, and a running dockerd
#                                    (log: /tmp/agenthub-dockerd.log) for the runtime tests
#
# Installs with apt-get when run as root on a Debian-like system; anywhere else it says what
# to install and exits 0, so that the caller can go on without the optional runtimes.
set -uo pipefail

mode="${1:-runtime}"
case "$mode" in
  runtime | test) ;;
  *) echo "usage: $0 runtime|test" >&2; exit 2 ;;
esac

DOCKERD_LOG=/tmp/agenthub-dockerd.log
APT_LOG=/tmp/agenthub-apt.log

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

# apt_install PACKAGE...: install, refreshing the package lists only if the first try fails
# (an image's lists may be stale or missing). Output goes to a log, shown only on failure.
apt_install() {
  if ! can_apt; then
    echo "agenthub: please install: $* (apt-get install $*)" >&2
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  if apt-get install -y -q "$@" >"$APT_LOG" 2>&1; then return 0; fi
  if apt-get update -q >>"$APT_LOG" 2>&1 && apt-get install -y -q "$@" >>"$APT_LOG" 2>&1; then
    return 0
  fi
  echo "agenthub: could not install $* (log: $APT_LOG):" >&2
  tail -n 20 "$APT_LOG" >&2
  return 0
}

busybox_is_static() {
  local bin
  bin="$(command -v busybox)" || return 1
  # The images the tests import contain nothing but this binary, so it must not need libc.
  ! ldd "$bin" >/dev/null 2>&1
}

docker_works() { timeout 10 docker info >/dev/null 2>&1; }

# start_dockerd FLAG...: start dockerd in the background; succeed once `docker info` answers,
# fail as soon as dockerd exits (wrong flags for this host) or after 30 s.
start_dockerd() {
  echo "== $(date -Is) dockerd $*" >>"$DOCKERD_LOG"
  setsid nohup dockerd "$@" >>"$DOCKERD_LOG" 2>&1 </dev/null &
  local pid=$! waited=0
  while [ "$waited" -lt 60 ]; do
    if docker_works; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.5
    waited=$((waited + 1))
  done
  kill "$pid" 2>/dev/null
  return 1
}

ensure_dockerd() {
  if docker_works; then return 0; fi
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    return 0  # not installable here; apt_install said so
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "agenthub: the Docker engine is not running; start it (e.g. sudo dockerd &)" >&2
    return 0
  fi
  # Plain flags work on an ordinary host. Inside a container or VM without iptables, or
  # where overlayfs cannot stack on the root filesystem, dockerd exits at once with the
  # defaults; each fallback gives up one of those features.
  start_dockerd && return 0
  start_dockerd --iptables=false --ip6tables=false && return 0
  start_dockerd --iptables=false --ip6tables=false --storage-driver=vfs && return 0
  echo "agenthub: dockerd did not start (log: $DOCKERD_LOG):" >&2
  tail -n 20 "$DOCKERD_LOG" >&2
  return 0
}

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if [ "$mode" = test ]; then
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  busybox_is_static || missing+=(busybox-static)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi
if [ "$mode" = test ]; then
  ensure_dockerd
fi
exit 0
