#!/bin/busybox sh
# /init of the real-KVM lane's outer VM. Loads KVM (kvm_amd on QEMU's emulated
# SVM), mounts the host's root read-only over 9p, and runs each line of /job
# chrooted into it, from the directory in /job.cwd, bracketed by markers the
# lane tool reads: SKVM-LANE-BEGIN n / SKVM-LANE-END n status (n counts from /job.first).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# The heartbeat: a line on the second serial port every 2 s, whatever the commands do; the
# lane tool reboots an outer VM that falls silent (see --stall-limit).
(while :; do echo beat; sleep 2; done) >/dev/ttyS1 2>/dev/null &

fail() {
  echo "SKVM-LANE-ERROR $*"
  poweroff -f
}

# Module parameters from the kernel command line (kvm_amd.vgif=0 …), as modprobe would pass them.
for module in $(cat /modules.order); do
  name=$(basename "$module" .ko | tr - _)
  params=$(tr ' ' '\n' </proc/cmdline | sed -n "s/^$name\\.//p" | tr '\n' ' ')
  # shellcheck disable=SC2086
  insmod "/lib/modules/$module" $params 2>/dev/null || fail "insmod $module $params"
done
# Loopback up: Foundation's run loop (used by tests' Process and timers) needs it.
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
[ -c /dev/kvm ] || fail "no /dev/kvm after loading kvm_amd (does the CPU model offer SVM?)"

mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro hostroot /host || fail "cannot mount the host's root over 9p"
mount -t devtmpfs dev /host/dev
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
# /tmp: the host's files (a checkout or test input may live there) under a writable
# in-memory layer, so the host's /tmp itself is never written.
mkdir -p /overlay
mount -t tmpfs -o size=512m overlay /overlay
mkdir -p /overlay/upper /overlay/work
mount -t overlay -o lowerdir=/host/tmp,upperdir=/overlay/upper,workdir=/overlay/work tmp /host/tmp ||
  mount -t tmpfs -o size=512m tmp /host/tmp
mount -t tmpfs tmp /host/run 2>/dev/null
echo "SKVM-LANE-READY $(cut -d' ' -f1 /proc/uptime)"

cwd=$(cat /job.cwd)
input=/dev/null
[ -e /job.interactive ] && input=/dev/console
timeout=$(cat /job.timeout)
n=$(($(cat /job.first) - 1))
while IFS= read -r line; do
  n=$((n + 1))
  echo "SKVM-LANE-BEGIN $n"
  timeout -s KILL "$timeout" chroot /host /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:/opt/swift/usr/bin TERM=dumb SKVM_IN_LANE=1 \
    /bin/sh -c "cd '$cwd' && $line" <"$input"
  status=$?
  echo "SKVM-LANE-END $n $status"
done </job
poweroff -f
