"""``python -m ipsolve ARGS`` for the command-line tests (and ``python SCRIPT ARGS`` for the README's
Python blocks and ``scripts/train_prior.py``), each in its own process, without paying for a fresh
interpreter's imports every time.

A 3-iteration CLI run takes 6.7 s on 2 cores, and 6.1 s of that is importing torch (1.6 s),
diffusers' ``UNet2DModel`` (3.7 s: diffusers imports ``torch._dynamo`` and ``transformers`` with
it), Hydra and matplotlib.  The suite runs ~50 such commands.  A server process started once per
test session, with the tests' environment, imports those libraries — not ipsolve — and forks one
child per command.  The child sets its working directory, ``sys.argv``, stdin (/dev/null) and
stdout/stderr (files), runs ``ipsolve``'s ``__main__`` as ``python -m ipsolve`` does
(:func:`runpy.run_module`; a script as ``python SCRIPT`` does, :func:`runpy.run_path`), runs the ``atexit`` handlers and exits with the status Python would
give (``SystemExit`` code, 1 on an uncaught exception).  The caller gets a
:class:`subprocess.CompletedProcess` as from ``subprocess.run(..., capture_output=True, text=True)``.

A forked child is a separate process with ipsolve imported afresh, so exit codes, output, files,
logging set-up and per-process state are what a user gets.  What it does not test is the
interpreter start-up itself; the tests of that (``--help`` through the console script, the wheel
install, Ctrl-C, kill -9 and resume, the multi-process launcher) still start a fresh interpreter.
(Measured 2026-12-07: a README block 42–48 s fresh, 37 s forked; the training tests 86 → 62 s.)  Forking is safe here because the server never runs a torch operation, so no
OpenMP/intra-op thread pool exists before the fork (checked: the server is single-threaded, else
every command runs in a fresh interpreter, as it does where there is no ``os.fork``)."""
from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# what the server imports before forking: the slow third-party imports of every CLI run
WARM = ("torch", "numpy", "hydra", "omegaconf", "matplotlib", "PIL.Image", "skimage.io", "safetensors.torch",
        "tqdm.auto", "diffusers", "accelerate")
WARM_ATTRS = (("diffusers", "UNet2DModel"), ("diffusers", "DDPMScheduler"))


