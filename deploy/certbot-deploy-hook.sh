#!/bin/sh
# certbot deploy hook for ntsd.
#
# Install:
#   install -m 0755 certbot-deploy-hook.sh /etc/letsencrypt/renewal-hooks/deploy/ntsd
# certbot runs every script in that directory after each successful issuance or renewal, with
# RENEWED_LINEAGE=/etc/letsencrypt/live/<certificate name>. Run it once by hand after the first issuance:
#   RENEWED_LINEAGE=/etc/letsencrypt/live/nts.example.org /etc/letsencrypt/renewal-hooks/deploy/ntsd
#
# It copies the new chain and key into /etc/ntsd atomically (temporary file in the same directory, then
# rename over the old one, so ntsd never reads a half-written file), owned by the ntsd user, the key
# readable only by it, then asks ntsd to reload (SIGHUP). ntsd validates the pair before swapping and
# keeps serving the old one if the new pair is bad. Without this hook ntsd still notices changed files
# within certificate-reload-interval-s, but it cannot read certbot's root-only copies.
#
# Overrides (environment): NTSD_CERT_DIR (default /etc/ntsd), NTSD_USER (default ntsd), NTSD_GROUP
# (default: same as NTSD_USER), NTSD_RELOAD.
#
# Which certificates (the directory names under /etc/letsencrypt/live), set below or in the environment:
# - neither set: every renewal is installed as /etc/ntsd/fullchain.pem + privkey.pem (one certificate).
# - NTSD_CERT_NAME=nts.example.org: only that certificate, as /etc/ntsd/fullchain.pem + privkey.pem; the
#   renewals of other certificates on this host are ignored.
# - NTSD_CERT_NAMES="time.example.org nts.example.org": several certificates on one KE listener
#   (docs/install.md "Several certificates on one listener"). Each listed one is installed as /etc/ntsd/<name>/fullchain.pem +
#   privkey.pem, the paths its [[nts-ke-server.certificate]] table names; others are ignored. ntsd reloads
#   each pair on its own, so a renewal of one name never disturbs the others.
set -eu

NTSD_CERT_NAME=${NTSD_CERT_NAME:-}
NTSD_CERT_NAMES=${NTSD_CERT_NAMES:-}
DEST=${NTSD_CERT_DIR:-/etc/ntsd}
OWNER=${NTSD_USER:-ntsd}
GROUP=${NTSD_GROUP:-$OWNER}
# 0 = copy only, no reload (tests; ntsd then picks the files up within certificate-reload-interval-s).
RELOAD=${NTSD_RELOAD:-1}

: "${RENEWED_LINEAGE:?certbot sets RENEWED_LINEAGE to /etc/letsencrypt/live/<name>}"

LINEAGE_NAME=$(basename "$RENEWED_LINEAGE")
if [ -n "$NTSD_CERT_NAMES" ]; then
  listed=0
  for name in $NTSD_CERT_NAMES; do
    if [ "$name" = "$LINEAGE_NAME" ]; then listed=1; fi
  done
  if [ "$listed" = 0 ]; then
    exit 0
  fi
  # One directory per certificate name.
  DEST="$DEST/$LINEAGE_NAME"
elif [ -n "$NTSD_CERT_NAME" ] && [ "$LINEAGE_NAME" != "$NTSD_CERT_NAME" ]; then
  exit 0
fi

for f in fullchain.pem privkey.pem; do
  if [ ! -s "$RENEWED_LINEAGE/$f" ]; then
    echo "ntsd deploy hook: $RENEWED_LINEAGE/$f is missing or empty" >&2
    exit 1
  fi
done

if [ ! -d "$DEST" ]; then
  mkdir -p "$DEST"
  chmod 0755 "$DEST"
fi

TMP=''
cleanup() {
  if [ -n "$TMP" ] && [ -e "$TMP" ]; then rm -f "$TMP"; fi
}
trap cleanup EXIT

# install_atomic SRC DST MODE: copy SRC to DST through a temporary file in DST's directory.
install_atomic() {
  TMP=$(mktemp "$DEST/.ntsd-cert.XXXXXX")
  # mktemp creates the file 0600 and root-owned: the key is never readable by others, not even briefly.
  cat "$1" > "$TMP"
  chown "$OWNER:$GROUP" "$TMP"
  chmod "$3" "$TMP"
  # Flush the data before the rename makes it visible (coreutils sync FILE; best effort elsewhere).
  sync "$TMP" 2>/dev/null || sync
  mv -f "$TMP" "$2"
  TMP=''
}

# Key first, then chain: if ntsd's poll catches the pair in between, the mismatch is rejected and the
# old pair keeps serving until the reload below (or the next poll) sees both new files.
install_atomic "$RENEWED_LINEAGE/privkey.pem" "$DEST/privkey.pem" 0600
install_atomic "$RENEWED_LINEAGE/fullchain.pem" "$DEST/fullchain.pem" 0644

if [ "$RELOAD" != 0 ] && command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ntsd 2>/dev/null; then
  systemctl reload ntsd
fi
echo "ntsd deploy hook: installed $RENEWED_LINEAGE into $DEST"
