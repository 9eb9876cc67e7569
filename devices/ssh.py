"""The target over the system's OpenSSH client, so that the user's ~/.ssh/config, keys, agent
and known_hosts apply. Host-key checking is never turned off: a key that does not match
known_hosts (or an unknown host with no terminal to ask on) stops everything with advice.
One master connection is shared by every command (ControlMaster), so a passphrase or a
first-contact prompt is answered once."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

SSH_FAILED = 255  # ssh's own exit status: the connection failed, not the remote command


class SSHError(RuntimeError):
    """The connection failed (not a remote command's own failure)."""


class HostKeyError(SSHError):
    """The target's host key is not the one known_hosts holds, or it is not known at all."""


def ssh_command(config: Path | None = None, options: tuple[str, ...] = ()) -> list[str]:
    """ssh as the user would type it: their config file and -o options, nothing weakened."""
    return ["ssh"] + (["-F", str(config)] if config else []) + [
        a for option in options for a in ("-o", option)]


class Remote:
    def __init__(self, host: str, config: Path | None = None, options: tuple[str, ...] = ()):
        if shutil.which("ssh") is None:
            raise SSHError("no `ssh` client on this host (Debian/Ubuntu: apt install "
                           "openssh-client)")
        self.host = host
        self._control = tempfile.mkdtemp(prefix="edge-ids-ssh-")
        self.base = ssh_command(config, options) + [
            "-o", "ControlMaster=auto", "-o", f"ControlPath={self._control}/%C",
            "-o", "ControlPersist=120"]

    def argv(self, command: str) -> list[str]:
        return self.base + [self.host, "--", command]

    def run(self, command: str, input: str | bytes | None = None, check: bool = True,
            timeout: float | None = 600) -> subprocess.CompletedProcess:
        """Run a shell command on the target; SSHError when ssh itself fails."""
        result = subprocess.run(self.argv(command), input=input, capture_output=True,
                                stdin=None if input is not None else subprocess.DEVNULL,
                                text=not isinstance(input, bytes), timeout=timeout)
        self._raise_for_connection(result.returncode, _text(result.stderr))
        if check and result.returncode != 0:
            raise SSHError(f"`{command}` failed on {self.host} (exit {result.returncode}): "
                           f"{_text(result.stderr).strip()[-800:]}")
        return result

    def stream(self, command: str, on_line: Callable[[str], None]) -> int:
        """Run a command, handing each line of its output to `on_line` as it arrives."""
        process = subprocess.Popen(self.argv(command), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in process.stdout:
            lines.append(line)
            on_line(line.rstrip("\n"))
        code = process.wait()
        self._raise_for_connection(code, "".join(lines[-20:]))
        return code

    def upload(self, local_dir: Path, remote_dir: str) -> None:
        """Copy a directory into remote_dir (which must exist) as one tar stream over ssh."""
        process = subprocess.Popen(
            self.argv(f"tar -xzf - -C {shlex.quote(remote_dir)}"), stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=process.stdin, mode="w|gz") as tar:
                tar.add(local_dir, arcname=local_dir.name)
            process.stdin.close()
        except BrokenPipeError:
            pass
        stderr = process.stderr.read().decode(errors="replace")
        code = process.wait()
        self._raise_for_connection(code, stderr)
        if code != 0:
            raise SSHError(f"copying {local_dir} to {self.host}:{remote_dir} failed: "
                           f"{stderr.strip()[-800:]}")

    def close(self) -> None:
        subprocess.run(self.base + ["-O", "exit", self.host], capture_output=True,
                       stdin=subprocess.DEVNULL)
        shutil.rmtree(self._control, ignore_errors=True)

    def _raise_for_connection(self, code: int, stderr: str) -> None:
        if code != SSH_FAILED:
            return
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            raise HostKeyError(
                f"the host key of {self.host} does not match your known_hosts: someone may be "
                f"intercepting the connection, or the device was reinstalled. Nothing was "
                f"changed. edge-ids never turns host-key checking off; if you reinstalled the "
                f"device, check its new key's fingerprint, remove the old one with "
                f"`ssh-keygen -R <host>` and connect once with `ssh {self.host}`.")
        if "Host key verification failed" in stderr:
            raise HostKeyError(
                f"{self.host}'s host key is not in your known_hosts and there was no terminal "
                f"to ask on. Connect once with `ssh {self.host}`, check the fingerprint, "
                f"accept it, then deploy again.")
        raise SSHError(f"cannot reach {self.host} over ssh: "
                       f"{stderr.strip().splitlines()[-1] if stderr.strip() else 'no message'}")


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""
