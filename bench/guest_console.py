"""The default guest's serial console, driven from a bench: start a VMM, wait for markers,
type lines, power off."""
import os
import select
import subprocess
import time


class Guest:
    def __init__(self, command):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        self.output = b""

    def wait_for(self, marker, timeout=600):
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if select.select([self.process.stdout], [], [], 0.5)[0]:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    break
                self.output += chunk
                if marker in self.output:
                    before = self.output[:self.output.index(marker)]
                    self.output = self.output[self.output.index(marker) + len(marker):]
                    return time.perf_counter(), before
        raise RuntimeError(f"no {marker!r}: {self.output[-400:].decode(errors='replace')}")

    def run(self, line, number, timeout=600):
        # The marker is computed in the guest, so the echoed command line never matches it.
        self.send(f"{line}; echo PHASE-$(({number} + 100))-DONE")
        return self.wait_for(f"PHASE-{number + 100}-DONE".encode(), timeout)

    def send(self, line):
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def close(self):
        self.send("poweroff -f")
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
