#!/bin/sh
# certbot deploy hook for ntsd.
# Install: cp certbot-deploy-hook.sh /etc/letsencrypt/renewal-hooks/deploy/ntsd && chmod 755 it.
# certbot runs it after every successful renewal with RENEWED_LINEAGE=/etc/letsencrypt/live/<name>.
# It copies the new chain and key into /etc/ntsd atomically (write a temp file, then rename over the
# old one), owned by the ntsd user and readable only by it, then asks ntsd to reload (SIGHUP).
# ntsd validates the pair before swapping and keeps serving the old one if the new pair is bad.
# Without this hook ntsd still notices changed files within certificate-reload-interval-s.
set -eu

: "${RENEWED_LINEAGE:?certbot sets RENEWED_LINEAGE}"
DEST=${NTSD_CERT_DIR:-/etc/ntsd}
OWNER=${NTSD_USER:-ntsd}

install_atomic() {
  src=$1 dst=$2 mode=$3
  tmp=$(mktemp "$DEST/.ntsd-cert.XXXXXX")
  cat "$src" > "$tmp"
  chown "$OWNER:$OWNER" "$tmp"
  chmod "$mode" "$tmp"
  sync "$tmp" 2>/dev/null || true
  mv -f "$tmp" "$dst"
}

# Key first, then chain: the daemon validates them as a pair and retries on the next poll if it
# catches the two files mid-update.
install_atomic "$RENEWED_LINEAGE/privkey.pem" "$DEST/privkey.pem" 0600
install_atomic "$RENEWED_LINEAGE/fullchain.pem" "$DEST/fullchain.pem" 0644

if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ntsd; then
  systemctl reload ntsd
fi
