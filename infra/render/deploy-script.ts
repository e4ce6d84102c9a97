/**
 * The deploy step run on a relay host (as root) after the bundle, the config and
 * the DKIM keys were copied to a staging directory: the same script whether Pulumi
 * runs it over SSH or a customer runs it after editing the config.
 *
 * Contract, in order; any failure stops it and leaves the running relay as it was:
 * 1. the release directory /opt/ownrelay/releases/<version>/ gets the bundle (0755);
 * 2. the new config is checked by the new bundle itself (`ownrelay.js check-config`),
 *    and every staged DKIM key (staging/dkim/*.pem) must be a private key the relay
 *    signs with (RSA of 2048 bits or more, or Ed25519);
 * 3. the config is installed atomically (rename), the old one kept as .previous;
 *    the keys go to /etc/ownrelay/dkim/ (0640 root:ownrelay, each renamed into
 *    place), the directory as it was kept as dkim.previous;
 * 4. /opt/ownrelay/current switches to the release atomically (rename of a symlink),
 *    the release it pointed to is recorded in /opt/ownrelay/previous, and
 *    /usr/local/bin/ownrelay points at the current bundle (the admin command);
 * 5. a new release restarts the relay; the same release only reloads it (the
 *    relay re-reads config and keys, without dropping a connection), and restarts
 *    it when it is not running or the change applies only after a restart (tls,
 *    paths, admin, metrics, ...). If the relay refuses the reload, config and keys
 *    are put back (it still runs the old ones); if it does not come back after a
 *    restart, config, keys and release are switched back and it is restarted on them.
 * The previous release is kept for `rollback`; older ones beyond KEEP_RELEASES go.
 * Before step 3, a host set up before a package joined HOST_PACKAGES (user-data
 * installs them only at first boot) gets the missing ones from apt; a host that
 * cannot install them (no mirror, apt busy for minutes) is deployed anyway, with a
 * warning naming them: the relay runs without them (unbound, say, only makes DNS
 * blocklists usable).
 *
 * Every path is under a root directory (`/` on a server), so tests run the very
 * same script on a scratch directory with stand-in restart and reload commands.
 */

import { createHash } from 'node:crypto';
import { HOST_PACKAGES } from './user-data';

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

/** One hash of the DKIM keys a deploy ships (file names and contents); part of the staging name and triggers. */
export function dkimKeysHash(keys: readonly { fileName: string; privateKeyPem: string }[]): string {
  return sha256Hex(keys.map((key) => `${key.fileName}:${key.privateKeyPem}`).join('\n'));
}

/**
 * The staging directory (relative to the admin user's home: SFTP and commands
 * start there, not in a shared /tmp), named after bundle, config, DKIM keys and script.
 */
export function stagingDirName(version: string, configHash: string, keysHash: string, scriptHash: string): string {
  return `ownrelay-staging-${sha256Hex(`${version}:${configHash}:${keysHash}:${scriptHash}`).slice(0, 16)}`;
}

/**
 * The two remote commands of a deploy, run as the admin user over SSH: `prepare`
 * before the bundle (ownrelay.js), config (ownrelay.yaml), DKIM keys (dkim/*.pem)
 * and script (ownrelay-deploy) are copied into the staging directory, `run` after.
 * The staging copy (config and keys are secrets) goes whatever the outcome; the
 * deploy step's exit status stays the command's.
 */
export function remoteDeployCommands(staging: string, version: string): { prepare: string; run: string } {
  return {
    prepare: `install -d -m 0700 ${staging} ${staging}/dkim`,
    run: `sudo install -m 0750 ${staging}/ownrelay-deploy ${REMOTE_DEPLOY_SCRIPT_PATH} && sudo ${REMOTE_DEPLOY_SCRIPT_PATH} deploy ${staging} ${version}; status=$?; rm -rf ${staging}; exit $status`,
  };
}

export interface DeployScriptOptions {
  /** filesystem root; `/` on a server */
  root?: string;
  /** restarts the relay and fails if it does not come back */
  restartCommand?: string;
  /**
   * makes the running relay re-read its config: prints `ownrelay reload --json`'s
   * answer, exits 3 when no relay runs, and otherwise non-zero when it refused
   */
  reloadCommand?: string;
  /** prints the names of the HOST_PACKAGES that are not installed, one per line */
  missingPackagesCommand?: string;
  /** installs the packages named by its arguments ("$@") */
  installPackagesCommand?: string;
}

