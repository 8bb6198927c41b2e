#!/bin/sh
# Build the offline minimal sandbox test image (no registry needed).
#
# Debian packages are downloaded with `apt-get download` (busybox-static for the shell and
# coreutils, python3.11-minimal with its few libraries for the in-container executor that
# microclaw.sandbox mounts read-only at /opt/microclaw/executor.py), unpacked with dpkg-deb
# into a fresh rootfs with one symlink per busybox applet, a non-root user `sandbox`
# (uid 1000) and the /workspace layout, then `docker import`ed. No registry is contacted.
# Idempotent: when an image with this tag already carries the recipe hash of this script,
# nothing is done.
#
# Usage: sandbox-image/build-test-image.sh [TAG]      (default microclaw-sandbox-test:latest)
# Needs: a Debian/Ubuntu host with apt-get and a running Docker engine; root (or sudo) only to
# refresh apt lists, and to precompile the standard library in the image (chroot).
set -eu

TAG="${1:-microclaw-sandbox-test:latest}"
RECIPE_HASH="$(sha256sum "$0" | cut -c1-16)"

if ! command -v docker >/dev/null 2>&1; then
    echo "build-test-image: docker CLI not found" >&2
    exit 2
fi

current="$(docker image inspect -f '{{ index .Config.Labels "microclaw.recipe" }}' "$TAG" 2>/dev/null || true)"
if [ "$current" = "$RECIPE_HASH" ]; then
    echo "build-test-image: $TAG is up to date ($RECIPE_HASH)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

need=""
command -v dpkg-deb >/dev/null 2>&1 || need="$need dpkg"
command -v apt-get >/dev/null 2>&1 || { echo "build-test-image: apt-get not found" >&2; exit 2; }
if [ -n "$need" ]; then
    $SUDO apt-get install -y -q $need
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM
chmod 755 "$work"

PACKAGES="busybox-static python3.11-minimal libpython3.11-minimal libc6 zlib1g libexpat1"

# apt-get download wants a package list; refresh it once when a package is unknown.
cd "$work"
if ! apt-get download $PACKAGES >/dev/null 2>&1; then
    $SUDO apt-get update -q >/dev/null
    apt-get download $PACKAGES >/dev/null
fi

root="$work/rootfs"
mkdir -p "$root"
for deb in ./*.deb; do
    dpkg-deb -x "$deb" "$root"
done
rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/locale" \
    "$root/usr/lib/x86_64-linux-gnu/gconv" "$root/usr/share/i18n"
ln -sf python3.11 "$root/usr/bin/python3"

mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" \
    "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/var/tmp" \
    "$root/home/sandbox" "$root/workspace/group" "$root/workspace/global" "$root/workspace/extra"
chmod 1777 "$root/tmp" "$root/var/tmp"

# One symlink per applet, in the directory busybox itself reports for it.
"$root/bin/busybox" --list-full | while read -r applet; do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done

cat > "$root/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/bin/sh
sandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$root/etc/group" <<GROUP
root:x:0:
sandbox:x:1000:
nogroup:x:65534:
GROUP
echo "hosts: files dns" > "$root/etc/nsswitch.conf"

# Debian compiles the standard library in its postinst, which dpkg-deb -x does not run; the
# root filesystem is read-only at run time, so compile it now (chroot needs root; without it
# Python still works, only its start is slower).
if [ "$(id -u)" = 0 ]; then
    chroot "$root" /usr/bin/python3.11 -m compileall -q /usr/lib/python3.11 >/dev/null || true
fi
old_id="$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)"
if [ "$(id -u)" = 0 ]; then
    chown -R 1000:1000 "$root/home/sandbox" "$root/workspace"
    tar -C "$root" --numeric-owner -cf "$work/rootfs.tar" .
else
    tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$work/rootfs.tar" .
fi
docker import \
    -c 'USER sandbox' \
    -c 'WORKDIR /workspace/group' \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/home/sandbox' \
    -c 'CMD ["/bin/sleep", "2147483647"]' \
    -c "LABEL microclaw.recipe=$RECIPE_HASH microclaw.test-image=1" \
    "$work/rootfs.tar" "$TAG" >/dev/null
if [ -n "$old_id" ]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true  # still used by a container: keep it
fi
echo "build-test-image: built $TAG ($RECIPE_HASH)"
