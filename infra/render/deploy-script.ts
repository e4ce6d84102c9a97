/**
 * The deploy step run on a relay host (as root) after the bundle and the config
 * were copied to a staging directory: the same script whether Pulumi runs it over
 * SSH or a customer runs it after editing the config.
 *
 * Contract, in order; any failure stops it and leaves the running relay as it was:
 * 1. the release directory /opt/ownrelay/releases/<version>/ gets the bundle (0755);
 * 2. the new config is checked by the new bundle itself (`ownrelay.js check-config`);
 * 3. the config is installed atomically (rename), the old one kept as .previous;
 * 4. /opt/ownrelay/current switches to the release atomically (rename of a symlink),
 *    the release it pointed to is recorded in /opt/ownrelay/previous;
 * 5. the relay is restarted; if it does not come back, config and release are
 *    switched back and the relay restarted on them.
 * The previous release is kept for `rollback`; older ones beyond KEEP_RELEASES go.
 *
 * Every path is under a root directory (`/` on a server), so tests run the very
 * same script on a scratch directory with a stand-in restart command.
 */

import { createHash } from 'node:crypto';

export const KEEP_RELEASES = 3;

/** Where the deploy leaves the script on the host, for the customer's own redeploys and rollbacks. */
export const REMOTE_DEPLOY_SCRIPT_PATH = '/usr/local/sbin/ownrelay-deploy';

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A release's version: the first 16 hex digits of the bundle's SHA-256. */
export function releaseVersion(bundle: Buffer): string {
  return sha256Hex(bundle).slice(0, 16);
}

/**
 * The staging directory (relative to the admin user's home: SFTP and commands
 * start there, not in a shared /tmp), named after bundle, config and script.
 */
export function stagingDirName(version: string, configHash: string, scriptHash: string): string {
  return `ownrelay-staging-${sha256Hex(`${version}:${configHash}:${scriptHash}`).slice(0, 16)}`;
}

/**
 * The two remote commands of a deploy, run as the admin user over SSH: `prepare`
 * before the bundle (ownrelay.js), config (ownrelay.yaml) and script
 * (ownrelay-deploy) are copied into the staging directory, `run` after.
 */
export function remoteDeployCommands(staging: string, version: string): { prepare: string; run: string } {
  return {
    prepare: `install -d -m 0700 ${staging}`,
    run: `sudo install -m 0750 ${staging}/ownrelay-deploy ${REMOTE_DEPLOY_SCRIPT_PATH} && sudo ${REMOTE_DEPLOY_SCRIPT_PATH} deploy ${staging} ${version} && rm -rf ${staging}`,
  };
}

export interface DeployScriptOptions {
  /** filesystem root; `/` on a server */
  root?: string;
  /** restarts the relay and fails if it does not come back */
  restartCommand?: string;
}

const DEFAULT_RESTART = 'systemctl restart ownrelay.service && sleep 2 && systemctl is-active --quiet ownrelay.service';

