"""The sandbox and the verification worker, piece by piece (the whole grader is
attacked in test_adversarial.py)."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import zmq

from autograder import course, sandbox, verdict, verify
from autograder.worker import _flatten
from tests.helpers import CHAPTERS, ROOT, python, released, submission

A = CHAPTERS[0]  # any chapter: what these tests check does not depend on its items

UID = sandbox.own_uid()


def run_sandboxed(tmp_path, code, limits=sandbox.Limits()):
    argv = sandbox.command([sys.executable, "-c", textwrap.dedent(code)], uid=UID,
                           writable={tmp_path: tmp_path}, cwd=tmp_path, limits=limits)
    sandbox.give(tmp_path, UID)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_sees_only_the_environment_and_its_folder(tmp_path):
    seen = run_sandboxed(tmp_path, f"""
        import json, os, sys
        def writable(path):
            try:
                open(path, "w").close()
                return True
            except OSError:
                return False
        print(json.dumps({{
            "uid": os.getuid(), "root": sorted(os.listdir("/")),
            "course": os.path.exists({str(ROOT / 'solutions')!r}),
            "templates": os.path.exists({str(ROOT / 'autograder' / 'templates')!r}),
            "own_folder": writable("mine.txt"), "tmp": writable("/tmp/x"),
            "environment": writable(os.path.join(sys.prefix, "x")), "etc": writable("/etc/x"),
        }}))
    """)
    assert seen["uid"] == UID
    assert not seen["course"] and not seen["templates"]
    assert seen["own_folder"] and seen["tmp"]
    assert not seen["environment"] and not seen["etc"]
    assert set(seen["root"]) <= {"usr", "bin", "lib", "lib64", "sbin", "etc", "dev", "proc", "tmp",
                                 *{p.parts[1] for p in sandbox._readable_roots()},
                                 tmp_path.parts[1]}


def test_runs_a_venv_reached_through_a_symbolic_link(tmp_path, monkeypatch):
    """`.venv` may be a link to a venv elsewhere: the sandbox runs the interpreter at the linked
    path (the path a kernel's command names), and Python finds its venv there."""
    link = tmp_path / "linked-venv"
    link.symlink_to(Path(sys.prefix).resolve())
    monkeypatch.setattr(sys, "prefix", str(link))
    argv = sandbox.command([str(link / "bin" / "python"), "-c", "import sys, torch; print(sys.prefix)"],
                           uid=UID, cwd=Path("/tmp"))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout.strip()) == (0, str(link)), result.stderr


def test_no_network_and_limits_apply(tmp_path):
    limits = sandbox.Limits(memory=2 << 30, cpu_seconds=30, processes=16, file_size=1 << 20)
    seen = run_sandboxed(tmp_path, """
        import json, os, resource, socket
        def fails(action):
            try:
                action()
                return False
            except OSError:
                return True
        print(json.dumps({
            "dns": fails(lambda: socket.getaddrinfo("pypi.org", 443)),
            "interfaces": sorted(name for _, name in socket.if_nameindex()),
            "limits": [resource.getrlimit(r)[0] for r in (resource.RLIMIT_AS, resource.RLIMIT_CPU,
                       resource.RLIMIT_NPROC, resource.RLIMIT_FSIZE)],
            "big_file": fails(lambda: open("big", "wb").write(b"x" * (2 << 20))),
        }))
    """, limits)
    assert seen["dns"] and seen["interfaces"] == ["lo"]
    assert seen["limits"] == [2 << 30, 30, 16, 1 << 20]
    assert seen["big_file"]


def test_verification_runs_the_released_setup_not_the_submitted_one(tmp_path):
    notebook = submission(A.name, {})
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "setup":
            cell.source = "raise SystemExit('edited setup')"
    path = tmp_path / f"{A.name}.ipynb"
    nbformat.write(notebook, path)
    code = verify.notebook_code(released(A.name), path)
    assert "edited setup" not in "".join(code)
    assert not any(verify.verify(A.name, released(A.name), path, uid=UID).values())


