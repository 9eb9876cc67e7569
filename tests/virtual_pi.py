"""A whole Raspberry-Pi-like machine in emulation: Debian Trixie arm64 with its own kernel and
systemd as PID 1, under qemu-system-aarch64 (software emulation, a Cortex-A72 like the Pi 4's),
reached over SSH on a loopback port. A test fixture and a developer tool:

    python tests/virtual_pi.py build     # build (or find) the cached image
    python tests/virtual_pi.py boot      # boot it, print the ssh command, Ctrl-C powers it off

The image is built once with mmdebstrap (about 15 min on 2 cores: its packages are configured
under qemu-user-static's aarch64 emulation, registered in binfmt_misc) and cached in
~/.cache/edge-ids/virtual-pi/<recipe hash>/ (rebuilt when RECIPE changes): the kernel, the
initrd, a 3 GB ext4 disk image made with mkfs.ext4 -d (no loop mount), and an SSH key and host
key for it. Each boot runs on a copy-on-write overlay of the disk (qemu-img), so the cached image
stays as built. The emulator is the caller's child; `stop` powers the guest off and kills the
emulator by its PID if it is still there, so nothing is left running.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-ids" / \
    "virtual-pi"
MIRROR = "http://deb.debian.org/debian"
RECIPE = {
    "suite": "trixie", "arch": "arm64", "variant": "apt", "disk": "3G",
    "packages": ["systemd-sysv", "udev", "openssh-server", "python3", "python3-venv",
                 "linux-image-arm64", "iproute2", "kmod", "ifupdown", "isc-dhcp-client",
                 "procps", "initramfs-tools", "argus-server", "argus-client", "tcpreplay",
                 # a standard Debian / Raspberry Pi OS install has it: it names the unit's
                 # DynamicUser, which ssh-keygen (signature checks) needs (getpwuid)
                 "libnss-systemd"],
    "cmdline": "root=/dev/vda rw console=ttyAMA0 net.ifnames=0",
    "qemu": ["-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "2048"],
    "version": 2,
}
TOOLS = {"qemu-system-aarch64": "qemu-system-arm", "qemu-img": "qemu-utils",
         "mmdebstrap": "mmdebstrap", "qemu-aarch64-static": "qemu-user-static",
         "mkfs.ext4": "e2fsprogs"}
BINFMT = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
ALIAS = "virtual-pi"  # the host-key alias in known_hosts, whatever port a boot uses


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]


def image_dir() -> Path:
    return CACHE / recipe_hash()


def cached() -> bool:
    return (image_dir() / "ready").is_file()


def missing() -> str | None:
    """Why this machine cannot build or boot the virtual Pi (a skip reason), or None."""
    absent = sorted({pkg for tool, pkg in TOOLS.items()
                     if not shutil.which(tool, path=os.environ["PATH"] + ":/usr/sbin:/sbin")})
    if absent:
        return f"needs apt-get install {' '.join(absent)}"
    if os.geteuid() != 0 and not cached():
        return "building the image needs root (mmdebstrap, binfmt_misc)"
    return None


def mirror_reachable(timeout: float = 5) -> bool:
    try:
        with socket.create_connection(("deb.debian.org", 80), timeout=timeout):
            return True
    except OSError:
        return False


def register_binfmt() -> None:
    """qemu-user-static's aarch64 interpreter in binfmt_misc, so that mmdebstrap can run the
    guest's package scripts (this machine does not mount binfmt_misc by itself)."""
    root = Path("/proc/sys/fs/binfmt_misc")
    if not (root / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(root)], check=True)
    if not (root / "qemu-aarch64").exists():
        line = next(l for l in BINFMT.read_text().splitlines() if l.startswith(":"))
        (root / "register").write_text(line)


