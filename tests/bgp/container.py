"""rrwatch's RR host image (deploy/container), built and run with podman for the tests.

Container registries are out of reach from these machines, so the base is made here:
`debootstrap --variant=minbase bookworm`, put in podman's store by `podman import` (once: it
is kept by name) and given to the build as `--build-arg BASE`, in place of debian:bookworm-slim.
This machine reaches PyPI through a proxy that presents its own CA, so that base carries this
machine's CA certificates and tells pip to use the system's store: what a site's own base image
does. Podman runs containers here with runc and without default ulimits (a containers.conf of
the tests' own): crun fails on these VMs' cgroups.
"""

from __future__ import annotations

import glob
import os
import pathlib
import shutil
import subprocess
import time
from collections.abc import Sequence

import attrs

ROOT = pathlib.Path(__file__).parent.parent.parent
BASE = "localhost/rrwatch-test-base:bookworm"
IMAGE = "localhost/rrwatch-rr:test"
CONTAINERS_CONF = '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n'
PIP_CONF = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
LOCAL_CAS = "/usr/local/share/ca-certificates"


def missing() -> list[str]:
    """What this machine lacks to build and run the image; empty when it can."""
    out = ["root"] if os.geteuid() != 0 else []
    return out + [tool for tool in ("podman", "runc", "debootstrap") if not shutil.which(tool)]


@attrs.define
class Podman:
    """podman with the tests' containers.conf; `built` holds the seconds each build step took."""

    work: pathlib.Path
    built: dict[str, float] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        (self.work / "containers.conf").write_text(CONTAINERS_CONF)

    def __call__(self, *args: str, check: bool = True, timeout: float = 120
                 ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CONTAINERS_CONF": str(self.work / "containers.conf")}
        done = subprocess.run(["podman", *args], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and done.returncode:
            raise RuntimeError(f"podman {' '.join(args)}: {done.stderr.strip() or done.stdout}")
        return done

    def base(self) -> None:
        """The stand-in for debian:bookworm-slim, made unless podman already has it."""
        if self("image", "exists", BASE, check=False).returncode == 0:
            return
        started = time.monotonic()
        root = self.work / "bookworm"
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root),
                        "http://deb.debian.org/debian"], capture_output=True, check=True,
                       timeout=600)
        cas = root / LOCAL_CAS.lstrip("/")
        cas.mkdir(parents=True, exist_ok=True)
        for ca in glob.glob(os.path.join(LOCAL_CAS, "*.crt")):
            shutil.copy(ca, cas)
        (root / "etc/pip.conf").write_text(PIP_CONF)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):  # as slim images have it
            for path in glob.glob(str(root / cache / "*")):
                if os.path.isfile(path):
                    os.unlink(path)
        archive = self.work / "bookworm.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True)
        self("import", str(archive), BASE, timeout=300)
        shutil.rmtree(root)
        archive.unlink()
        self.built["base"] = time.monotonic() - started

    def build(self) -> None:
        """The image, from this checkout, as its Containerfile says to build it."""
        started = time.monotonic()
        self("build", "--network=host", "--build-arg", f"BASE={BASE}", "-f",
             str(ROOT / "deploy/container/Containerfile"), "-t", IMAGE, str(ROOT), timeout=900)
        self.built["image"] = time.monotonic() - started

    def run(self, name: str, env: dict[str, str], *, detach: bool, files: Sequence[str] = (),
            sockets: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
        """The image in a new container named `name` with the host's network, as seed 004 ran:
        `env` in its environment, the directories of `files` mounted read-only where they are,
        and `sockets` at /sockets, as a sidecar would share it. Without `detach`, until it
        exits."""
        args = ["run", "--name", name, "--network=host", "--detach" if detach else "--rm"]
        if sockets is not None:
            args += ["--volume", f"{sockets}:/sockets"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        for directory in sorted({os.path.dirname(path) for path in files}):
            args += ["--volume", f"{directory}:{directory}:ro"]
        return self(*args, IMAGE, check=detach)

    def size(self, image: str) -> int:
        return int(self("image", "inspect", "--format", "{{.Size}}", image).stdout)


@attrs.define
class Container:
    """One container of the image, started detached."""

    podman: Podman
    name: str
    socket: str  # BIRD's control socket, where the host sees it

    def signal(self, name: str) -> None:
        self.podman("kill", "--signal", name, self.name)

    def read(self, path: str) -> str | None:
        """A file in the container; None while it cannot be read."""
        done = self.podman("exec", self.name, "cat", path, check=False)
        return done.stdout if done.returncode == 0 else None

    def exec(self, *command: str) -> str:
        """What `command`, run in the container, prints; it must succeed."""
        return self.podman("exec", self.name, *command).stdout

    def logs(self) -> str:
        done = self.podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def running(self) -> bool:
        done = self.podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return done.stdout.strip() == "true"

    def terminate(self) -> int:
        """SIGTERM to the entrypoint, as `podman stop` sends it; the exit status."""
        self.signal("TERM")
        return self.wait()

    def wait(self) -> int:
        """The exit status, once the container has stopped."""
        return int(self.podman("wait", self.name, timeout=60).stdout.strip())

    def remove(self) -> None:
        self.podman("rm", "--force", "--time", "0", self.name, check=False)
