#!/bin/sh
# Finish a debootstrapped root filesystem for worldtrace sandboxes: a non-root user, the /work and
# /out layout, the mount point of the tracer, and no docs/caches. Runs on the host: finish-rootfs.sh ROOTFS
set -eu
root=$1
# An image of a Python other than the suite's default (debootstrap --include=python3.15) has no
# python3 command: that one Python becomes python3, as the sandbox runs `python3`.
if [ ! -e "$root/usr/bin/python3" ]; then
    set -- "$root"/usr/bin/python3.[0-9]*
    case "$#:$1" in
        1:*[0-9]) ln -s "$(basename "$1")" "$root/usr/bin/python3" ;;
    esac
fi
[ -x "$root/usr/bin/python3" ] || { echo "finish-rootfs: $root has no /usr/bin/python3 (and not exactly one python3.X)" >&2; exit 1; }

# uid/gid 1000 'runner' (edited directly: no chroot, no useradd needed)
grep -q '^runner:' "$root/etc/group" || echo 'runner:x:1000:' >>"$root/etc/group"
grep -q '^runner:' "$root/etc/passwd" || echo 'runner:x:1000:1000:worldtrace runner:/work:/bin/sh' >>"$root/etc/passwd"
if [ -f "$root/etc/shadow" ] && ! grep -q '^runner:' "$root/etc/shadow"; then
    echo 'runner:!:19000:0:99999:7:::' >>"$root/etc/shadow"
fi

mkdir -p "$root/work" "$root/out" "$root/opt/worldtrace/tracer" "$root/opt/project"
chown 1000:1000 "$root/work" "$root/out"
chmod 0755 "$root/work" "$root/out" "$root/opt/worldtrace"
chmod 1777 "$root/tmp"

# Smaller image: no docs, man pages, locales, apt caches or lists (the image is never upgraded in place).
rm -rf "$root/usr/share/doc"/* "$root/usr/share/man"/* "$root/usr/share/info"/* \
       "$root/usr/share/locale"/* "$root/var/cache/apt"/*.bin "$root/var/cache/apt/archives"/*.deb \
       "$root/var/lib/apt/lists"/* "$root/var/log"/*.log "$root/var/cache/debconf"/*-old
# Pre-compile the standard library: the sandbox's root filesystem is read-only.
chroot "$root" /usr/bin/python3 -m compileall -q -j 0 /usr/lib/python3 /usr/lib/python3.* >/dev/null 2>&1 || true