def build(echo=print) -> Path:
    """The cached image's folder, built first if needed (about 15 min)."""
    final = image_dir()
    if cached():
        return final
    if not mirror_reachable():
        raise RuntimeError(f"no cached virtual Pi image and {MIRROR} cannot be reached")
    register_binfmt()
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
    try:
        root, started = work / "root", time.monotonic()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "virtual-pi",
                        "-f", str(work / "id_ed25519")], check=True)
        authorized = (work / "id_ed25519.pub").read_text()
        hook = (f'mkdir -p "$1/root/.ssh" && chmod 700 "$1/root/.ssh" && '
                f'echo "{authorized.strip()}" > "$1/root/.ssh/authorized_keys" && '
                f'printf "/dev/vda / ext4 defaults 0 1\\n" > "$1/etc/fstab" && '
                f'printf "auto lo\\niface lo inet loopback\\nallow-hotplug eth0\\n'
                f'iface eth0 inet dhcp\\n" > "$1/etc/network/interfaces" && '
                f'echo virtual-pi > "$1/etc/hostname"')
        echo(f"virtual Pi: mmdebstrap {RECIPE['suite']} {RECIPE['arch']} (about 15 min)")
        subprocess.run(["mmdebstrap", f"--arch={RECIPE['arch']}", f"--variant={RECIPE['variant']}",
                        f"--include={','.join(RECIPE['packages'])}",
                        f"--customize-hook={hook}", RECIPE["suite"], str(root), MIRROR],
                       check=True, stdout=subprocess.DEVNULL)
        boot = root / "boot"
        shutil.copy(max(boot.glob("vmlinuz-*")), work / "vmlinuz")
        shutil.copy(max(boot.glob("initrd.img-*")), work / "initrd.img")
        shutil.copy(root / "etc" / "ssh" / "ssh_host_ed25519_key.pub", work / "host_key.pub")
        disk = work / "disk.img"
        subprocess.run(["truncate", "-s", RECIPE["disk"], str(disk)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(disk)], check=True)
        shutil.rmtree(root)
        (work / "recipe.json").write_text(json.dumps(RECIPE, indent=1) + "\n")
        (work / "ready").write_text(f"{time.monotonic() - started:.0f} s\n")
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
        echo(f"virtual Pi: image built in {time.monotonic() - started:.0f} s: {final}")
        return final
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VirtualPi:
    """One boot of the cached image; `with VirtualPi(folder) as pi:` boots it, waits for SSH,
    and always stops it (poweroff, then the emulator's PID is killed)."""

    def __init__(self, work: Path, image: Path | None = None, echo=print):
        self.image = image or build(echo)
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.echo = echo
        self.process: subprocess.Popen | None = None
        self.ssh_config = self.work / "ssh_config"
        known = self.known_hosts = self.work / "known_hosts"
        kind, key = (self.image / "host_key.pub").read_text().split()[:2]
        known.write_text(f"{ALIAS} {kind} {key}\n")
        self.ssh_config.write_text(
            f"Host vpi\n  HostName 127.0.0.1\n  Port {self.port}\n  User root\n"
            f"  IdentityFile {self.image / 'id_ed25519'}\n  IdentitiesOnly yes\n"
            f"  HostKeyAlias {ALIAS}\n  UserKnownHostsFile {known}\n"
            f"  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
            f"  LogLevel ERROR\n  ConnectTimeout 10\n  ServerAliveInterval 15\n")
        os.chmod(self.image / "id_ed25519", 0o600)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 600) -> float:
        overlay = self.work / "overlay.qcow2"
        overlay.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b",
                        str(self.image / "disk.img"), "-F", "raw", str(overlay)], check=True)
        self.console = self.work / "console.log"
        started = time.monotonic()
        self.process = subprocess.Popen(
            ["qemu-system-aarch64", *RECIPE["qemu"], "-kernel", str(self.image / "vmlinuz"),
             "-initrd", str(self.image / "initrd.img"), "-append", RECIPE["cmdline"],
             "-drive", f"file={overlay},if=virtio,format=qcow2",
             "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
             "-device", "virtio-net-pci,netdev=n0", "-nographic", "-monitor", "none",
             "-serial", f"file:{self.console}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        atexit.register(self.kill)  # a backstop: even an interrupted test leaves no emulator
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"qemu exited {self.process.returncode}: "
                                   f"{self.process.stderr.read().decode()[-800:]}")
            if self.ssh("true", timeout=20, check=False).returncode == 0:
                self.boot_seconds = time.monotonic() - started
                self.echo(f"virtual Pi: SSH up after {self.boot_seconds:.0f} s (port "
                          f"{self.port})")
                return self.boot_seconds
            time.sleep(3)
        self.stop()
        raise RuntimeError(f"the virtual Pi did not answer SSH in {timeout:.0f} s; console: "
                           f"{self.console.read_text()[-2000:] if self.console.exists() else ''}")

    def ssh(self, command: str, timeout: float = 600, check: bool = True,
            input: bytes | None = None) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(["ssh", "-F", str(self.ssh_config), "vpi", command],
                                  capture_output=True, timeout=timeout, input=input, check=False)
        except subprocess.TimeoutExpired:  # (while booting: qemu takes the port before sshd)
            if check:
                raise
            return subprocess.CompletedProcess(command, 255, "", f"timed out after {timeout} s")
        if check and done.returncode != 0:
            raise RuntimeError(f"ssh vpi {command!r} exited {done.returncode}: "
                               f"{done.stderr.decode(errors='replace')[-1500:]}")
        return subprocess.CompletedProcess(done.args, done.returncode,
                                           done.stdout.decode(errors="replace"),
                                           done.stderr.decode(errors="replace"))

    def journal(self, unit: str, lines: int = 40) -> str:
        """The unit's last journal lines (what a failed wait shows, as BootedSystemd's)."""
        return self.ssh(f"journalctl -u {unit} -n {lines} --no-pager", check=False).stdout

    def copy(self, source: Path, dest: str) -> None:
        subprocess.run(["scp", "-q", "-F", str(self.ssh_config), str(source), f"vpi:{dest}"],
                       check=True, timeout=600)

    def stop(self, timeout: float = 90) -> None:
        """Power the guest off; kill the emulator (its whole session) if it is still there."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.ssh("systemctl poweroff", timeout=20, check=False)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self.kill()

    def kill(self) -> None:
        """Kill the emulator's session by its PID (only ours: it was started here)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("build", "boot"):
        print(__doc__)
        return 2
    reason = missing()
    if reason:
        print(f"virtual Pi: {reason}")
        return 1
    image = build()
    if argv[0] == "boot":
        with VirtualPi(Path(tempfile.mkdtemp(prefix="virtual-pi-")), image) as pi:
            print(f"ssh -F {pi.ssh_config} vpi        (Ctrl-C powers it off)")
            try:
                pi.process.wait()
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