def test_outputs_are_never_unpickled(tmp_path):
    smuggler = textwrap.dedent("""
        import numpy
        def save(path, array, allow_pickle=False):
            with open(path, "wb") as handle:
                numpy.lib.format.write_array(handle, numpy.array([print], dtype=object),
                                             allow_pickle=True)
        numpy.save = save
    """)
    notebook = submission(A.name, {})
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == next(iter(A.items)):
            cell.source += "\n" + smuggler
    path = tmp_path / f"{A.name}.ipynb"
    nbformat.write(notebook, path)
    verdicts = verify.verify(A.name, released(A.name), path, uid=UID)
    assert all("allow_pickle=False" in verdict for verdict in verdicts.values()), verdicts


LEFTOVERS = """
    import os
    def leftovers():
        mine = lambda folder: [p for p in os.listdir(folder)
                               if os.lstat(os.path.join(folder, p)).st_uid == os.getuid()]
        return [sum(1 for p in os.listdir("/proc")
                    if p.isdigit() and int(p) not in (1, os.getppid(), os.getpid())),
                len(mine("/tmp")), len(mine("/dev/shm")), len(mine("..")) - 1]
"""


def _worker_sees(cells: str) -> list[int]:
    """``leftovers()`` in a fresh verification worker after it ran ``cells``: processes other
    than itself and the sandbox's, and what its uid owns in /tmp, /dev/shm and beside its folder."""
    worker = verify.Worker([textwrap.dedent(LEFTOVERS) + textwrap.dedent(cells)], uid=UID,
                           sandboxed=True, timeout=60)
    try:
        return [a.item() for a in worker.run(0, verify.Probe("result = leftovers()", None), {})]
    finally:
        worker.close()


def test_a_fork_leaves_nothing_to_the_next():
    """Kernels and workers are forks of one warm sandbox: whatever a child starts or writes,
    and wherever, the next child starts without it."""
    left = _worker_sees("""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            time.sleep(600)
        for path in ("/tmp/left", "/dev/shm/left", "../left"):
            open(path, "w").write("x")
        os.makedirs("/tmp/locked/deeper")
        os.chmod("/tmp/locked", 0)
    """)
    assert left == [2, 2, 1, 1]
    assert _worker_sees("") == [0, 0, 0, 0]


def test_a_server_that_stepped_an_optimizer_spares_its_children_the_imports():
    """A chapter that trains has its grader's fork server take an optimizer step, once: every
    child then starts with what a first step imports (torch._dynamo)."""
    def child_has_dynamo() -> bool:
        worker = verify.Worker(["import sys, torch"], uid=UID, sandboxed=True, timeout=60)
        try:
            probe = verify.Probe("result = torch.tensor('torch._dynamo' in sys.modules)", None)
            return worker.run(0, probe, {})[0].item()
        finally:
            worker.close()

    sandbox.fork_server(UID, sandboxed=True).close()  # the next is new: it has not stepped
    assert not child_has_dynamo()
    sandbox.fork_server(UID, sandboxed=True).step_optimizer()
    assert child_has_dynamo()


def test_a_childs_collector_skips_what_the_server_imported():
    """A garbage collection in a child visits only the child's own objects: one that walked
    the server's (torch, IPython: some 200,000) took 0.1 s, and copied every page it touched."""
    worker = verify.Worker(["import gc, torch"], uid=UID, sandboxed=True, timeout=60)
    try:
        probe = verify.Probe("result = torch.tensor([gc.get_freeze_count(), len(gc.get_objects())])", None)
        frozen, collected = worker.run(0, probe, {})[0].tolist()
    finally:
        worker.close()
    assert frozen > 100_000 and collected < frozen / 10, (frozen, collected)


