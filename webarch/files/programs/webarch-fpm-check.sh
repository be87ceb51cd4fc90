#!/bin/sh
# Managed by Salt (webarch): check an account's PHP-FPM configuration (its
# [global] section and its pool) before it is put in place.
# Usage: webarch-fpm-check PHP_VERSION CANDIDATE_FILE
# Each account has its own master and file, so a bad file is refused without
# looking at (or taking down) the other accounts' pools.
set -eu
version=$1
candidate=$2
exec "/usr/sbin/php-fpm$version" --test --fpm-config "$candidate"
