#!/usr/bin/env bash
# Installs nginx from Debian's packages when it is missing (test/proxy.test.ts runs
# deploy/nginx.conf in front of two instances). The test set-up and .ci/run both call this.
# The packaged service must not start on port 80, so a policy-rc.d that denies every start is in
# place during the install (Docker images ship one already; one created here is removed after).
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then exit 0; fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
policy_created=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null && $sudo chmod 755 /usr/sbin/policy-rc.d && policy_created=1
fi
install_ok=1
{ $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; } || install_ok=""
[ -z "$policy_created" ] || $sudo rm -f /usr/sbin/policy-rc.d
if [ -z "$install_ok" ]; then
  echo "could not install nginx (apt-get install nginx-light); test/proxy.test.ts needs it" >&2
  exit 1
fi
