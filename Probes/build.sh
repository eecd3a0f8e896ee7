#!/usr/bin/env bash
# Builds one probe guest into a flat binary with the Swift toolchain's clang and
# lld (nothing to install). The test suite does the same in Swift (ProbeBuilder);
# this script is for running a probe by hand:
#   Probes/build.sh hello /tmp/hello.bin && skvm run --flat-entry long --flat /tmp/hello.bin
set -euo pipefail
name=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
bin=$(dirname "$(readlink -f "$(command -v swiftc)")")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-target x86_64-unknown-none-elf -ffreestanding -nostdlib -fno-pic -fno-pie -mno-red-zone
  -mgeneral-regs-only -fno-stack-protector -fno-builtin -O2 -Wall -Werror -I "$here/runtime")
for src in "$here"/runtime/*.S "$here"/runtime/*.c "$here/probes/$name.c"; do
  "$bin/clang" "${flags[@]}" -c "$src" -o "$work/$(basename "$src").o"
done
"$bin/ld.lld" -T "$here/runtime/link.ld" --image-base=0 -static -nostdlib -o "$work/$name.elf" "$work"/*.o
"$bin/llvm-objcopy" -O binary "$work/$name.elf" "$out"
