#!/bin/bash
# Managed by Salt (webarch): do not edit by hand.
#
# Usage: webarch-db-dump RETENTION_DAYS
#
# Dumps every database listed in /etc/webarch/db-dumps (lines "ACCOUNT DATABASE")
# into /home/ACCOUNT/backups/mariadb/DATABASE-YYYYmmddTHHMMSSZ.sql.gz, root:ACCOUNT
# 0640: the account reads its dumps inside its chroot but cannot change or delete
# them, and no other account can read them.  A dump is put in place only when it
# is whole (gzip -t) and ends with "-- Dump completed"; only then are the dumps
# of that database older than RETENTION_DAYS deleted.  Run by
# webarch-db-dump.service (webarch-db-dump.timer, nightly).
set -u -o pipefail
umask 077
map=/etc/webarch/db-dumps
days=${1:?usage: webarch-db-dump RETENTION_DAYS}
case "$days" in '' | *[!0-9]*) echo "webarch-db-dump: bad RETENTION_DAYS $days" >&2; exit 2 ;; esac
stamp=$(date -u +%Y%m%dT%H%M%SZ)
status=0

root_dir() {
  # A directory of root's that is no symlink: nothing an account could redirect.
  [ -d "$1" ] && [ ! -L "$1" ] && [ "$(stat -c %u "$1")" = 0 ]
}

while read -r user db _; do
  case "$user" in '' | '#'*) continue ;; esac
  home=/home/$user
  dir=$home/backups/mariadb
  if ! root_dir "$home" || ! root_dir "$home/backups" || ! root_dir "$dir"; then
    echo "webarch-db-dump: $dir is not a directory of root's; $db not dumped" >&2
    status=1
    continue
  fi
  exists=$(mariadb --batch --skip-column-names -e \
    "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '$db'") || exists=0
  if [ "$exists" != 1 ]; then
    echo "webarch-db-dump: database $db of $user does not exist; not dumped" >&2
    status=1
    continue
  fi
  out=$dir/$db-$stamp.sql.gz
  tmp=$dir/.$db-$stamp.partial
  if mariadb-dump --single-transaction --routines --events --triggers --hex-blob \
    --default-character-set=utf8mb4 "$db" | gzip >"$tmp" &&
    gzip -t "$tmp" &&
    [ "$(zcat "$tmp" | tail -n 1 | cut -c 1-17)" = "-- Dump completed" ]; then
    # Older dumps go only once the new one is in place.
    if chown "root:$user" "$tmp" && chmod 0640 "$tmp" && mv -f "$tmp" "$out"; then
      find "$dir" -maxdepth 1 -type f -name "$db-*.sql.gz" -mmin +$((days * 1440)) -delete
      echo "webarch-db-dump: $db of $user dumped to $out"
    else
      rm -f "$tmp"
      echo "webarch-db-dump: dump of $db of $user not put in place; older dumps kept" >&2
      status=1
    fi
  else
    rm -f "$tmp"
    echo "webarch-db-dump: dump of $db of $user failed; older dumps kept" >&2
    status=1
  fi
done <"$map"
exit "$status"
