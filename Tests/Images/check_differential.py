#!/usr/bin/env python3
"""Differential check of `skvm img check` against qemu-img, the oracle, on mutated qcow2 images.

Seed images are made with qemu-img and qemu-io (data, snapshots, compressed clusters, a
backing file, small clusters, version 2, narrow and wide refcounts). Each case mutates one
field of the metadata (header, L1 or L2 entry, refcount table or block entry, snapshot table)
and then requires:
  1. skvm neither crashes nor hangs (exit status 0-3, within the time limit);
  2. its verdict is never milder than qemu-img's (clean < leaks < corrupt; "could not check"
     counts as corrupt);
  3. after `skvm img check -r all`, `qemu-img check` finds the image clean whenever
     `qemu-img check -r all` on a copy makes it clean.

  check_differential.py --skvm SKVM [--cases N] [--seed S] [--keep DIR]
Prints a line per failure and a summary; exits 1 if any case failed.
"""
import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

TIMEOUT = 60


def run(command, timeout=TIMEOUT):
    start = time.monotonic()
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        return done.returncode, done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace"), \
            time.monotonic() - start
    except subprocess.TimeoutExpired:
        return "timeout", "", timeout


def severity(status):
    """clean 0 < leaks 1 < corrupt 2; 'could not check' (1) is corrupt."""
    return {0: 0, 3: 1, 2: 2, 1: 2}.get(status, 3)


