#!/usr/bin/env bash
# Sourced by serve.sh and test.sh: `need COMMAND[:PACKAGE] ...` installs (apt) the Debian
# package of every command that is missing, in one apt run.
need() {
  local missing=() spec cmd pkg
  for spec in "$@"; do
    cmd="${spec%%:*}"
    pkg="${spec#*:}"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "missing: ${missing[*]}; install them (apt-get install ${missing[*]}) as root" >&2
      return 1
    fi
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null 2>&1 || { echo "still missing: ${spec%%:*}" >&2; return 1; }
  done
}
