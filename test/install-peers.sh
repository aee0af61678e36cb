#!/usr/bin/env bash
# Installs the real NTS peers the interop tests run against, if they are missing:
# Debian's chrony (client and server) and NTPsec, unpacked because it conflicts with chrony as a package
# (see ../shared/PEERS.md), plus gcc for the NTPsec port shim and the nts.test name for the test certificates,
# and Debian's prometheus (prometheus + promtool) for the monitoring-kit tests (test/monitoring/),
# and Debian's haproxy (an L4 balancer sending PROXY protocol v2) for the fleet test (test/interop/fleet-chrony.test.ts),
# and Debian 13's chrony 4.6.1 in a debootstrap root outside the clone (TRIXIE_ROOT, default /var/tmp/trixie-root;
# about 300 MB, built once and reused) for test/interop/chrony46.test.ts.
# Needs root and apt-get; otherwise it says what is missing and exits non-zero.
# Called by .ci/run and, when a peer is missing, by `npm test` (test/run-tests.mjs).
set -euo pipefail

run() { printf '+ %s\n' "$*"; "$@"; }
NTPSEC_NTPD=/opt/ntpsec-root/usr/sbin/ntpd
TRIXIE_ROOT=${NTSD_TRIXIE_ROOT:-/var/tmp/trixie-root}

need_apt=0
command -v chronyd >/dev/null 2>&1 || [ -x /usr/sbin/chronyd ] || need_apt=1
command -v gcc >/dev/null 2>&1 || need_apt=1
command -v setpriv >/dev/null 2>&1 || need_apt=1
[ -x "$NTPSEC_NTPD" ] || need_apt=1
need_prometheus=0
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || { need_prometheus=1; need_apt=1; }
need_haproxy=0
{ command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; } || { need_haproxy=1; need_apt=1; }
need_trixie=0
[ -x "$TRIXIE_ROOT/usr/sbin/chronyd" ] || { need_trixie=1; need_apt=1; }

if [ "$need_apt" -eq 1 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-peers: chrony, gcc, setpriv, prometheus/promtool, haproxy, NTPsec ($NTPSEC_NTPD) or chrony 4.6.1 ($TRIXIE_ROOT) missing, and this is not root with apt-get." >&2
    echo "install-peers: install them as PEERS.md shows; the interop tests need them." >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  run apt-get update -qq
  run apt-get install -y -qq --no-install-recommends chrony gcc libc6-dev util-linux python3-ntp libbsd0 libssl3 openssl >/dev/null
  if [ "$need_prometheus" -eq 1 ] || [ "$need_haproxy" -eq 1 ]; then
    # The packages would start services (Prometheus on :9090, HAProxy on its default config); the tests
    # start their own on free ports. A policy-rc.d that says "no" keeps the maintainer scripts from
    # starting them (Docker images ship one).
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1; fi
    [ "$need_prometheus" -eq 0 ] || run apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    [ "$need_haproxy" -eq 0 ] || run apt-get install -y -qq --no-install-recommends haproxy >/dev/null
    [ "$made_policy" -eq 0 ] || rm -f /usr/sbin/policy-rc.d
  fi
  if [ ! -x "$NTPSEC_NTPD" ]; then
    debs=$(mktemp -d)
    chmod 777 "$debs"   # apt-get download runs as the _apt user
    (cd "$debs" && run apt-get download ntpsec)
    run dpkg -x "$debs"/ntpsec_*.deb /opt/ntpsec-root
    rm -rf "$debs"
  fi
  if [ "$need_trixie" -eq 1 ]; then
    run apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    # A half-built root from an interrupted run is started over.
    rm -rf "$TRIXIE_ROOT"
    run debootstrap --variant=minbase --include=chrony,ca-certificates trixie "$TRIXIE_ROOT" >/dev/null
  fi
fi

# The interop peers verify the server name; nts.test is the test certificates' DNS name.
if ! grep -qE '^127\.0\.0\.1[[:space:]].*\bnts\.test\b' /etc/hosts 2>/dev/null; then
  if [ -w /etc/hosts ]; then echo '127.0.0.1 nts.test' >> /etc/hosts; else echo "install-peers: add '127.0.0.1 nts.test' to /etc/hosts" >&2; exit 1; fi
fi
