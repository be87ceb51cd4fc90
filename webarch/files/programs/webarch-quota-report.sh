#!/bin/sh
# Managed by Salt (webarch): do not edit by hand.
# Each account's disk quota, as quota(1) shows it, into its ~/logs/quota.txt
# (root's file, readable by the account's group): the account reads it from
# its chroot, where quotactl cannot reach the file system's device.  Run by
# webarch-quota-report.service (its timer, and the state run that sets limits).
#
# Usage: webarch-quota-report ACCOUNT:HOME...
set -u
status=0
for pair in "$@"; do
    account=${pair%%:*}
    logs=${pair#*:}/logs
    [ -d "$logs" ] || continue
    tmp=$(mktemp "$logs/.quota.txt.XXXXXX") || { status=1; continue; }
    {
        printf '# Disk quota of %s at %s (refreshed every 10 minutes)\n' \
            "$account" "$(date -u '+%Y-%m-%d %H:%M UTC')"
        # quota exits 1 when the account is over a limit: the report is still right.
        quota -u -v -s -w "$account" 2>&1
    } >"$tmp"
    if chgrp "$account" "$tmp" && chmod 0640 "$tmp" && mv -f "$tmp" "$logs/quota.txt"; then
        :
    else
        rm -f "$tmp"
        status=1
    fi
done
exit $status
