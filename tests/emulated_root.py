"""An emulated 64-bit Raspberry Pi OS root for the slow deploy test: Debian Bookworm arm64
(minbase + Python 3.11, as debootstrap fetches it), entered with chroot while binfmt_misc hands
aarch64 programs to qemu-aarch64-static (QEMU_CPU picks the core). TOOLCHAIN.md §4 has the
facts behind each step: extract with --keep-directory-symlink, give LiteRT an ARM
/proc/cpuinfo, never emulate with -cpu max."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

QEMU = "/usr/bin/qemu-aarch64-static"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_NAME = "edge-ids-aarch64"
# The aarch64 ELF magic and mask (qemu's qemu-binfmt-conf.sh); F: qemu is opened now, so it
# also runs inside the chroot.
BINFMT_RULE = (r":edge-ids-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00"
               r"\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff"
               rf"\xff\xff\xff\xfe\xff\xff\xff:{QEMU}:F")
PACKAGES = "python3.11,libpython3.11-stdlib,libstdc++6"
CPUINFO_BLOCK = ("processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid"
                 "\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
                 "CPU part\t: 0xd08\nCPU revision\t: 3\n\n")


def missing() -> str | None:
    """Why this machine cannot emulate, or None."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, binfmt_misc)"
    for tool in (QEMU, shutil.which("debootstrap")):
        if not tool or not Path(tool).is_file():
            return "needs qemu-user-static and debootstrap (apt-get install)"
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                       capture_output=True)
    if not (BINFMT / "register").exists():
        return "binfmt_misc is not available"
    return None


def register_binfmt() -> bool:
    """Hand aarch64 ELF files to qemu; True when this call registered the rule."""
    if (BINFMT / BINFMT_NAME).exists():
        return False
    (BINFMT / "register").write_text(BINFMT_RULE)
    return True


def unregister_binfmt() -> None:
    (BINFMT / BINFMT_NAME).write_text("-1")


def build_root(dest: Path, suite: str = "bookworm", log=print) -> Path:
    """A Debian arm64 root with Python 3.11, made once (about 30 s and 230 MB) and reused."""
    if (dest / "usr/bin/python3").exists():
        return dest
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log(f"debootstrap {suite} arm64 into {partial}")
    subprocess.run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase",
                    f"--include={PACKAGES}", suite, partial, "http://deb.debian.org/debian"],
                   check=True, capture_output=True)
    # --foreign unpacks only the base; unpack every fetched package (no second stage here).
    for deb in sorted((partial / "var/cache/apt/archives").glob("*.deb")):
        subprocess.run(f"dpkg-deb --fsys-tarfile {deb} | tar -x --keep-directory-symlink -f -",
                       shell=True, check=True, cwd=partial)
    (partial / "usr/bin/python3").symlink_to("python3.11")
    # What a Pi 4 shows; qemu 7.2 would otherwise pass the x86 host's through, and LiteRT's
    # CPU probe crashes on it.
    (partial / "proc").unlink()  # debootstrap --foreign leaves proc -> /proc (the host's)
    (partial / "proc").mkdir()
    (partial / "proc/cpuinfo").write_text("".join(CPUINFO_BLOCK.format(n=n) for n in range(4)))
    cpus = partial / "sys/devices/system/cpu"
    cpus.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (cpus / name).write_text("0-3\n")
    partial.rename(dest)
    return dest


def chroot(root: Path, argv: list[str], cpu: str, timeout: float = 1800
           ) -> subprocess.CompletedProcess:
    """Run an aarch64 program inside the root, emulating `cpu` (a profile's cpu field)."""
    if cpu == "max":
        raise ValueError("never emulate with -cpu max (TOOLCHAIN.md §4: wrong int8 results)")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "QEMU_CPU": cpu, "LANG": "C.UTF-8",
           "HOME": "/root"}
    chroot_program = shutil.which("chroot") or "/usr/sbin/chroot"
    return subprocess.run([chroot_program, root, *argv], env=env, capture_output=True,
                          text=True, timeout=timeout)