class CommandRunner:
    """One warm server process; :meth:`run` forks a child of it per command (sequentially)."""

    def __init__(self, env: dict):
        self.env = dict(env)
        self.log = tempfile.TemporaryFile(mode="w+")  # the server's own stderr (a pipe nobody reads could fill)
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], env=self.env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, bufsize=0)
        self.pending = b""  # bytes read from the server past the last reply (the replies are read unbuffered)
        ready = self._read(timeout=300)
        if ready.get("ready") is not True:
            self.close()
            raise RuntimeError(f"the CLI test server cannot fork: {ready.get('reason', ready)}")
        self.lock = threading.Lock()

    def _read(self, timeout: float) -> dict:
        """The server's next one-line JSON reply, waiting at most ``timeout`` seconds (os.read, not a
        buffered readline: a second reply already read would otherwise sit unseen by select)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                self.log.seek(0)
                raise RuntimeError(f"the CLI test server exited: {self.log.read()[-3000:]}")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def run(self, args: list[str], cwd, env: dict, timeout: float, script=None) -> subprocess.CompletedProcess:
        """``python -m ipsolve ARGS``, or with ``script`` ``python SCRIPT ARGS``, in a forked child."""
        if dict(env) != self.env:
            raise ValueError("a forked command runs with the server's environment; use subprocess for another one")
        with self.lock, tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            self.proc.stdin.write((json.dumps({"args": list(map(str, args)), "cwd": str(cwd), "stdout": str(out),
                                               "stderr": str(err), "script": script and str(script)}) + "\n").encode())
            pid = self._read(timeout=60)["pid"]
            try:
                code = self._read(timeout=timeout)["returncode"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._read(timeout=60)
                raise subprocess.TimeoutExpired(["ipsolve", *args], timeout,
                                                output=out.read_text(errors="replace"),
                                                stderr=err.read_text(errors="replace")) from None
            command = [sys.executable, str(script)] if script else [sys.executable, "-m", "ipsolve"]
            return subprocess.CompletedProcess([*command, *args], code,
                                               out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_runners: dict = {}


def run_ipsolve(args, cwd, env: dict, timeout: float = 300, script=None) -> subprocess.CompletedProcess:
    """``python -m ipsolve *args`` (with ``script``: ``python SCRIPT *args``, as a README block or
    ``scripts/train_prior.py``) in ``cwd`` with ``env``, forked from the session's warm server for
    that environment; where there is no fork (not POSIX) or the server cannot fork safely, a fresh
    interpreter."""
    key = json.dumps(sorted(env.items()))
    if key not in _runners:
        try:
            if not hasattr(os, "fork"):
                raise RuntimeError("no os.fork on this platform")
            _runners[key] = CommandRunner(env)
            atexit.register(_runners[key].close)
        except (RuntimeError, TimeoutError, OSError) as err:
            print(f"cli_process: running each command in a fresh interpreter ({err})", file=sys.stderr)
            _runners[key] = None
    if _runners[key] is None:
        command = [sys.executable, str(script)] if script else [sys.executable, "-m", "ipsolve"]
        return subprocess.run([*command, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    return _runners[key].run(list(args), cwd, env, timeout, script=script)


# ------------------------------------------------------------------------------ the server side
def _serve() -> None:
    import importlib

    protocol = os.fdopen(os.dup(1), "w")  # replies only: anything else printed to stdout goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for name in WARM:
        importlib.import_module(name)
    for module, attr in WARM_ATTRS:
        getattr(importlib.import_module(module), attr)
    assert "ipsolve" not in sys.modules, "the server must not import ipsolve: each command imports it afresh"
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading.active_count()
    if threads != 1:  # forking a multi-threaded process is not safe: the caller falls back to fresh interpreters
        protocol.write(json.dumps({"ready": False, "reason": f"{threads} threads after the imports"}) + "\n")
        protocol.flush()
        return
    protocol.write(json.dumps({"ready": True}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        protocol.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)  # never returns
        protocol.write(json.dumps({"pid": pid}) + "\n")
        protocol.flush()
        _, status = os.waitpid(pid, 0)
        protocol.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        protocol.flush()


def _child(request: dict) -> None:
    """Become ``python -m ipsolve ARGS`` (or ``python SCRIPT ARGS``) in ``cwd`` with stdout/stderr to
    the given files; exit."""
    code = 1
    try:
        os.setpgid(0, 0)
        os.chdir(request["cwd"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        sys.stdin = sys.__stdin__ = open(0, closefd=False)
        sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1,
                                           closefd=False)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        script = request.get("script")
        sys.argv = [script or "ipsolve", *request["args"]]
        # `python -m` puts the working directory first on the path, `python SCRIPT` the script's folder
        sys.path[0] = str(Path(script).resolve().parent) if script else request["cwd"]
        code = _run_main(script)
    except BaseException:  # noqa: BLE001 - anything the set-up raises is the child's failure, reported like Python would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()  # what the interpreter runs at exit (logging.shutdown flushes the run's log)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run_main(script: str | None = None) -> int:
    """Run ``ipsolve.__main__`` as ``python -m`` does (or ``script`` as ``python SCRIPT`` does);
    the exit status Python would give."""
    import runpy
    import traceback

    try:
        if script:
            runpy.run_path(script, run_name="__main__")
        else:
            runpy.run_module("ipsolve", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code is None:
            return 0
        if isinstance(exit_.code, int):
            return exit_.code
        print(exit_.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - an uncaught exception: Python prints the traceback and exits 1
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