/** A POSIX sh script: `deploy <staging-dir> <version>` or `rollback`. */
export function renderDeployScript(options: DeployScriptOptions = {}): string {
  const root = (options.root ?? '/').replace(/\/+$/, '');
  const restart = options.restartCommand ?? DEFAULT_RESTART;
  return `#!/bin/sh
# ownrelay deploy: rendered by infra/render/deploy-script.ts
#   deploy <staging-dir> <version>   staging-dir holds ownrelay.js and ownrelay.yaml
#   rollback                         back to the previous release and config
set -eu
umask 027
BASE='${root}/opt/ownrelay'
CONFIG='${root}/etc/ownrelay/ownrelay.yaml'

fail() { echo "ownrelay-deploy: $*" >&2; exit 1; }
restart() { ${restart}; }

switch_to() { # <release dir>
  ln -sfn "$1" "$BASE/current.new"
  mv -T "$BASE/current.new" "$BASE/current"
}

deploy() {
  staging=$1; version=$2
  case "$version" in *[!A-Za-z0-9._-]*|'') fail "bad version: $version";; esac
  [ -f "$staging/ownrelay.js" ] || fail "no ownrelay.js in $staging"
  [ -f "$staging/ownrelay.yaml" ] || fail "no ownrelay.yaml in $staging"
  release="$BASE/releases/$version"
  [ -d "$(dirname "$CONFIG")" ] || { mkdir -p "$(dirname "$CONFIG")"; chmod 0755 "$(dirname "$CONFIG")"; }
  mkdir -p "$BASE/releases"
  # the relay's user runs the bundle: umask 027 alone would leave these directories to root
  chmod 0755 "$BASE" "$BASE/releases"
  if [ ! -f "$release/ownrelay.js" ]; then
    rm -rf "$release.tmp"
    mkdir -p "$release.tmp"
    chmod 0755 "$release.tmp"
    cp "$staging/ownrelay.js" "$release.tmp/ownrelay.js"
    chmod 0755 "$release.tmp/ownrelay.js"
    mv -T "$release.tmp" "$release"
  fi
  # the new release judges the new config; a refusal changes nothing
  "$release/ownrelay.js" check-config "$staging/ownrelay.yaml" || fail "the new config is invalid; nothing was changed"
  old_release=$(readlink "$BASE/current" 2>/dev/null || true)
  if [ -f "$CONFIG" ]; then cp -p "$CONFIG" "$CONFIG.previous"; fi
  cp "$staging/ownrelay.yaml" "$CONFIG.new"
  chmod 0640 "$CONFIG.new"
  chgrp ownrelay "$CONFIG.new" 2>/dev/null || true
  mv -f "$CONFIG.new" "$CONFIG"
  switch_to "$release"
  if [ -n "$old_release" ] && [ "$old_release" != "$release" ]; then echo "$old_release" > "$BASE/previous"; fi
  if ! restart; then
    echo "ownrelay-deploy: the relay did not start on release $version; switching back" >&2
    if [ -f "$CONFIG.previous" ]; then cp -p "$CONFIG.previous" "$CONFIG"; fi
    if [ -n "$old_release" ]; then switch_to "$old_release"; fi
    restart || true
    exit 1
  fi
  prune
  echo "ownrelay-deploy: running release $version"
}

rollback() {
  [ -f "$BASE/previous" ] || fail "no previous release recorded"
  previous=$(cat "$BASE/previous")
  [ -f "$previous/ownrelay.js" ] || fail "previous release $previous is gone"
  if [ -f "$CONFIG.previous" ]; then
    "$previous/ownrelay.js" check-config "$CONFIG.previous" || fail "the previous config is invalid for the previous release"
    cp -p "$CONFIG" "$CONFIG.rolled-back" 2>/dev/null || true
    cp -p "$CONFIG.previous" "$CONFIG"
  fi
  current=$(readlink "$BASE/current")
  switch_to "$previous"
  echo "$current" > "$BASE/previous"
  restart || fail "the relay did not start on the previous release"
  echo "ownrelay-deploy: rolled back to $previous"
}

prune() { # keep the current, the previous and the newest others up to ${KEEP_RELEASES}
  keep_current=$(readlink "$BASE/current" 2>/dev/null || true)
  keep_previous=$(cat "$BASE/previous" 2>/dev/null || true)
  ls -1t "$BASE/releases" | tail -n +$((${KEEP_RELEASES} + 1)) | while read -r name; do
    dir="$BASE/releases/$name"
    [ "$dir" = "$keep_current" ] || [ "$dir" = "$keep_previous" ] || rm -rf "$dir"
  done
}

case "\${1:-}" in
  deploy) [ $# -eq 3 ] || fail "usage: $0 deploy <staging-dir> <version>"; deploy "$2" "$3";;
  rollback) rollback;;
  *) fail "usage: $0 deploy <staging-dir> <version> | rollback";;
esac
`;
}
