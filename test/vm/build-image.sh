#!/usr/bin/env bash
# Builds the Debian 13 (trixie) root image the server test boots: debootstrap with
# the packages the rendered user-data asks for (so the first boot needs no mirror),
# plus the kernel, systemd, cloud-init and openssh-server; then a raw ext4 image of
# that tree (`mkfs.ext4 -d`). qemu boots the tree's own kernel and initrd.
#
# Output (in the cache directory, $OWNRELAY_VM_CACHE or <repo>/.cache/vm):
#   <key>/root.raw, <key>/vmlinuz, <key>/initrd.img, <key>/packages.txt
# and prints that directory's path as the last line of stdout. <key> is a hash of
# the package list and of this script: a change to either builds a new image; an
# unchanged one is reused; a new image replaces the outdated ones. Needs root
# (debootstrap), debootstrap and e2fsprogs; only this build reaches the mirror.
#
# Usage: test/vm/build-image.sh PACKAGE...   (the host packages from the user-data;
# the test passes HOST_PACKAGES from infra/render/user-data.ts)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${OWNRELAY_VM_CACHE:-$repo/.cache/vm}"
mirror="${OWNRELAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=trixie
image_size=3G

# What every image carries besides the user-data's packages:
#   systemd systemd-sysv dbus        init
#   linux-image-amd64                kernel and initrd (virtio drivers, iso9660 for the seed)
#   cloud-init python3-cffi-backend  first boot (debootstrap misses cryptography's virtual dependency)
#   dns-root-data                    what apt adds to the user-data's unbound (a Recommends, which
#                                    debootstrap leaves out): unbound does not start without its key
#   ifupdown isc-dhcp-client         the network cloud-init configures
#   openssh-server sudo              admin logins
#   iproute2 procps util-linux e2fsprogs   ss, mountpoint, mkfs for the spool disk
base_packages=(systemd systemd-sysv dbus linux-image-amd64 cloud-init python3-cffi-backend dns-root-data ifupdown isc-dhcp-client openssh-server sudo iproute2 procps util-linux e2fsprogs)

if [ "$#" -eq 0 ]; then
  echo "usage: $0 PACKAGE...  (the user-data's host packages)" >&2
  exit 2
fi
packages=$(printf '%s\n' "${base_packages[@]}" "$@" | sort -u)
key=$( { echo "$suite"; echo "$packages"; cat "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
out="$cache/$key"

if [ -f "$out/root.raw" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
  echo "image: cached $out" >&2
  echo "$out"
  exit 0
fi

phase_start=$SECONDS
phase() { echo "image: $1 took $((SECONDS - phase_start)) s" >&2; phase_start=$SECONDS; }

mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"

echo "image: debootstrap $suite with: $(echo $packages)" >&2
debootstrap --variant=minbase --include="$(echo $packages | tr ' ' ',')" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 40 "$work/debootstrap.log" >&2; echo "image: debootstrap failed (log above)" >&2; exit 1; }
phase debootstrap

# The guest's console and its root file system
echo 'LABEL=ownrelay-root / ext4 defaults,errors=remount-ro 0 1' > "$root/etc/fstab"
# cloud-init is told its data source on the kernel command line; look for NoCloud only
mkdir -p "$root/etc/cloud/cloud.cfg.d"
printf 'datasource_list: [ NoCloud, None ]\n' > "$root/etc/cloud/cloud.cfg.d/90-ownrelay-test-datasource.cfg"
# an image has no host keys of its own: cloud-init installs the rendered one
rm -f "$root"/etc/ssh/ssh_host_*
# no machine id: each boot of a fresh image is a first boot
: > "$root/etc/machine-id"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*_Packages 2>/dev/null || true
printf '%s\n' "$packages" > "$work/packages.txt"
cp -L "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp -L "$root"/boot/initrd.img-* "$work/initrd.img"
chmod 0644 "$work/vmlinuz" "$work/initrd.img"
phase configure

truncate -s "$image_size" "$work/root.raw"
mkfs.ext4 -q -L ownrelay-root -d "$root" "$work/root.raw"
phase mkfs

rm -rf "$root"
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
# images of older package lists or scripts are never used again
for old in "$cache"/*; do
  case "$(basename "$old")" in
    "$key") ;;
    [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) rm -rf "$old"; echo "image: removed the outdated $old" >&2;;
  esac
done
echo "image: built $out" >&2
echo "$out"
