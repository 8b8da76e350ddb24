"""Every command of the README runs as written, from the checkout, as a newcomer types it.

The README's ```bash and ```python blocks are run section by section, each section as one
bash script (so `eval "$(icat-servers up)"` carries TANGO_HOST to the blocks after it),
with no TANGO_HOST and a fresh ICAT_SERVERS_STATE. A python block runs with the venv's
python. A server command (`MetaExperiment icatservers`) runs in the background; the test
then waits for its devices and stops it by PID. Only the commands in SKIPPED are not run,
each for the reason given.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tango

from icat_servers.adapters.embedded_db import EmbeddedDatabase
from tests.embedded.conftest import MANAGER, META, REPO, alive, environment, stop_everything

README = REPO / "README.md"
SKIPPED = {
    "scripts/test": "it is the command that runs this test (CI runs it: .ci/run)",
    "pip install .": "scripts/setup installed this checkout (pip install -e); a copy "
    "installed over it would be tested instead of the checkout",
}
SERVERS = ("MetaExperiment", "MetadataManager")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass
class Section:
    title: str
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (language, text)


def sections(text: str) -> list[Section]:
    """The README's sections ("## " headings; the top one first) with their runnable blocks."""
    found: list[Section] = []
    for number, part in enumerate(re.split(r"^## ", text, flags=re.MULTILINE)):
        title = part.splitlines()[0] if number else "(top)"
        blocks = [(lang, body) for lang, body in FENCE.findall(part) if lang in ("bash", "python")]
        if blocks:
            found.append(Section(title, blocks))
    return found


def command_of(line: str) -> str:
    return line.split(" #", 1)[0].strip()


def script(section: Section, logs: Path, pids: Path) -> str:
    """One bash script running the section's blocks in order."""
    lines = ["set -euo pipefail", f"cd {REPO}"]
    for language, body in section.blocks:
        if language == "python":
            lines += ["python - <<'README_PYTHON'", body.rstrip("\n"), "README_PYTHON"]
            continue
        for number, line in enumerate(body.splitlines()):
            command = command_of(line)
            if command in SKIPPED:
                lines.append(f"echo 'not run: {command}: {SKIPPED[command]}'")
            elif command.split(" ", 1)[0] in SERVERS:
                log = logs / f"{command.split()[0]}-{number}.log"
                lines.append(f"{command} > {log} 2>&1 & echo $! >> {pids}")
            else:
                lines.append(line)
    return "\n".join(lines) + "\n"


def wait_for_devices(state: Path, timeout: float = 60.0) -> None:
    running = EmbeddedDatabase(state).status()
    assert running is not None, "the README's servers have no embedded database to use"
    deadline = time.monotonic() + timeout
    for device in (META, MANAGER):
        while True:
            try:
                tango.DeviceProxy(f"tango://{running.tango_host}/{device}").ping()
                break
            except tango.DevFailed:
                assert time.monotonic() < deadline, f"{device} did not answer"
                time.sleep(0.2)


def stop(pids: Path) -> None:
    if not pids.exists():
        return
    for pid in (int(p) for p in pids.read_text().split()):
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def test_the_readme_links_nothing_outside_the_repository() -> None:
    text = README.read_text()
    assert "../" not in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if re.match(r"https?://", target):
            continue
        assert (REPO / target).exists(), f"the README links {target}, not in the repository"
    assert sections(text), "no runnable block found: the parser no longer reads the README"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("section", sections(README.read_text()), ids=lambda s: s.title)
def test_every_readme_command_runs_as_written(section: Section, tmp_path: Path) -> None:
    state = tmp_path / "state"
    pids = tmp_path / "server.pids"
    try:
        ran = subprocess.run(
            ["bash", "-c", script(section, tmp_path, pids)],
            env=environment(state),
            capture_output=True,
            text=True,
            timeout=840,
            check=False,
        )
        assert ran.returncode == 0, f"{section.title}:\n{ran.stdout}\n{ran.stderr}"
        if pids.exists():
            wait_for_devices(state)
    finally:
        stop(pids)
        stop_everything(state)
