#!/bin/sh
# Managed by Salt (webarch): check one PHP-FPM pool file before it is put in
# place.  Usage: webarch-fpm-check PHP_VERSION CANDIDATE_FILE
# The pool is tested alone, in a throw-away main config, so that a bad pool is
# refused without looking at (or taking down) the other pools.
set -eu
version=$1
candidate=$2
main=$(mktemp /tmp/webarch-fpm-check.XXXXXX)
trap 'rm -f "$main"' EXIT
printf '[global]\npid = %s.pid\nerror_log = /dev/null\ninclude = %s\n' "$main" "$candidate" > "$main"
# Not exec: the trap must still remove the scratch file afterwards.
"/usr/sbin/php-fpm$version" --test --fpm-config "$main"