const DEFAULT_RESTART = 'systemctl restart ownrelay.service && sleep 2 && systemctl is-active --quiet ownrelay.service';
// through the admin socket rather than `systemctl reload` (SIGHUP), which cannot tell whether the relay accepted the config
const DEFAULT_RELOAD = '"$BASE/current/ownrelay.js" reload --json --config "$CONFIG"';
// "ok installed" (or "hold ok installed"); "not-installed" and "config-files" are not
const DEFAULT_MISSING_PACKAGES = `for p in ${HOST_PACKAGES.join(' ')}; do dpkg-query -W -f='\${Status}' "$p" 2>/dev/null | grep -q ' installed$' || echo "$p"; done`;
// waits for unattended-upgrades' lock rather than failing at once
const APT = 'DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300';
const DEFAULT_INSTALL_PACKAGES = `${APT} update >&2 && ${APT} install -y "$@" >&2`;

// node is there (the relay runs on it); the relay's own check is server/dkim/keys.ts
const CHECK_KEY_JS = 'const k=require("crypto").createPrivateKey(require("fs").readFileSync(process.argv[1]));'
  + 'const t=k.asymmetricKeyType;'
  + 'if(t==="rsa"?k.asymmetricKeyDetails.modulusLength<2048:t!=="ed25519"){console.error("not an RSA key of 2048 bits or more, nor an Ed25519 key");process.exit(1)}';

