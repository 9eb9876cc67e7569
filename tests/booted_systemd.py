"""A real systemd, booted as PID 1 of its own Debian Bookworm root, for the tests of the unit and
of deploy's systemd path. This machine has no systemd as PID 1; a device does.

The root is made once with debootstrap (systemd, dbus, python3, openssh-server, argus) and
cached in $EDGE_IDS_SYSTEMD_CACHE (default ~/.cache/edge-ids/systemd). Each boot puts a
throw-away overlay on it, so the cache stays clean, and boots it like a container manager does:

    unshare --pid --fork --mount --uts --ipc --cgroup   (the network stays shared: 127.0.0.1)
      mount --make-rprivate /; overlay on ROOT; a new /proc with /proc/sys read-only; /sys
      read-only with fresh cgroup mounts (rooted at a cgroup made for this boot); a small /dev
      of its own; tmpfs on /run and /tmp; pivot_root ROOT ROOT/oldroot; umount -l /oldroot
      exec /lib/systemd/systemd  (container=edge-ids-test; no CAP_SYS_MODULE / CAP_SYS_TIME)

NEVER boot systemd over this machine's own root: it runs systemd-tmpfiles (which emptied the
machine's shared /tmp when it was tried) and starts every enabled service. Read-only /proc/sys
and /sys keep it from changing the kernel's settings (systemd-sysctl, fs.nr_open) or triggering
udev; its own UTS namespace keeps the hostname; masked units keep gettys off the host's
consoles. Stopping = SIGKILL to the namespace's PID 1: every process and mount goes with the
namespace, and the cgroups made for the boot are removed.

sshd runs inside as a unit (edge-ids-test-sshd.service) on a free port of 127.0.0.1, with a host
key and a client key made for the boot; `ssh -F BOOT/ssh/ssh_config edge-systemd` logs in as root.
"""
from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import sshd

HOST_ALIAS = "edge-systemd"
MIRROR_HOST = "deb.debian.org"
PACKAGES = "systemd,systemd-sysv,dbus,python3,openssh-server,argus-server,argus-client"
# Units that would reach outside the root (the host's consoles, kernel settings, modules,
# clocks, kernel file systems) or only cost time; ssh.service would take the host's port 22.
MASKED = ("getty@tty1.service", "console-getty.service", "serial-getty@.service",
          "container-getty@.service", "ssh.service", "ssh.socket", "argus.service",
          "systemd-sysctl.service", "systemd-binfmt.service", "systemd-modules-load.service",
          "kmod-static-nodes.service", "proc-sys-fs-binfmt_misc.automount",
          "proc-sys-fs-binfmt_misc.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
          "sys-kernel-config.mount", "sys-fs-fuse-connections.mount", "hwclock.service",
          "systemd-pstore.service", "e2scrub_reap.service", "fstrim.timer", "apt-daily.timer",
          "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
          "systemd-tmpfiles-clean.timer", "systemd-networkd.service", "systemd-logind.service",
          "sshd.service", "cron.service", "logrotate.timer")
SSHD_UNIT = """\
[Unit]
Description=OpenSSH server for the edge-ids tests (127.0.0.1 only)
After=network.target

[Service]
ExecStart=/usr/sbin/sshd -D -e -f /etc/ssh/edge-ids-test/sshd_config
RuntimeDirectory=sshd
RuntimeDirectoryPreserve=yes

[Install]
WantedBy=multi-user.target
"""
# Dropped from the booted system's capability bounding set: it must not load kernel modules,
# set the clock, or poke at I/O ports and the kernel log of the machine it shares a kernel with.
DROPPED_CAPABILITIES = "-sys_module,-sys_time,-sys_rawio,-syslog,-wake_alarm"
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
PR_SET_PDEATHSIG = 1


def missing() -> str | None:
    """Why this machine cannot boot a test systemd, or None."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, namespaces, mounts, cgroups)"
    for tool in ("debootstrap", "unshare", "nsenter", "pivot_root", "setpriv"):
        if not shutil.which(tool):
            return f"needs {tool} (apt-get install debootstrap util-linux)"
    if not sshd.available():
        return "needs openssh-client on this machine"
    if not Path("/proc/filesystems").read_text().count("overlay"):
        subprocess.run(["modprobe", "overlay"], capture_output=True)
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "needs overlayfs"
    return None


def mirror_reachable(host: str = MIRROR_HOST) -> bool:
    try:
        socket.create_connection((host, 80), timeout=10).close()
        return True
    except OSError:
        return False


def build_root(dest: Path, suite: str = "bookworm", log=print) -> Path:
    """The cached root (about 3 minutes and 330 MB the first time; reused after)."""
    if (dest / ".edge-ids-complete").exists():
        return dest
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {suite} (minbase + {PACKAGES}) into {partial}")
    done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite,
                           partial, f"http://{MIRROR_HOST}/debian"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"debootstrap failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    configure_root(partial)
    partial.rename(dest)
    return dest


def configure_root(root: Path) -> None:
    """Mask what must not run, add the test sshd unit, and forget the build machine's name."""
    units = root / "etc/systemd/system"
    for unit in MASKED:
        (units / unit).unlink(missing_ok=True)
        (units / unit).symlink_to("/dev/null")
    for wants in units.glob("*.wants"):
        for link in wants.iterdir():
            if link.name in MASKED:
                link.unlink()
    (units / "edge-ids-test-sshd.service").write_text(SSHD_UNIT)
    wants = units / "multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / "edge-ids-test-sshd.service").unlink(missing_ok=True)
    (wants / "edge-ids-test-sshd.service").symlink_to("../edge-ids-test-sshd.service")
    (root / "etc/hostname").write_text("edge-ids-test\n")
    (root / "etc/machine-id").write_text("")  # a new one each boot
    (root / ".edge-ids-complete").write_text("")


