#!/bin/sh
# Managed by Salt (webarch): do not edit by hand.
# Each account's disk quota into its ~/logs/quota.txt (root's file, readable
# by the account's group): the account reads it from its chroot, where neither
# quotactl nor btrfs's ioctls can reach the file system.  quota(1)'s report
# where the homes have user quotas (ext4, XFS); on btrfs, the home's qgroup
# (btrfs qgroup show).  Run by webarch-quota-report.service (its timer, and
# the state run that sets limits).
#
# Usage: webarch-quota-report ACCOUNT:HOME...
set -u

# btrfs: the qgroup of the home (a subvolume): space used and its hard limit.
btrfs_report() {
    account=$1 home=$2
    root=$(btrfs inspect-internal rootid "$home") || return 1
    if [ "$root" = 5 ]; then
        printf 'Disk quota of %s: none, %s is not a btrfs subvolume\n' "$account" "$home"
        return 0
    fi
    line=$(btrfs qgroup show --raw -re -f "$home" | awk -v id="0/$root" '$1 == id')
    [ -n "$line" ] || { echo "no qgroup 0/$root of $home"; return 1; }
    # shellcheck disable=SC2086 # the line's fields: qgroup referenced exclusive max_rfer max_excl
    set -- $line
    used=$2 limit=$4
    printf 'Disk quota of %s: %s, btrfs subvolume (qgroup %s)\n' "$account" "$home" "$1"
    if [ "$limit" = none ]; then
        printf 'space used %s (%s bytes), no limit\n' "$(numfmt --to=iec "$used")" "$used"
    else
        printf 'space used %s of %s (%s of %s bytes, %s%%)\n' \
            "$(numfmt --to=iec "$used")" "$(numfmt --to=iec "$limit")" \
            "$used" "$limit" "$((used * 100 / limit))"
    fi
    echo 'btrfs limits space only: no limit of the number of files, no soft limit or grace.'
}

status=0
for pair in "$@"; do
    account=${pair%%:*}
    home=${pair#*:}
    logs=$home/logs
    [ -d "$logs" ] || continue
    tmp=$(mktemp "$logs/.quota.txt.XXXXXX") || { status=1; continue; }
    {
        printf '# Disk quota of %s at %s (refreshed every 10 minutes)\n' \
            "$account" "$(date -u '+%Y-%m-%d %H:%M UTC')"
        if [ "$(stat -f -c %T "$home")" = btrfs ]; then
            btrfs_report "$account" "$home" 2>&1
        else
            # quota exits 1 when the account is over a limit: the report is still right.
            quota -u -v -s -w "$account" 2>&1
        fi
    } >"$tmp"
    if chgrp "$account" "$tmp" && chmod 0640 "$tmp" && mv -f "$tmp" "$logs/quota.txt"; then
        :
    else
        rm -f "$tmp"
        status=1
    fi
done
exit $status
