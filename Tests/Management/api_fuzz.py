#!/usr/bin/env python3
"""Checks skvmd's API against its OpenAPI document with schemathesis (property-based requests:
valid and invalid bodies, parameters, paths). skvmd listens on a unix socket only; a loopback TCP
relay that lives as long as this script puts it in front of schemathesis.

Usage: api_fuzz.py --socket PATH --spec openapi.yaml [--examples N]
Exit status: schemathesis's (0 when every check passed)."""
import argparse
import os
import socket
import subprocess
import sys
import threading


def pump(source, destination):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            destination.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, destination):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(listener, path):
    while True:
        client, _ = listener.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(path)
        except OSError:
            client.close()
            continue
        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--examples", type=int, default=40)
    args = parser.parse_args()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    threading.Thread(target=relay, args=(listener, args.socket), daemon=True).start()
    schemathesis = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    command = [
        schemathesis, "run", args.spec, "--base-url", f"http://127.0.0.1:{port}",
        "--checks", "all", "--hypothesis-max-examples", str(args.examples), "--hypothesis-derandomize",
        "--exclude-path", "/v1/events", "--request-timeout", "30000", "--workers", "1",
        "--no-color", "--show-trace",
    ]
    env = dict(os.environ, SCHEMATHESIS_TELEMETRY="false")
    result = subprocess.run(command, env=env)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
