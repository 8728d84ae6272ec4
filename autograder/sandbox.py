"""Run untrusted code under bubblewrap.

A sandboxed process sees the Python environment read-only, the folders it is
given read-write, a private /tmp, and nothing else: no network, no course
files, no gradebook, no other students. It runs as an unprivileged uid (one
per grading process) with limits on address space, CPU time, processes and
file size.

Each grading process keeps one such sandbox, a ``ForkServer`` that has imported
torch once (``autograder/forkserver.py``). Every notebook kernel and every
verification worker is a fresh fork of it, started in an emptied sandbox: no
process, file or IPC object of an earlier child survives. ``SandboxedKernelManager``
starts Jupyter kernels that way, talking to the grader over Unix sockets (the
sandbox's network namespace is empty).
"""
import asyncio
import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from queue import Empty

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError
from nbgrader.preprocessors import Execute
from nbformat.v4 import new_output
from traitlets import Bool, Integer, Type, default

UID_BASE = 1_000_000  # no account has a uid this high


def own_uid() -> int:
    """The uid for this process's sandboxes: UID_BASE + pid, so that no two live
    graders, even of concurrent grading runs, share a uid and its process limit."""
    return UID_BASE + os.getpid()


@dataclass(frozen=True)
class Limits:
    memory: int = 6 * 2**30      # address space per process, bytes
    cpu_seconds: int = 900       # per process
    processes: int = 64          # processes and threads of the sandbox's uid
    file_size: int = 64 * 2**20  # largest file it may write, bytes
    tmp_size: int = 256 * 2**20  # its private /tmp, and its /dev/shm, bytes
    work_size: int = 512 * 2**20  # the folder it may write (its children's working folders), bytes


