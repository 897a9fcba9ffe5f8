#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests of the HTML report (tests/browser.py, used by test_workflow.py and
# test_sequence_workflow.py), when missing.
#
# Idempotent: apt-get runs only when /usr/bin/chromium (or $CHROMIUM) is absent. Prints one line per thing it
# did, then the path of the browser. Needs root (or sudo). Playwright (requirements.lock) drives it: Playwright's
# own browser download (`playwright install`) needs a host this project's machines cannot reach.
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
say() { echo "chromium-up: $*" >&2; }
die() { echo "chromium-up: ERROR: $*" >&2; exit 1; }

if [ -x "$CHROMIUM" ]; then
    say "already installed ($("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"))"
else
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "must run as root (or with sudo) to install chromium; or set CHROMIUM=/path/to/chromium"
        SUDO="sudo"
    fi
    command -v apt-get >/dev/null || die "no apt-get: install Chromium with your package manager and set CHROMIUM=/path/to/it"
    say "installing Debian's chromium"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
        || die "apt-get install chromium failed"
    [ -x "$CHROMIUM" ] || die "apt-get installed chromium, but $CHROMIUM is not there"
    say "installed ($("$CHROMIUM" --version 2>/dev/null))"
fi
echo "$CHROMIUM"