def test_a_grading_workers_collector_skips_what_it_inherited():
    """So does a grading worker's, forked from the server that imported the grader and torch
    (grade._worker_context's preload)."""
    script = ("import gc\nimport torch\nfrom autograder import grade\ngrade._init_worker()\n"
              "print(gc.get_freeze_count(), len(gc.get_objects()))")
    frozen, collected = map(int, python(script).split())
    assert frozen > 100_000 and collected < frozen / 10, (frozen, collected)


def test_a_kernel_client_retries_a_refused_connection_within_10_ms(tmp_path):
    """The client connects as the kernel is forked, before it listens; ZeroMQ's default
    100 ms between attempts idled every notebook that long. The socket's monitor reports
    the wait before the next attempt."""
    import asyncio
    from zmq.utils.monitor import parse_monitor_message

    async def first_retry() -> dict:
        socket = context.socket(zmq.DEALER)
        monitor = socket.get_monitor_socket(zmq.EVENT_CONNECT_RETRIED)
        try:
            socket.connect(f"ipc://{tmp_path / 'not-listening'}")
            return parse_monitor_message(await asyncio.wait_for(monitor.recv_multipart(), 10))
        finally:
            socket.disable_monitor()
            monitor.close()
            socket.close(linger=0)

    client = sandbox.SandboxedKernelManager().client()  # its context closes with it
    context = client.context
    try:
        event = asyncio.run(first_retry())
    finally:
        context.term()
    # libzmq waits the interval plus a random part of it: 10-19 ms (ZeroMQ's default: 100-199)
    assert event["event"] == zmq.EVENT_CONNECT_RETRIED and 10 <= int(event["value"]) < 20, event


def test_a_child_cannot_reach_into_the_fork_server():
    """The server is not dumpable: its memory is closed to its children. A child that kills
    it (and so its whole sandbox) loses its own verdict only; the next child gets a new server."""
    worker = verify.Worker([textwrap.dedent("""
        import os, time
        try:
            open(f"/proc/{os.getppid()}/mem", "rb")
            denied = False
        except PermissionError:
            denied = True
    """)], uid=UID, sandboxed=True, timeout=60)
    try:
        assert worker.run(0, verify.Probe("result = denied", None), {})[0].item() is True
        with pytest.raises(verify.WorkerError):
            worker.run(1, verify.Probe("os.kill(os.getppid(), 9); time.sleep(30)", None), {})
    finally:
        worker.close()
    assert _worker_sees("") == [0, 0, 0, 0]


@pytest.mark.parametrize("source, named", [
    ("import sys\nsys.setprofile(None)", ["setprofile"]),
    ("x = getattr(sys, 'settrace')", ["settrace"]),
    ("caller = sys._getframe(1).f_back", ["_getframe", "f_back"]),
    ("from torch import _C", ["torch._C"]),
    ("lib = torch.library.Library('aten', 'IMPL')", ["torch.library"]),
    ("import ctypes, gc", ["ctypes", "gc"]),
    ("def f(x):\n    print(x, file=sys.stderr)\n    return torch.nn.functional.relu(x)", []),
])
def test_answers_that_reach_into_the_interpreter_are_named(source, named):
    assert verdict.reaches_in(source) == named


def test_no_reference_answer_reaches_into_the_interpreter():
    for chapter in CHAPTERS:
        cells = course.answered(chapter.name, {}).cells
        assert not [c.source for c in cells if c.metadata.get("nbgrader", {}).get("solution")
                    and verdict.reaches_in(c.source)], chapter.name


def test_compare_names_what_differs():
    probe = verify.Probe("", lambda rng: {})
    a = np.zeros((2, 3))
    wanted = [("result[0]", a), ("result[1]['layer1.0.bn2.weight']", a.copy())]
    assert verify.compare([a, a], wanted, probe) is None
    assert verify.compare([a], wanted, probe) == "returned 1 tensors, expected 2"
    assert verify.compare([a, a.astype(np.float32)], wanted, probe) == \
        "result[1]['layer1.0.bn2.weight']: float32[2, 3], expected float64[2, 3]"
    assert verify.compare([a + 1e-3, a], wanted, probe) == "result[0]: wrong values"