def _readable_roots() -> list[Path]:
    """The Python environment: the venv, its base interpreter, the system libraries."""
    roots = {Path("/usr"), Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    return sorted(p for p in roots if p.is_dir() and not any(p.is_relative_to(r) and p != r
                                                             for r in roots))


def _venv_alias() -> list[Path]:
    """The venv's path as the interpreter was started, when a symlink leads to it (`.venv` linked to
    a venv elsewhere): kernels and workers run ``sys.executable``, so that path must exist too."""
    prefix = Path(sys.prefix).absolute()
    return [prefix] if prefix != prefix.resolve() else []


def _dirs_above(paths) -> list[Path]:
    above = {parent for p in paths for parent in p.parents if parent != Path("/")}
    return sorted(above, key=lambda p: len(p.parts))


def command(argv: list[str], *, uid: int, cwd: Path, writable: dict | None = None,
            readonly: list[Path] = (), limits: Limits = Limits()) -> list[str]:
    """The bwrap command line that runs ``argv`` in a sandbox as ``uid``.

    ``writable`` maps folders of the host to the paths the sandbox sees them at;
    ``readonly`` folders are seen read-only at their own paths. Nothing the
    grader later writes or reads back as root may live in a writable folder:
    the sandbox could have swapped it for a symlink.
    """
    system = _readable_roots()
    readonly = [Path(p).resolve() for p in readonly]
    writable = {Path(host).resolve(): Path(inside) for host, inside in (writable or {}).items()}
    # Jupyter interrupts a kernel by signalling its process group: bwrap itself
    # must survive SIGINT (the kernel inside sets its own handler).
    bwrap = ["env", "--ignore-signal=INT", "bwrap", "--die-with-parent", "--unshare-pid",
             "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--tmpfs", "/"]
    for name in ("bin", "lib", "lib64", "sbin"):
        if Path(f"/{name}").is_symlink():
            bwrap += ["--symlink", os.readlink(f"/{name}"), f"/{name}"]
    bwrap += ["--dev", "/dev", "--perms", "1777", "--size", str(limits.tmp_size), "--tmpfs",
              "/dev/shm", "--proc", "/proc",
              "--perms", "1777", "--size", str(limits.tmp_size), "--tmpfs", "/tmp"]
    # after /tmp: the environment and the folders may lie under it
    alias = _venv_alias()
    for directory in _dirs_above(system + alias + readonly + list(writable.values())):
        if not any(directory.is_relative_to(r) for r in system):
            bwrap += ["--perms", "0755", "--dir", str(directory)]
    for path in system + readonly:
        bwrap += ["--ro-bind", str(path), str(path)]
    for path in alias:
        bwrap += ["--symlink", str(path.resolve()), str(path)]
    if Path("/etc/fonts").is_dir():
        bwrap += ["--ro-bind", "/etc/fonts", "/etc/fonts"]
    for host, inside in writable.items():
        bwrap += ["--bind", str(host), str(inside)]
    bwrap += ["--chdir", str(Path(cwd).resolve()), "--clearenv"]
    environment = {"HOME": "/tmp", "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/bin:/bin",
                   "LANG": "C.UTF-8", "MPLCONFIGDIR": "/tmp", "OMP_NUM_THREADS": "1",
                   "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    for key, value in environment.items():
        bwrap += ["--setenv", key, value]
    prlimit = ["prlimit", f"--as={limits.memory}", f"--cpu={limits.cpu_seconds}",
               f"--nproc={limits.processes}", f"--fsize={limits.file_size}", "--core=0", "--"]
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
               "--no-new-privs", "--"]
    return bwrap + ["--"] + prlimit + setpriv + list(argv)


def give(path: Path, uid: int) -> None:
    """Hand ``path`` (recursively) to ``uid``, so a sandbox running as it can write there."""
    for directory, _, files in os.walk(path):
        os.chown(directory, uid, uid)
        for name in files:
            os.chown(os.path.join(directory, name), uid, uid, follow_symlinks=False)


def unavailable() -> str | None:
    """Why sandboxes cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "the grader must run as root to start sandboxes as unprivileged uids"
    missing = [tool for tool in ("bwrap", "prlimit", "setpriv") if not shutil.which(tool)]
    if missing:
        return (f"{', '.join(missing)} not found: `make grade` run as root installs it "
                f"(or apt-get install bubblewrap util-linux)")
    with tempfile.TemporaryDirectory() as tmp:
        probe = command([sys.executable, "-c", "print('ok')"], uid=own_uid(), cwd=Path(tmp),
                        readonly=[Path(tmp)])
        result = subprocess.run(probe, capture_output=True, text=True)
    if result.stdout.strip() != "ok":
        return (f"bwrap cannot start a sandbox here: {result.stderr.strip()[:300]} "
                f"(python: {sys.executable})")
    return None


SPOOL_PREFIX, MOUNT_SOURCE = "dlbb-forkserver-", "dlbb-sandbox"


def _unmount_orphans() -> None:
    """Unmount and remove the folders of fork servers whose grader died without closing them."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.startswith(MOUNT_SOURCE + " ")]
    for point in points:
        found = re.search(rf"/{SPOOL_PREFIX}(\d+)-[^/]+/rw$", point)
        if found and not Path(f"/proc/{found[1]}").exists():
            subprocess.run(["umount", "--lazy", point], capture_output=True)
            shutil.rmtree(Path(point).parent, ignore_errors=True)


class ForkServerError(RuntimeError):
    """The fork server died, hung or refused: it is replaced on the next request."""


class ForkServer:
    """The grader's end of ``autograder/forkserver.py``: a warm sandbox that forks kernels
    and verification workers.

    Its spool holds ``code/`` (the server's scripts) and ``ro/``, which the sandbox sees
    read-only, and ``rw/``, the only folder it may write. Starting a child takes three
    steps: ``empty()`` the sandbox, make the child's folders with ``folder()``, fork it
    with ``kernel()`` or ``worker()``. ``sandboxed=False`` runs it unconfined: only for
    code you trust.
    """
    HERE = Path(__file__).resolve().parent
    START_TIMEOUT = 300   # s: importing torch on a loaded machine
    REQUEST_TIMEOUT = 30  # s: emptying the sandbox and forking

    def __init__(self, *, uid: int, sandboxed: bool, limits: Limits = Limits()):
        self.uid, self.sandboxed = uid, sandboxed
        self.spool = Path(tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-"))
        for name in ("code", "ro", "rw"):
            (self.spool / name).mkdir()
        for script in ("forkserver.py", "worker.py"):
            shutil.copyfile(self.HERE / script, self.spool / "code" / script)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, "-I", str(self.spool / "code" / "forkserver.py"),
                "1" if sandboxed else "0", str(theirs.fileno()), str(self.spool)]
        if sandboxed:  # what its children write is bounded like its /tmp
            _unmount_orphans()
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={limits.work_size},mode=0755",
                            MOUNT_SOURCE, str(self.spool / "rw")], check=True)
            give(self.spool / "rw", uid)
            argv = command(argv, uid=uid, cwd=self.spool / "rw", limits=limits,
                           readonly=[self.spool / "code", self.spool / "ro"],
                           writable={self.spool / "rw": self.spool / "rw"})
        # one thread per fork, as in a sandbox (whose environment command() sets): forking
        # a process that runs other threads is unsafe
        self.process = subprocess.Popen(argv, pass_fds=[theirs.fileno()], start_new_session=True,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL,
                                        env={**os.environ, "OMP_NUM_THREADS": "1",
                                             "MKL_NUM_THREADS": "1"})
        theirs.close()
        self.sock, self.lock = ours, threading.Lock()
        try:
            self._receive(self.START_TIMEOUT)
        except ForkServerError:
            self.close()
            raise

    def alive(self) -> bool:
        return self.process.poll() is None

    def empty(self) -> None:
        """Leave nothing of earlier children: no process, no file they wrote, no IPC object."""
        self.request({"op": "empty"})
        for folder in (self.spool / "ro").iterdir():
            shutil.rmtree(folder)

    def folder(self, readonly: bool = False) -> Path:
        """A new folder for a child: read-only to the sandbox, or its to write."""
        path = Path(tempfile.mkdtemp(dir=self.spool / ("ro" if readonly else "rw")))
        if readonly:
            path.chmod(0o755)
        elif self.sandboxed:
            give(path, self.uid)
        return path

    def kernel(self, argv: list[str], cwd: Path, env: dict[str, str]) -> "Forked":
        """An IPython kernel: ``argv`` as ipykernel's launcher gets it (``-m ipykernel_launcher ...``),
        given the variables of ``env`` that nbgrader sets (``NBGRADER_EXECUTION`` and the like)."""
        if argv[1:3] != ["-m", "ipykernel_launcher"]:
            raise ValueError(f"not an ipykernel command: {argv[:3]}")
        nbgrader = {k: v for k, v in env.items() if k.startswith("NBGRADER_")}
        return Forked(self, self.request({"op": "kernel", "argv": argv[3:], "cwd": str(cwd),
                                          "env": nbgrader})["pid"])

    def worker(self, argv: list[str], cwd: Path, stdin: int, stdout: int) -> "Forked":
        """A verification worker (``worker.py``'s ``main`` with ``argv``) on the pipes given."""
        reply = self.request({"op": "worker", "argv": argv, "cwd": str(cwd)}, [stdin, stdout])
        return Forked(self, reply["pid"])

    def step_optimizer(self) -> None:
        """Import, once, what a process's first optimizer step imports (seconds of torch._dynamo),
        so that no child of a chapter that trains pays it again."""
        self.request({"op": "step_optimizer"})

    def request(self, message: dict, fds: list[int] = ()) -> dict:
        with self.lock:
            try:
                socket.send_fds(self.sock, [json.dumps(message).encode()], list(fds))
            except OSError:
                self.close()
                raise ForkServerError("the fork server exited") from None
            reply = self._receive(self.REQUEST_TIMEOUT)
        if "error" in reply:
            self.close()
            raise ForkServerError(f"the fork server failed: {reply['error']}")
        return reply

    def _receive(self, timeout: float) -> dict:
        self.sock.settimeout(timeout)
        try:
            message = self.sock.recv(1 << 16)
        except OSError:  # socket.timeout too
            message = b""
        if not message:
            self.close()
            raise ForkServerError(f"the fork server exited or gave no answer within {timeout} s")
        return json.loads(message)

    def close(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.sock.close()
        if self.sandboxed:
            subprocess.run(["umount", "--lazy", str(self.spool / "rw")], capture_output=True)
        shutil.rmtree(self.spool, ignore_errors=True)


class Forked:
    """A child of a fork server, with the part of ``subprocess.Popen`` that jupyter_client's
    provisioner uses. Its pid is the sandbox's: only the server can signal it."""
    stdin = stdout = stderr = None

    def __init__(self, server: ForkServer, pid: int):
        self.server, self.pid, self.returncode = server, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = self.server.request({"op": "poll", "pid": self.pid})["returncode"]
            except ForkServerError:
                self.returncode = -signal.SIGKILL
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"fork server child {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None and self.server.alive():
            try:
                self.server.request({"op": "signal", "pid": self.pid, "signum": int(signum)})
            except ForkServerError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


_servers: dict[tuple[int, bool], ForkServer] = {}


def fork_server(uid: int, sandboxed: bool) -> ForkServer:
    """This process's fork server for ``uid``, started (again) when it is not running."""
    server = _servers.get((uid, sandboxed))
    if server is None or not server.alive():
        if server is not None:
            server.close()
        server = _servers[uid, sandboxed] = ForkServer(uid=uid, sandboxed=sandboxed)
    return server


@atexit.register
def _close_servers() -> None:
    for server in _servers.values():
        server.close()


class ReadyKernelClient(AsyncKernelClient):
    """jupyter_client's client without the last step of its wait for the kernel: reading
    IOPub until it has been quiet for 0.2 s, which idled every notebook that long. nbclient
    reads only the IOPub messages of the request it waits on, so what is left there is
    harmless; one message on IOPub still shows that it is connected.

    Its sockets retry a refused connection after 10-19 ms, not ZeroMQ's 100-199: the client
    connects as the kernel is forked, before the kernel listens."""

    @default("context")
    def _context_default(self):
        context = super()._context_default()
        context.setsockopt(zmq.RECONNECT_IVL, 10)
        return context

    async def _async_wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while time.monotonic() < deadline:
            self.kernel_info()
            try:
                reply = await self.shell_channel.get_msg(timeout=1)
                if reply["msg_type"] == "kernel_info_reply":
                    await self.iopub_channel.get_msg(timeout=0.2)
                    self._handle_kernel_info_reply(reply)
                    return
            except Empty:
                pass
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
        raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")

    wait_for_ready = _async_wait_for_ready


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel forked by the grading process's fork server, in its sandbox.

    The kernel talks over Unix sockets in a private run folder. Its working
    directory is a scratch copy of the notebook's folder: nbgrader later writes
    the graded notebook into the real folder as root, which the kernel therefore
    never holds. ``confined=False`` forks it from an unconfined fork server: a fresh
    kernel with torch already imported, for notebooks you trust (the course's own).
    """
    uid = Integer(help="uid the kernel runs as (default: own_uid())").tag(config=True)
    confined = Bool(True, help="run the kernel in the sandbox").tag(config=True)
    client_factory = Type(ReadyKernelClient)

    @default("uid")
    def _uid_default(self):
        return own_uid()

    async def _async_pre_start_kernel(self, **kw):
        self._server = fork_server(self.uid, sandboxed=self.confined)
        self._server.empty()
        self._run_dir = self._server.folder()
        self._cwd = Path(kw.get("cwd") or os.getcwd())
        self.transport = "ipc"
        self.ip = str(self._run_dir / "kernel")
        self.connection_file = str(self._run_dir / "kernel.json")
        return await super()._async_pre_start_kernel(**kw)

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        scratch = self._run_dir / "cwd"
        shutil.copytree(self._cwd, scratch, symlinks=True)
        if self.confined:
            give(self._run_dir, self.uid)
        provisioner = self.provisioner
        provisioner.process = self._server.kernel(kernel_cmd, cwd=scratch, env=kw["env"])
        provisioner.pid, provisioner.pgid, provisioner.cwd = provisioner.process.pid, None, scratch
        self._reconcile_connection_info(provisioner.connection_info)


class SandboxedExecute(Execute):
    """nbgrader's Execute with a sandboxed kernel, a cap on output, and a kernel
    that ignores the timeout's interrupt stopped instead of waited on cell after cell."""
    max_output_bytes = Integer(1 << 20, help="stream output kept per cell").tag(config=True)
    interrupt_grace = Integer(5, help="seconds an interrupted cell has to stop").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "kernel_manager_class": SandboxedKernelManager})
        self._kept = {}

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] == "stream":
            kept = self._kept.get(cell_index, 0)
            size = len(msg["content"].get("text", ""))
            self._kept[cell_index] = kept + size
            if kept + size > self.max_output_bytes:
                if kept <= self.max_output_bytes:
                    outs.append(new_output("stream", name="stdout",
                                           text="\n... output truncated by the grader ...\n"))
                return None
        return super().output(outs, msg, display_id, cell_index)

    async def _async_handle_timeout(self, timeout, cell=None):
        reply = await super()._async_handle_timeout(timeout, cell)
        for _ in range(self.interrupt_grace * 10):
            if await self.kc.shell_channel.msg_ready():
                return reply
            await asyncio.sleep(0.1)
        await self.km.shutdown_kernel(now=True)
        raise CellTimeoutError(f"a cell ran past the {timeout} s limit and ignored the interrupt: "
                               f"the kernel was stopped")
