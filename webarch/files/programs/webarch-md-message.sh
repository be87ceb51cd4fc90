#!/bin/sh
# Managed by Salt (webarch): mod_md's MDMessageCmd (REASON DOMAIN).
# Only "renewed" (a new certificate is staged); "installed" follows the
# reload that activated it and must not start another one.
case "$1" in
  renewed) touch /var/lib/webarch-md/renewed ;;
esac
exit 0
