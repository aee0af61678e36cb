#!/bin/sh
# Copies the key file of a `[keyset] mode = "local"` ntsd (the writer) to the nodes that follow it
# (`mode = "follow"`), for a cron job or systemd timer on the writer. Run it at least a few times per
# rotation interval: the file carries the next key, so a copy may lag by up to one interval.
#
# Each copy lands atomically (rsync writes a temporary file and renames it), keeps mode 0600, and the
# follower picks it up by itself within follow-poll-interval-s (or at once on `systemctl reload ntsd`).
# A follower refuses a file that is corrupt or older than the one it serves, and keeps its old keys.
#
#   NTSD_KEYSET    the writer's key-storage-path (default /var/lib/ntsd/keyset)
#   NTSD_FOLLOWERS space-separated ssh destinations, e.g. "ntsd@ntp1.example.org ntsd@ntp2.example.org"
#   NTSD_REMOTE    the followers' key-storage-path (default: the same path)
set -eu

keyset=${NTSD_KEYSET:-/var/lib/ntsd/keyset}
remote=${NTSD_REMOTE:-$keyset}
followers=${NTSD_FOLLOWERS:?set NTSD_FOLLOWERS to the ssh destinations of the follower nodes}

[ -r "$keyset" ] || { echo "ntsd-keyset-copy: cannot read $keyset" >&2; exit 1; }
status=0
for dest in $followers; do
  if ! rsync --chmod=F600 --perms --times --delay-updates "$keyset" "$dest:$remote"; then
    echo "ntsd-keyset-copy: copy to $dest failed" >&2
    status=1
  fi
done
exit "$status"