def _cgroup_mounts() -> list[tuple[str, str, str]]:
    """(file system type, options, mount point) of the cgroup hierarchies mounted here."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, options = right.split()[:3]
        if fstype in ("cgroup", "cgroup2"):
            wanted = [o for o in options.split(",") if o not in ("rw", "ro")]
            if fstype == "cgroup" and all(o.startswith("name=") for o in wanted):
                wanted.insert(0, "none")  # a named hierarchy without controllers
            mounts.append((fstype, ",".join(wanted), left.split()[4]))
    return mounts


def _own_cgroup(fstype: str, options: str) -> str:
    """This process's cgroup in the hierarchy mounted with these options."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if fstype == "cgroup2" and number == "0":
            return path
        names = set(controllers.split(","))
        if fstype == "cgroup" and names and names <= set(options.split(",")) | {
                o for o in options.split(",") if o.startswith("name=")}:
            return path
    raise RuntimeError(f"no cgroup of this process in the {options} hierarchy")


class BootedSystemd:
    """One boot of the cached root. `run()`/`systemctl()` act inside it; `path()` reaches its
    files from here; `stop()` ends it (also at the end of a `with`)."""

    def __init__(self, cached_root: Path, work: Path, log=print):
        self.work = work
        self.tag = f"edge-ids-systemd-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        self.log = log
        self.cgroups: list[Path] = []
        self.pid: int | None = None
        self.process = None
        for name in ("upper", "overlay-work", "root", "ssh"):
            (work / name).mkdir(parents=True, exist_ok=True)
        self._prepare_ssh(work / "upper", work / "ssh")
        script = self._boot_script(cached_root, work)
        (work / "boot.sh").write_text(script)
        self._make_cgroups()
        self.console = work / "console.log"
        started = time.monotonic()
        with open(self.console, "wb") as console:
            self.process = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--uts",
                 "--ipc", "--cgroup", "setpriv", f"--bounding-set={DROPPED_CAPABILITIES}",
                 "--inh-caps=-all", "sh", str(work / "boot.sh")],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                preexec_fn=self._enter_cgroups, start_new_session=True)
        try:
            self.pid = self._find_pid1()
            self._wait_for(lambda: self.path("/run/systemd/private").exists(), 60,
                           "systemd did not open its control socket")
            state = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                             timeout=120).stdout.strip()
            if state not in ("running", "degraded"):
                raise RuntimeError(f"systemd says {state!r}; console:\n{self.console_text()}")
            if state == "degraded":
                failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
                log(f"booted systemd is degraded: {failed.strip()}")
            self.wait_port(self.ssh_port)
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - started

    # -- set-up ---------------------------------------------------------------------------------

    def _prepare_ssh(self, upper: Path, keys: Path) -> None:
        """A host key, a client key and sshd's config, written into the overlay's upper layer
        before boot; the client's ssh_config and known_hosts here."""
        self.ssh_port = sshd.free_port()
        host_public = sshd.keygen(keys / "host_key")
        client_public = sshd.keygen(keys / "client_key")
        etc = upper / "etc/ssh/edge-ids-test"
        etc.mkdir(parents=True, exist_ok=True)
        shutil.copy(keys / "host_key", etc / "host_key")
        (etc / "authorized_keys").write_text(client_public + "\n")
        (etc / "sshd_config").write_text(f"""\
Port {self.ssh_port}
ListenAddress 127.0.0.1
HostKey /etc/ssh/edge-ids-test/host_key
AuthorizedKeysFile /etc/ssh/edge-ids-test/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
Subsystem sftp internal-sftp
""")
        for path in etc.iterdir():
            path.chmod(0o600)
        self.known_hosts = keys / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.ssh_port} {host_public}\n")
        self.ssh_config = keys / "ssh_config"
        self.ssh_config.write_text(sshd.client_config(self.ssh_port, "root", keys / "client_key",
                                                      self.known_hosts, alias=HOST_ALIAS))

    def ssh_args(self) -> list[str]:
        """CLI options that point edge-ids deploy/status/rollback at this system."""
        return ["--ssh-config", str(self.ssh_config), "--host", HOST_ALIAS]

    def _boot_script(self, lower: Path, work: Path) -> str:
        q = shlex.quote
        root = work / "root"
        cgroups = [f"mkdir -p {q(mount[1:])}\nmount -t {fstype} "
                   f"{'-o ' + options if options else ''} {fstype} {q(mount[1:])}"
                   for fstype, options, mount in _cgroup_mounts()
                   if mount.startswith("/sys/fs/cgroup")]
        tmpfs_cgroup = all(m != "/sys/fs/cgroup" for _, _, m in _cgroup_mounts())  # v1 or hybrid
        devices = "\n".join(f"touch dev/{d}\nmount --bind /dev/{d} dev/{d}" for d in DEVICES)
        return f"""\
set -eu
mount --make-rprivate /
mount -t overlay overlay -o lowerdir={q(str(lower))},upperdir={q(str(work / 'upper'))},\
workdir={q(str(work / 'overlay-work'))} {q(str(root))}
cd {q(str(root))}
mount -t proc proc proc
mount --bind proc/sys proc/sys
mount -o remount,bind,ro proc/sys
if [ -e proc/sysrq-trigger ]; then
    mount --bind proc/sysrq-trigger proc/sysrq-trigger
    mount -o remount,bind,ro proc/sysrq-trigger
fi
mount --bind /sys sys
mount -o remount,bind,ro sys
{'mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup sys/fs/cgroup' if tmpfs_cgroup else ''}
{chr(10).join(cgroups)}
mount -t tmpfs -o mode=755,nosuid dev dev
{devices}
mkdir -p dev/pts dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts dev/pts
ln -s pts/ptmx dev/ptmx
ln -s /proc/self/fd dev/fd
mount -t tmpfs -o mode=1777,nosuid,nodev shm dev/shm
mount -t tmpfs -o mode=755,nosuid,nodev run run
mount -t tmpfs -o mode=1777,nosuid,nodev tmp tmp
mkdir -p oldroot
pivot_root . oldroot
cd /
umount -l /oldroot
rmdir /oldroot
exec env -i container=edge-ids-test PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd
"""

    def _make_cgroups(self) -> None:
        """A cgroup for this boot under our own in each hierarchy; systemd, in its own cgroup
        namespace, sees it as the root and makes its slices under it."""
        for fstype, options, mount in _cgroup_mounts():
            path = Path(mount + _own_cgroup(fstype, options)) / self.tag
            path.mkdir()
            self.cgroups.append(path)
            if "cpuset" in options.split(","):  # a v1 cpuset needs its CPUs and memory nodes
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (path / name).write_text((path.parent / name).read_text())

    def _enter_cgroups(self) -> None:
        """(In the child, before unshare runs.) Into this boot's cgroups; and if the test
        process dies, unshare gets SIGKILL, and with --kill-child so does the booted system."""
        for path in self.cgroups:
            (path / "cgroup.procs").write_text(str(os.getpid()))
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def _find_pid1(self, timeout: float = 30) -> int:
        """The host's pid of the namespace's PID 1 (unshare's only child), once it is systemd."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the boot script failed:\n{self.console_text()}")
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            if pids and Path(f"/proc/{pids[0]}/comm").read_text().strip() == "systemd":
                return int(pids[0])
            time.sleep(0.05)
        raise RuntimeError(f"systemd did not start:\n{self.console_text()}")

    def _wait_for(self, condition, timeout: float, failure: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{failure}; console:\n{self.console_text()}")
            time.sleep(0.05)

    # -- use ------------------------------------------------------------------------------------

    def run(self, argv: list[str], check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        """A command inside the booted system (its mounts, processes and host name)."""
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "--",
                                 *argv], capture_output=True, text=True, timeout=timeout,
                                input=input, stdin=None if input is not None else
                                subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} failed ({result.returncode}): "
                               f"{result.stderr or result.stdout}")
        return result

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["systemctl", *args], check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", unit, "-p", ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, lines: int = 50) -> str:
        return self.run(["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-q"],
                        check=False).stdout

    def path(self, inside: str) -> Path:
        """A path of the booted system, reached from here."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def console_text(self) -> str:
        return self.console.read_text(errors="replace")[-4000:] if self.console.exists() else ""

    @staticmethod
    def wait_port(port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")

    # -- end ------------------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGKILL to the namespace's PID 1 ends every process in it; its mounts go with the
        namespace; then the boot's cgroups are removed (deepest first)."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process is not None:
            if self.pid is None and self.process.poll() is None:
                self.process.kill()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for top in self.cgroups:
            deadline = time.monotonic() + 15
            while top.exists() and time.monotonic() < deadline:
                try:
                    for directory, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                        os.rmdir(directory)
                except OSError:
                    time.sleep(0.1)  # processes still leaving
        self.cgroups = []
        self.pid = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
