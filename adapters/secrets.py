"""The servers' SecretSource: secret files readable by the server's user only, and the
server's environment. icatcore.config decides which source applies; this reads it.

No text produced here contains a secret: errors name the file and the fix.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from icat_servers.icatcore.errors import ConfigurationError

MAX_SECRET_BYTES = 64 * 1024


class ServerSecrets:
    """Reads `API_KEY_FILE` / `queuePasscodeFile` files and ICAT_SERVERS_* variables."""

    def __init__(self, environment: Mapping[str, str] | None = None) -> None:
        self._environment = os.environ if environment is None else environment

    def read_file(self, path: str) -> str:
        try:
            fd = os.open(path, os.O_RDONLY)  # a link is followed: its target is checked
        except FileNotFoundError:
            raise ConfigurationError(
                f"secret file {path} does not exist: create it with the secret, readable by "
                f"the server's user only (chmod 600 {path})"
            ) from None
        except PermissionError:
            raise ConfigurationError(
                f"secret file {path} cannot be read by the server's user: make that user its "
                f"owner (chmod 600 {path})"
            ) from None
        except OSError as error:
            raise ConfigurationError(
                f"secret file {path} cannot be opened ({error.strerror or type(error).__name__}):"
                " name a regular file readable by the server's user"
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ConfigurationError(f"secret file {path} is not a regular file: name one")
            if info.st_mode & 0o077:
                raise ConfigurationError(
                    f"secret file {path} is open to group or others (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}): chmod 600 {path}"
                )
            data = os.read(fd, MAX_SECRET_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_SECRET_BYTES:
            raise ConfigurationError(
                f"secret file {path} is larger than {MAX_SECRET_BYTES} bytes: "
                "it should hold only the secret"
            )
        try:
            return data.decode().strip()
        except UnicodeDecodeError:
            raise ConfigurationError(
                f"secret file {path} is not UTF-8 text: write the secret as text"
            ) from None

    def environment(self, name: str) -> str:
        return self._environment.get(name, "").strip()


SERVER_SECRETS = ServerSecrets()
"""What the devices pass to icatcore.config's readers."""
