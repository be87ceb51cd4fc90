#!/bin/sh
# Managed by Salt (webarch): check an Apache config file before it is put in
# place.  Usage: webarch-apache-check TARGET CANDIDATE
# Copies /etc/apache2 to a scratch directory, puts CANDIDATE there as TARGET
# (enabling it if it is a site or conf), and runs apache2 -t on the copy: the
# candidate is checked together with everything else, the live config is left
# as it is.  mod_md's store (md/: every site's certificate and private key,
# megabytes on a busy host) is not copied: the copy links to the live one.
set -eu
target=$1
candidate=$2
scratch=$(mktemp -d /tmp/webarch-apache-check.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
find /etc/apache2 -mindepth 1 -maxdepth 1 ! -name md -exec cp -a -t "$scratch" {} +
if [ -e /etc/apache2/md ]; then
  ln -s /etc/apache2/md "$scratch/md"
fi
rel=${target#/etc/apache2/}
cp "$candidate" "$scratch/$rel"
case "$rel" in
  sites-available/*) ln -sfn "../$rel" "$scratch/sites-enabled/${rel#sites-available/}" ;;
  conf-available/*) ln -sfn "../$rel" "$scratch/conf-enabled/${rel#conf-available/}" ;;
esac
export APACHE_CONFDIR="$scratch"
set +u
. /etc/apache2/envvars
set -u
# Not exec: the trap must still remove the scratch copy afterwards.
/usr/sbin/apache2 -d "$scratch" -f "$scratch/apache2.conf" -t