def make_seeds(directory):
    seeds = []

    def qemu_img(*arguments):
        subprocess.run(["qemu-img", *arguments], check=True, stdout=subprocess.DEVNULL)

    def qemu_io(path, *commands):
        arguments = ["qemu-io", "-f", "qcow2"]
        for command in commands:
            arguments += ["-c", command]
        subprocess.run(arguments + [path], check=True, stdout=subprocess.DEVNULL)

    def seed(name, options, size="4M", writes=(), snapshot=False, after=()):
        path = os.path.join(directory, name)
        qemu_img("create", "-q", "-f", "qcow2", "-o", options, path, size)
        if writes:
            qemu_io(path, *writes)
        if snapshot:
            qemu_img("snapshot", "-c", "first", path)
        if after:
            qemu_io(path, *after)
        seeds.append(path)

    writes = ("write -P 0x11 0 192k", "write -P 0x22 1M 64k", "write -z 2M 64k", "write -P 0x33 3M 4k")
    seed("plain.qcow2", "cluster_size=65536", writes=writes)
    seed("snap.qcow2", "cluster_size=65536", writes=writes, snapshot=True,
         after=("write -P 0x44 0 64k", "write -P 0x55 3M 64k"))
    seed("small.qcow2", "cluster_size=512", size="1M", writes=("write -P 0x66 0 8k", "write -P 0x77 512k 4k"))
    seed("v2.qcow2", "compat=0.10,cluster_size=4096", size="2M", writes=("write -P 0x12 0 64k",), snapshot=True,
         after=("write -P 0x13 4k 4k",))
    seed("refcount1.qcow2", "cluster_size=4096,refcount_bits=1", size="2M", writes=("write -P 0x21 0 32k",))
    seed("refcount64.qcow2", "cluster_size=4096,refcount_bits=64", size="2M", writes=("write -P 0x31 0 32k",))
    raw = os.path.join(directory, "data.raw")
    with open(raw, "wb") as f:
        f.write(bytes(random.Random(7).randrange(4) for _ in range(1 << 20)))
    compressed = os.path.join(directory, "compressed.qcow2")
    qemu_img("convert", "-c", "-O", "qcow2", "-o", "cluster_size=4096", raw, compressed)
    seeds.append(compressed)
    base = os.path.join(directory, "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "4M")
    qemu_io(base, "write -P 0x01 0 1M")
    overlay = os.path.join(directory, "overlay.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", overlay)
    qemu_io(overlay, "write -P 0x02 64k 64k")
    seeds.append(overlay)
    return seeds


def u64(data, offset):
    return struct.unpack_from(">Q", data, offset)[0] if offset + 8 <= len(data) else 0


def u32(data, offset):
    return struct.unpack_from(">I", data, offset)[0] if offset + 4 <= len(data) else 0


def fields(data):
    """(offset, width, label) of every metadata field worth mutating in a well-formed image."""
    cluster_bits = u32(data, 20)
    cluster = 1 << cluster_bits
    result = [(o, w, "header") for o, w in ((8, 8), (16, 4), (20, 4), (24, 8), (36, 4), (40, 8), (48, 8), (56, 4),
                                            (60, 4), (64, 8), (72, 8), (96, 4), (100, 4))]
    l1_size, l1_offset = u32(data, 36), u64(data, 40)
    for index in range(l1_size):
        result.append((l1_offset + 8 * index, 8, "l1"))
        l2 = u64(data, l1_offset + 8 * index) & 0x00FFFFFFFFFFFE00
        if l2 and l2 + cluster <= len(data):
            for slot in range(cluster // 8):
                if u64(data, l2 + 8 * slot):
                    result.append((l2 + 8 * slot, 8, "l2"))
    table, clusters = u64(data, 48), u32(data, 56)
    refcount_order = u32(data, 96) if u32(data, 4) == 3 else 4
    for index in range(clusters * cluster // 8):
        entry = u64(data, table + 8 * index)
        if entry:
            result.append((table + 8 * index, 8, "reftable"))
            width = max(1, (1 << refcount_order) // 8)
            for slot in range(0, min(cluster, 256), width):
                result.append((entry + slot, width, "refblock"))
    snapshots, snapshot_offset = u32(data, 60), u64(data, 64)
    position = snapshot_offset
    for _ in range(snapshots):
        for relative, width in ((0, 8), (8, 4), (12, 2), (14, 2), (32, 4), (36, 4)):
            result.append((position + relative, width, "snapshot"))
        extra, id_size, name_size = u32(data, position + 36), struct.unpack_from(">H", data, position + 12)[0], \
            struct.unpack_from(">H", data, position + 14)[0]
        position += (40 + extra + id_size + name_size + 7) & ~7
    return [field for field in result if field[0] + field[1] <= len(data)]


def mutate(data, rng):
    data = bytearray(data)
    offset, width, label = rng.choice(fields(bytes(data)))
    old = int.from_bytes(data[offset:offset + width], "big")
    cluster = 1 << (u32(data, 20) if 9 <= u32(data, 20) <= 21 else 16)
    mask = (1 << (8 * width)) - 1
    choice = rng.randrange(9)
    if choice == 0:
        new = 0
    elif choice == 1:
        new = mask
    elif choice == 2:
        new = old ^ (1 << rng.randrange(8 * width))
    elif choice == 3:
        new = (old + rng.choice((1, -1, 8, 512, cluster, -cluster))) & mask
    elif choice == 4:
        new = rng.randrange(len(data) + 4 * cluster) & mask
    elif choice == 5:
        new = (rng.randrange(len(data) // cluster + 2) * cluster) | (old & ~0x00FFFFFFFFFFFE00 & mask)
    elif choice == 6:
        new = old | (1 << 63 if width == 8 else 0)
    elif choice == 7:
        new = rng.getrandbits(8 * width)
    else:
        new = (old & ~0x1FF & mask) | rng.randrange(1, 0x200) & mask
    data[offset:offset + width] = (new & mask).to_bytes(width, "big")
    return bytes(data), f"{label}@{offset:#x}: {old:#x} -> {new & mask:#x}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skvm", required=True)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep")
    arguments = parser.parse_args()
    rng = random.Random(arguments.seed)
    failures = 0
    counts = {"milder": 0, "repair": 0, "crash": 0}
    with tempfile.TemporaryDirectory(prefix="skvm-diff-") as directory:
        seeds = make_seeds(directory)
        work = os.path.join(directory, "work")
        os.mkdir(work)
        for name in ("base.qcow2",):
            shutil.copy(os.path.join(directory, name), os.path.join(work, name))
        started = time.monotonic()
        for case in range(arguments.cases):
            seed_path = rng.choice(seeds)
            with open(seed_path, "rb") as f:
                mutant, what = mutate(f.read(), rng)
            what = f"case {case} ({os.path.basename(seed_path)}, {what})"
            paths = {}
            for role in ("q", "s", "qr", "sr"):
                paths[role] = os.path.join(work, f"{role}.qcow2")
                with open(paths[role], "wb") as f:
                    f.write(mutant)
            qemu_status, _, _ = run(["qemu-img", "check", "-q", paths["q"]])
            ours_status, ours_output, _ = run([arguments.skvm, "img", "check", paths["s"]])
            problem = None
            if ours_status not in (0, 1, 2, 3):
                counts["crash"] += 1
                problem = f"skvm img check ended with {ours_status}: {ours_output[-300:]}"
            elif severity(ours_status) < severity(qemu_status):
                counts["milder"] += 1
                problem = f"verdict milder than qemu-img's ({ours_status} vs {qemu_status}): {ours_output[-300:]}"
            else:
                run(["qemu-img", "check", "-q", "-r", "all", paths["qr"]])
                qemu_after, _, _ = run(["qemu-img", "check", "-q", paths["qr"]])
                repair_status, repair_output, _ = run([arguments.skvm, "img", "check", "-r", "all", paths["sr"]])
                ours_after, after_output, _ = run(["qemu-img", "check", paths["sr"]])
                if repair_status not in (0, 1, 2, 3):
                    counts["crash"] += 1
                    problem = f"skvm img check -r all ended with {repair_status}: {repair_output[-300:]}"
                elif qemu_after == 0 and ours_after != 0:
                    counts["repair"] += 1
                    problem = (f"qemu-img's repair makes it clean, ours leaves {ours_after}: "
                               f"{repair_output[-400:]} / qemu-img: {after_output[-300:]}")
            if problem:
                failures += 1
                print(f"FAIL {what}: {problem}", flush=True)
                if arguments.keep:
                    os.makedirs(arguments.keep, exist_ok=True)
                    with open(os.path.join(arguments.keep, f"case{case}.qcow2"), "wb") as f:
                        f.write(mutant)
        elapsed = time.monotonic() - started
    print(f"check_differential: {arguments.cases} cases (seed {arguments.seed}) in {elapsed:.1f} s: "
          f"{failures} failed ({counts['milder']} milder verdicts, {counts['repair']} repairs short of qemu-img's, "
          f"{counts['crash']} crashes or hangs)", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
