"""Device servers as processes: started, waited for until their devices answer, stopped by PID."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import tango


def start_server(
    argv: Sequence[str],
    devices: Sequence[str],
    log: Path,
    environment: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start `argv` with its output in `log`; return once every device answers."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            env={**os.environ, **(environment or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    for device in devices:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {process.returncode}: see {log}")
            try:
                proxy = tango.DeviceProxy(device)
                proxy.ping()
                proxy.state()
                break
            except tango.DevFailed:
                if time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    raise RuntimeError(
                        f"{device} did not answer in {timeout} s: see {log}"
                    ) from None
                time.sleep(0.1)
    return process
