/// The default guest's /init: mounts the usual file systems, loads the virtio and ACPI
/// button modules, starts acpid (the power button powers off), brings every NIC up with
/// DHCP, says SKVM-GUEST-READY and keeps a shell on the console.
enum InitScript {
  static let text = """
    #!/bin/busybox sh
    /bin/busybox --install -s
    export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
    for module in $(cat /etc/modules.order); do
      insmod "/lib/modules/$module" 2>/dev/null
    done
    # acpid daemonizes only if it can open its log and pid files.
    mkdir -p /var/log /var/run
    acpid -c /etc/acpi || echo "skvm guest: acpid did not start: the ACPI power button will not power off"
    # The network: loopback, then every NIC by DHCP. User networking answers at once; with no
    # DHCP server udhcpc goes on trying in the background after a second and the boot goes on.
    ip link set lo up
    for path in /sys/class/net/eth*; do
      [ -e "$path" ] || continue
      ip link set "${path##*/}" up
      udhcpc -i "${path##*/}" -b -q -t 1 -T 1 -A 2 -s /etc/udhcpc.script >/dev/null 2>&1
    done
    console=$(sed -n 's/.*console=\\([A-Za-z0-9]*\\).*/\\1/p' /proc/cmdline | tail -n 1)
    # A console whose driver is a module (hvc0) did not exist when the kernel opened
    # /dev/console for init: talk to it now that it does.
    if [ -n "$console" ] && (: <"/dev/$console") 2>/dev/null; then exec <"/dev/$console" >"/dev/$console" 2>&1; fi
    echo "SKVM-GUEST-READY"
    while true; do
      setsid cttyhack /bin/sh -l
    done

    """

  /// udhcpc's hook: puts the lease's address, default route and name servers in place (and
  /// on `deconfig` leaves the interface alone, so an address set by hand survives).
  static let dhcpHook = """
    #!/bin/sh
    case "$1" in
      bound|renew)
        ip addr flush dev "$interface" scope global
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
        : >/etc/resolv.conf
        for server in $dns; do echo "nameserver $server" >>/etc/resolv.conf; done
        echo "skvm guest: $interface has address $ip/${mask:-24}${router:+, gateway ${router%% *}}" >/dev/console
        ;;
    esac
    exit 0

    """

  /// What acpid runs for the power button.
  static let powerButtonAction = """
    #!/bin/sh
    echo "skvm guest: power button pressed, powering off"
    poweroff -f

    """
}