/** A POSIX sh script: `deploy <staging-dir> <version>` or `rollback`. */
export function renderDeployScript(options: DeployScriptOptions = {}): string {
  const root = (options.root ?? '/').replace(/\/+$/, '');
  const restart = options.restartCommand ?? DEFAULT_RESTART;
  const reload = options.reloadCommand ?? DEFAULT_RELOAD;
  const missingPackages = options.missingPackagesCommand ?? DEFAULT_MISSING_PACKAGES;
  const installPackages = options.installPackagesCommand ?? DEFAULT_INSTALL_PACKAGES;
  return `#!/bin/sh
# ownrelay deploy: rendered by infra/render/deploy-script.ts
#   deploy <staging-dir> <version>   staging-dir holds ownrelay.js, ownrelay.yaml and dkim/*.pem (optional)
#   rollback                         back to the previous release, config and DKIM keys
set -eu
umask 027
BASE='${root}/opt/ownrelay'
CONFIG='${root}/etc/ownrelay/ownrelay.yaml'
KEYS='${root}/etc/ownrelay/dkim'
CLI='${root}/usr/local/bin/ownrelay'

fail() { echo "ownrelay-deploy: $*" >&2; exit 1; }
restart() { ${restart}; }
reload_relay() { ${reload}; }
missing_packages() { ${missingPackages}; }
install_packages() { ${installPackages}; }

ensure_packages() { # the host packages a first boot installs, for hosts older than one of them
  missing=$(missing_packages | tr '\\n' ' ' | sed 's/ *$//')
  [ -n "$missing" ] || return 0
  echo "ownrelay-deploy: installing host packages this host lacks: $missing"
  # word splitting wanted: one argument per package
  # shellcheck disable=SC2086
  install_packages $missing || echo "ownrelay-deploy: warning: could not install $missing; the relay runs without them (install them with: apt-get install $missing)" >&2
}

switch_to() { # <release dir>
  ln -sfn "$1" "$BASE/current.new"
  mv -T "$BASE/current.new" "$BASE/current"
}

link_cli() { # the admin command follows the current release
  mkdir -p "$(dirname "$CLI")"
  ln -sfn "$BASE/current/ownrelay.js" "$CLI.new"
  mv -T "$CLI.new" "$CLI"
}

check_keys() { # <dir>: every *.pem in it is a private key the relay can sign with
  [ -d "$1" ] || return 0
  for key in "$1"/*.pem; do
    [ -e "$key" ] || continue
    node -e '${CHECK_KEY_JS}' "$key" || fail "DKIM key $(basename "$key") is unusable; nothing was changed"
  done
}

install_keys() { # <dir>: its *.pem into $KEYS; keys not in it stay (the previous config may name them)
  [ -d "$1" ] || return 0
  for key in "$1"/*.pem; do
    [ -e "$key" ] || continue
    name=$(basename "$key")
    cp "$key" "$KEYS/$name.new"
    chmod 0640 "$KEYS/$name.new"
    chgrp ownrelay "$KEYS/$name.new" 2>/dev/null || true
    mv -f "$KEYS/$name.new" "$KEYS/$name"
  done
}

restore_keys() { # <saved dir>: $KEYS becomes a copy of it
  [ -d "$1" ] || return 0
  rm -rf "$KEYS.restore"
  cp -pR "$1" "$KEYS.restore"
  rm -rf "$KEYS"
  mv -T "$KEYS.restore" "$KEYS"
}

restore_config() {
  if [ -f "$CONFIG.previous" ]; then cp -p "$CONFIG.previous" "$CONFIG"; fi
  restore_keys "$KEYS.previous"
}

apply_by_reload() { # 0: applied; 1: the relay refused (it runs the old config); 2: a needed restart failed
  set +e
  answer=$(reload_relay 2>&1)
  status=$?
  set -e
  case "$status" in
    0)
      case "$answer" in
        *'"needsRestart": []'*) echo "ownrelay-deploy: the relay reloaded its config"; return 0;;
      esac
      echo "ownrelay-deploy: the change applies only after a restart; restarting"
      restart || return 2;;
    3)
      echo "ownrelay-deploy: the relay is not running; starting it"
      restart || return 2;;
    *)
      echo "$answer" >&2
      return 1;;
  esac
}

deploy() {
  staging=$1; version=$2
  case "$version" in *[!A-Za-z0-9._-]*|'') fail "bad version: $version";; esac
  [ -f "$staging/ownrelay.js" ] || fail "no ownrelay.js in $staging"
  [ -f "$staging/ownrelay.yaml" ] || fail "no ownrelay.yaml in $staging"
  release="$BASE/releases/$version"
  mkdir -p "$BASE/releases" "$(dirname "$CONFIG")"
  # the relay's user runs the bundle, and admins the ownrelay command: code is readable, only config and keys are not
  chmod 0755 "$BASE" "$BASE/releases" "$(dirname "$CONFIG")"
  if [ ! -f "$release/ownrelay.js" ]; then
    rm -rf "$release.tmp"
    mkdir -p "$release.tmp"
    chmod 0755 "$release.tmp"
    cp "$staging/ownrelay.js" "$release.tmp/ownrelay.js"
    chmod 0755 "$release.tmp/ownrelay.js"
    mv -T "$release.tmp" "$release"
  fi
  # the new release judges the new config, and the keys are checked too; a refusal changes nothing
  "$release/ownrelay.js" check-config "$staging/ownrelay.yaml" || fail "the new config is invalid; nothing was changed"
  check_keys "$staging/dkim"
  ensure_packages
  old_release=$(readlink "$BASE/current" 2>/dev/null || true)
  if [ -f "$CONFIG" ]; then cp -p "$CONFIG" "$CONFIG.previous"; fi
  mkdir -p "$KEYS"
  chmod 0750 "$KEYS"
  chgrp ownrelay "$KEYS" 2>/dev/null || true
  rm -rf "$KEYS.previous"
  cp -pR "$KEYS" "$KEYS.previous"
  install_keys "$staging/dkim"
  cp "$staging/ownrelay.yaml" "$CONFIG.new"
  chmod 0640 "$CONFIG.new"
  chgrp ownrelay "$CONFIG.new" 2>/dev/null || true
  mv -f "$CONFIG.new" "$CONFIG"
  switch_to "$release"
  if [ -n "$old_release" ] && [ "$old_release" != "$release" ]; then echo "$old_release" > "$BASE/previous"; fi
  link_cli
  if [ "$old_release" = "$release" ]; then
    outcome=0
    apply_by_reload || outcome=$?
    if [ "$outcome" -eq 1 ]; then
      restore_config
      fail "the relay refused the new config and keeps running the previous one; the previous config and keys are back in place"
    fi
    if [ "$outcome" -eq 2 ]; then
      echo "ownrelay-deploy: the relay did not start with the new config; switching back" >&2
      restore_config
      restart || true
      exit 1
    fi
  elif ! restart; then
    echo "ownrelay-deploy: the relay did not start on release $version; switching back" >&2
    restore_config
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
  if [ -d "$KEYS.previous" ]; then
    rm -rf "$KEYS.rolled-back"
    if [ -d "$KEYS" ]; then cp -pR "$KEYS" "$KEYS.rolled-back"; fi
    restore_keys "$KEYS.previous"
  fi
  current=$(readlink "$BASE/current")
  switch_to "$previous"
  echo "$current" > "$BASE/previous"
  link_cli
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
