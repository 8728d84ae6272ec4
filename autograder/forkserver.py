"""A fork server, run in a sandbox: it imports torch once, and every notebook kernel
and verification worker of a grading process is a fresh fork of it.

``autograder/sandbox.py``'s ``ForkServer`` starts it as ``python -I forkserver.py
<confined> <fd> <spool>`` and talks to it over the SOCK_SEQPACKET socket ``fd``, one JSON
message per request and one per reply:

- ``{"op": "empty"}`` -> ``{}``: leave nothing of earlier children (below);
- ``{"op": "kernel", "argv": [...], "cwd": path, "env": {...}}`` -> ``{"pid": n}``: an
  IPython kernel (``Kernel``: ipykernel's, doing each cell's preparation once) run with
  ipykernel's arguments ``argv``, in ``cwd``, with nbgrader's
  variables ``env`` (``NBGRADER_*``) set;
- ``{"op": "worker", "argv": [...], "cwd": path}`` with two file descriptors, its
  stdin and stdout -> ``{"pid": n}``: a verification worker (``worker.py``);
- ``{"op": "signal", "pid": n, "signum": s}`` -> ``{}``: signal the child's process group
  (SIGKILL returns once the child is reaped);
- ``{"op": "poll", "pid": n}`` -> ``{"returncode": rc or None}``;
- ``{"op": "step_optimizer"}`` -> ``{}``: pay, once, what a process's first optimizer step
  imports (torch._dynamo, a second or two), for the children of a chapter that trains.

Nothing of one child reaches the next. Before every fork the server empties the
sandbox: when ``confined`` (alone in its pid namespace as the sandbox's uid) it kills
every other process, and clears /tmp, /dev/shm and System V IPC; unconfined (code the
caller trusts) it kills its children's process groups. The server itself is not
dumpable, so no child can read or write its memory, and children close its socket.
Children start from the state a new process would have: numpy seeded afresh, torch
at its fixed initial seed, their own session.
"""
import ctypes
import errno
import gc
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp
from ipykernel.zmqshell import ZMQInteractiveShell
from traitlets import Type
from traitlets.config import Config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I left it out
import worker  # noqa: E402

del sys.path[0]

PR_SET_DUMPABLE = 4
# what a kernel imports as it starts, beyond ipykernel.kernelapp (ipykernel 6, IPython 8)
KERNEL_IMPORTS = ("ipykernel.debugger", "IPython.core.completerlib", "IPython.core.debugger",
                  "IPython.core.oinspect", "IPython.extensions.storemagic", "sqlite3",
                  "tornado.platform.asyncio")
_libc = ctypes.CDLL(None, use_errno=True)


def _warm_up() -> None:
    """Pay the first-call costs of the ops every exercise uses, without drawing a random number,
    and of a kernel's start."""
    state = torch.random.get_rng_state()
    x = torch.linspace(-1, 1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8).requires_grad_()
    y = F.batch_norm(F.conv2d(x, torch.ones(4, 3, 3, 3), padding=1), None, None, training=True)
    F.max_pool2d(F.relu(y), 2).sum().backward()
    for name in KERNEL_IMPORTS:
        importlib.import_module(name)
    torch.autograd.gradcheck(lambda a: (a * a).sum(), torch.ones(3, dtype=torch.float64,
                                                                  requires_grad=True))
    assert torch.equal(torch.random.get_rng_state(), state)


def _step_optimizer() -> None:
    x = torch.ones(3, requires_grad=True)
    x.sum().backward()
    torch.optim.Adam([x]).step()


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _others() -> list[int]:
    """Every live process of the sandbox but this one and the namespace's init."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (1, os.getpid()):
            try:
                with open(f"/proc/{name}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[0] != "Z":
                        pids.append(int(name))
            except OSError:
                pass
    return pids


def _clear(folder: str) -> None:
    """Remove what this uid owns in ``folder``. Nothing else can hold what a child wrote:
    what bwrap made there (mount points, the folders above them) is root's."""
    for entry in os.scandir(folder):
        if entry.stat(follow_symlinks=False).st_uid != os.getuid():
            continue
        if entry.is_dir(follow_symlinks=False):
            os.chmod(entry.path, 0o700)
            _clear(entry.path)
            try:
                os.rmdir(entry.path)
            except OSError as error:  # a folder mounted from the grader's side
                if error.errno != errno.EBUSY:
                    raise
        else:
            os.unlink(entry.path)


