"""A real OpenSSH server on 127.0.0.1 for the deploy tests: Debian's sshd with its own host key,
a temporary client key, and an ssh_config + known_hosts that a client uses with `ssh -F`."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
HOST_ALIAS = "edge-test"


def available() -> bool:
    return Path(SSHD).is_file() and shutil.which("ssh") and shutil.which("ssh-keygen")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
    return path.with_suffix(".pub").read_text().strip()


def release_keys(folder: Path, namespace: str) -> dict[str, Path]:
    """A release signing key and the allowed_signers file that trusts it (the tests' keys)."""
    keygen(folder / "release")
    kind, blob = (folder / "release.pub").read_text().split()[:2]
    (folder / "allowed_signers").write_text(f'ops namespaces="{namespace}" {kind} {blob}\n')
    return {"key": folder / "release", "allowed": folder / "allowed_signers"}


def client_config(port: int, user: str, key: Path, known_hosts: Path,
                  alias: str = HOST_ALIAS) -> str:
    """An ssh_config for `alias` on 127.0.0.1:port: this key only, this known_hosts only,
    never a prompt (what edge-ids' --ssh-config gets in every test)."""
    return f"""\
Host {alias}
    HostName 127.0.0.1
    Port {port}
    User {user}
    IdentityFile {key}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
"""

class SSHServer:
    def __init__(self, directory: Path):
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = directory / "host_key"
        host_public = keygen(self.host_key)
        client_public = keygen(directory / "client_key")
        (directory / "authorized_keys").write_text(client_public + "\n")
        self.known_hosts = directory / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_public}\n")
        (directory / "sshd_config").write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
AuthorizedKeysFile {directory}/authorized_keys
PidFile {directory}/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
""")
        self.config = directory / "ssh_config"
        self.config.write_text(client_config(self.port, getpass.getuser(),
                                             directory / "client_key", self.known_hosts))
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        self.log = directory / "sshd.log"
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", directory / "sshd_config"],
                                        stderr=open(self.log, "wb"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"sshd did not start: {self.log.read_text()}")

    def ssh_args(self) -> list[str]:
        """CLI options that point edge-ids at this server."""
        return ["--ssh-config", str(self.config), "--host", HOST_ALIAS]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