def test_outputs_are_named_by_where_they_sit_in_result():
    result = (torch.ones(2), {"b": 1.5, "a": [torch.zeros(1), True]})
    assert [name for name, _ in _flatten(result)] == [
        "result[0]", "result[1]['a'][0]", "result[1]['a'][1]", "result[1]['b']"]
    with pytest.raises(TypeError, match=r"result\[1\] is a str"):
        _flatten((1, "x"))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=str)
def test_every_graded_item_has_probes(chapter):
    probes = verify.probes(chapter.name)
    assert set(probes) == set(chapter.items), chapter.name
    assert all(probes[item] for item in chapter.items), chapter.name


def run_in_forked_kernel(tmp_path, cells: list[str], confined: bool) -> list[str]:
    """What each of ``cells`` printed, run as a notebook by nbclient in a forked kernel."""
    from nbclient import NotebookClient
    from traitlets.config import Config
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    config = Config()
    config.SandboxedKernelManager.confined = confined
    NotebookClient(notebook, config=config, kernel_manager_class=sandbox.SandboxedKernelManager,
                   resources={"metadata": {"path": str(tmp_path)}}, timeout=60).execute()
    return ["".join(output.get("text", "") for output in cell.outputs) for cell in notebook.cells]


@pytest.mark.parametrize("confined", [True, False])
def test_a_forked_kernel_gets_nbgraders_variables_but_not_what_the_grader_set_later(tmp_path, monkeypatch, confined):
    """A kernel forks from a server started before nbgrader set its variables; it still sees
    them (NBGRADER_EXECUTION says which command runs it), and nothing the grader set since."""
    sandbox.fork_server(sandbox.own_uid(), sandboxed=confined)
    monkeypatch.setenv("NBGRADER_EXECUTION", "validate")
    monkeypatch.setenv("DLBB_GRADER_SECRET", "not for submissions")
    printed = run_in_forked_kernel(tmp_path, [
        "import os; print(os.environ.get('NBGRADER_EXECUTION'), os.environ.get('DLBB_GRADER_SECRET'))"],
        confined)
    assert printed == ["validate None\n"]


def test_a_forked_kernel_prepares_each_cell_once_and_keeps_ipythons_syntax(tmp_path):
    """ipykernel transforms every cell and compiles it to ask whether it is a coroutine, then
    IPython's run_cell does both again (for a 300-line test cell: 10 ms and 4); the grading
    kernel transforms once and compiles no cell that never says async or await. It writes no
    history database. Magics, shell escapes, top-level await and In still work as in any
    Jupyter kernel."""
    printed = run_in_forked_kernel(tmp_path, [
        "import IPython.core.interactiveshell as shell\n"
        "manager = get_ipython().input_transformer_manager\n"
        "transforms, transform = [], manager.transform_cell\n"
        "manager.transform_cell = lambda cell: transforms.append(cell) or transform(cell)\n"
        "compiles, is_async = [], shell._should_be_async\n"
        "shell._should_be_async = lambda cell: compiles.append(cell) or is_async(cell)\n"
        "def counted():  # a cell naming the check would say async\n"
        "    manager.transform_cell, shell._should_be_async = transform, is_async\n"
        "    print(len(transforms), len(compiles))",
        "x = 1",
        "counted()",
        "%load_ext storemagic\n%time y = 2",
        "echo = !echo shell\nprint(echo[0])",
        "import asyncio\nawait asyncio.sleep(0)\nprint('awaited')",
        "print(get_ipython().history_manager.enabled, In[2])",
    ], confined=False)
    assert printed[2] == "2 0\n", f"2 cells: (transforms, compiles) = {printed[2].split()}"
    assert "Wall time" in printed[3] and printed[4] == "shell\n" and printed[5] == "awaited\n", printed
    assert printed[6] == "False x = 1\n", printed[6]