class Server:
    def __init__(self, sock: socket.socket, confined: bool, spool: str):
        self.sock, self.confined, self.spool, self.children = sock, confined, spool, set()
        self.stepped = False
        self.guard = worker.dispatcher_guard()  # every worker's, made once

    def reap(self) -> None:
        for pid in list(self.children):
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    self.children.discard(pid)
            except ChildProcessError:
                self.children.discard(pid)

    def empty(self) -> None:
        """Leave nothing of earlier children: processes, files in /tmp and /dev/shm, IPC."""
        if self.confined:
            deadline = time.monotonic() + 5
            while others := _others():
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.reap()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"processes {others[:5]} outlived SIGKILL")
                time.sleep(0.005)
            for folder in ("/tmp", "/dev/shm"):
                _clear(folder)
            subprocess.run(["ipcrm", "--all"], check=True, capture_output=True)
        else:
            for pid in self.children:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.children.clear()
        _clear(os.path.join(self.spool, "rw"))

    def fork(self, request: dict, fds: list[int]) -> int:
        self.reap()
        if self.children:
            raise RuntimeError("the sandbox is not empty: a child is still running")
        if _threads() != 1:
            raise RuntimeError(f"the fork server runs {_threads()} threads: forking is unsafe")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self.sock.close()
                code = _child(request, fds, self.guard)
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        self.children.add(pid)
        return pid

    def handle(self, request: dict, fds: list[int]) -> dict:
        op = request["op"]
        if op == "empty":
            self.empty()
            return {}
        if op in ("kernel", "worker"):
            return {"pid": self.fork(request, fds)}
        if op == "step_optimizer":
            if not self.stepped:
                _step_optimizer()
                self.stepped = True
            return {}
        pid = int(request["pid"])
        if pid not in self.children:
            return {"returncode": -signal.SIGKILL} if op == "poll" else {}
        if op == "signal":
            try:
                os.killpg(pid, int(request["signum"]))
            except ProcessLookupError:
                pass
            if int(request["signum"]) == signal.SIGKILL:  # reaped now: its poll needs no wait
                os.waitpid(pid, 0)
                self.children.discard(pid)
            return {}
        if op == "poll":
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                return {"returncode": None}
            self.children.discard(pid)
            return {"returncode": os.waitstatus_to_exitcode(status)}
        raise ValueError(f"unknown request {op!r}")

    def serve(self) -> None:
        self.sock.send(json.dumps({"ready": True}).encode())
        while True:
            message, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 2)
            if not message:
                return
            try:
                reply = self.handle(json.loads(message), fds)
            except Exception as error:
                reply = {"error": f"{type(error).__name__}: {error}"}
            self.sock.send(json.dumps(reply).encode())


class Shell(ZMQInteractiveShell):
    """ipykernel's shell without the work it does twice for every cell: ipykernel transforms
    the cell and asks whether it runs as a coroutine, then IPython's run_cell does both
    again. For a 300-line test cell a transform (tokenizing it) costs about 10 ms and the
    question (compiling it) 4. The transform is kept for the cell being run, and a cell that
    never says async or await is no coroutine."""
    _transformed = (None, None)

    def transform_cell(self, raw_cell):
        key = (self.execution_count, raw_cell)
        if self._transformed[0] != key:
            self._transformed = (key, super().transform_cell(raw_cell))
        return self._transformed[1]

    def should_run_async(self, raw_cell, *, transformed_cell=None, preprocessing_exc_tuple=None):
        if transformed_cell is not None and "async" not in transformed_cell \
                and "await" not in transformed_cell:
            return False
        return super().should_run_async(raw_cell, transformed_cell=transformed_cell,
                                        preprocessing_exc_tuple=preprocessing_exc_tuple)


class Kernel(IPythonKernel):
    shell_class = Type(Shell)


# IPython's history database, which a thread of its own writes after every cell (a quarter
# of the kernel's CPU time for a one-line cell): nothing reads it; In and Out stay
KERNEL_CONFIG = Config({"HistoryManager": {"enabled": False}})


def _child(request: dict, fds: list[int], guard) -> int:
    """Become what ``request`` asks for (a worker guarded by ``guard``); the exit code."""
    gc.freeze()  # the server's objects are never garbage here: no collection visits them
    os.setsid()
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    np.random.seed()  # what a new process's numpy would hold; torch starts from its fixed seed
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDWR)
    stdin, stdout = fds if request["op"] == "worker" else (null, null)
    for source, target in ((stdin, 0), (stdout, 1), (null, 2)):
        os.dup2(source, target)
    sys.argv = [request["op"], *request["argv"]]
    if request["op"] == "worker":
        worker.main(guard)
    else:
        os.environ.update(request["env"])
        IPKernelApp.launch_instance(argv=request["argv"], kernel_class=Kernel, config=KERNEL_CONFIG)
    return 0


def main() -> None:
    confined, fd, spool = sys.argv[1] == "1", int(sys.argv[2]), sys.argv[3]
    sock = socket.socket(fileno=fd)
    if confined and os.getpid() != 2:
        raise SystemExit("a confined fork server must run alone in its pid namespace")
    _warm_up()
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    Server(sock, confined, spool).serve()


if __name__ == "__main__":
    main()
