"""Every workaround for a third-party library or the interpreter, in one place.

Each says what it works around and the version it was written for; ``tests/test_compat.py`` holds a
test per workaround that fails when the upstream behaviour it relies on changes, so a new release
is noticed where the workaround lives. pyproject's version ranges are the ones those tests cover.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator

# -- onnx-graphsurgeon 0.5-0.6 ------------------------------------------------------------------


def quiet_graphsurgeon() -> None:
    """graphsurgeon logs to stdout/stderr on its own (a colour warning, a message before each
    exception it raises): a pass's failure reaches the user once, as our one-line reason."""
    from onnx_graphsurgeon.logger import G_LOGGER

    G_LOGGER.colors = False
    G_LOGGER.severity = G_LOGGER.CRITICAL + 10


@contextlib.contextmanager
def names_only() -> Iterator[None]:
    """While it runs, graphsurgeon nodes and tensors format as their names. ``Graph.cleanup``
    formats every node it removes, attributes and all (a Constant node's value, printed by numpy),
    into a log line it then drops: 1.05 s of a 1.4 s cleanup on a 7 MB layout model. The classes
    are patched for the duration only (not thread-safe: passes run one at a time)."""
    import onnx_graphsurgeon as gs

    saved = gs.Node.__str__, gs.Constant.__repr__, gs.Variable.__repr__
    gs.Node.__str__ = gs.Constant.__repr__ = gs.Variable.__repr__ = _name_only
    try:
        yield
    finally:
        gs.Node.__str__, gs.Constant.__repr__, gs.Variable.__repr__ = saved


def _name_only(obj) -> str:
    return str(obj.name)


def lazy_of(t) -> object | None:
    """graphsurgeon's LazyValues behind a Constant (its private ``_values``): the weight is read
    only when asked, and its values are not kept when we only look at them."""
    import onnx_graphsurgeon as gs

    lazy = getattr(t, "_values", None)
    return lazy if isinstance(lazy, gs.ir.tensor.LazyValues) else None


def read_external_lazily(graph, load: Callable) -> None:
    """Weights left on disk stay there until a pass asks for their values: graphsurgeon's
    LazyValues of an external tensor is swapped for one that reads it with ``load(tensor)`` from
    the run's external data folder, and once read the values are exported inline."""
    import onnx
    import onnx_graphsurgeon as gs

    class External(gs.ir.tensor.LazyValues):
        def load(self):
            return load(self.tensor)

    for t in graph.tensors().values():
        lazy = getattr(t, "_values", None)
        if type(lazy) is gs.ir.tensor.LazyValues and lazy.tensor.data_location == onnx.TensorProto.EXTERNAL:
            t._values = External(lazy.tensor)
            t.data_location = None  # (the reference to the file goes with the lazy object)


# -- onnxruntime 1.18-1.x -----------------------------------------------------------------------


def quiet_onnxruntime() -> None:
    """onnxruntime's process-wide logger prints warnings and errors of trial runs in colour on
    stderr; Rooftop reports what matters itself."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)


# -- onnxsim 0.4.36-0.8 -------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_fds():
    """Silence onnxsim's own prints (Python and C++) so our progress display stays clean."""
    try:
        fds = [sys.stdout.fileno(), sys.stderr.fileno()]
    except (AttributeError, io.UnsupportedOperation, ValueError):
        fds = []
    saved = []
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (ValueError, OSError):
        pass
    try:
        with open(os.devnull, "w") as devnull:
            for fd in fds:
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull.fileno(), fd)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
    finally:
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)


# optional imports of onnxsim's model_info, which only prints its report tables (symbolic MAC
# counts): sympy alone costs 0.4 s where torch installed it
OPTIONAL_FOR_REPORTS = ("sympy", "onnx_ir", "onnx_shape_inference")
# submodules of the quantization toolkit the simplifier's module imports only for the annotations
# of its other entry points: the pruning module alone is 52,000 lines (70 ms to load, of 110)
ANNOTATION_ONLY = {"onnxsim.pruning": ("EmbeddingPruningResult", "_ImportanceNorm"), "onnxsim.rptq": ("RptqLayerInfo",)}


def onnxsim_simplify():
    """onnxsim's ``simplify`` without its package ``__init__``: onnxsim 0.8's ``__init__`` re-exports
    a quantization toolkit that imports torch where torch is installed (3.0 s and 300 MB here, of
    which the simplifier needs 1.2 s and no torch). The submodule is loaded under a bare package
    entry that is dropped again, so a later ``import onnxsim`` gets the real package; the
    optional imports of its report printer (OPTIONAL_FOR_REPORTS) are refused while it loads
    unless already imported, and the modules it reads only for annotations (ANNOTATION_ONLY) are
    placeholders while it loads. Any failure: the plain import."""
    if "onnxsim" in sys.modules and hasattr(sys.modules["onnxsim"], "simplify"):
        return sys.modules["onnxsim"].simplify
    import importlib
    import importlib.util
    import types

    try:
        spec = importlib.util.find_spec("onnxsim")
        bare = types.ModuleType("onnxsim")
        bare.__path__, bare.__spec__ = list(spec.submodule_search_locations), spec
        sys.modules["onnxsim"] = bare
        blocked = [m for m in OPTIONAL_FOR_REPORTS if m not in sys.modules]
        sys.modules.update(dict.fromkeys(blocked))  # None: "import sympy" raises ImportError
        stubs = {name: _placeholder(name, attrs) for name, attrs in ANNOTATION_ONLY.items() if name not in sys.modules}
        sys.modules.update(stubs)
        try:
            return importlib.import_module("onnxsim.onnx_simplifier").simplify
        finally:
            for m in blocked:
                if sys.modules.get(m, 0) is None:
                    del sys.modules[m]
            for name, stub in stubs.items():
                if sys.modules.get(name) is stub:
                    del sys.modules[name]
            if sys.modules.get("onnxsim") is bare:
                del sys.modules["onnxsim"]
    except Exception:  # noqa: BLE001 - another onnxsim layout: import it as documented
        import onnxsim

        return onnxsim.simplify


def _placeholder(name: str, attrs: tuple[str, ...]):
    """A module whose ``attrs`` are placeholder classes (an annotation reads them; nothing calls them)."""
    import types

    mod = types.ModuleType(name)
    for a in attrs:
        setattr(mod, a, type(a, (), {}))
    return mod


class NativeCrash(Exception):
    """A function run apart ended its process by a signal (a native crash) or went past its time."""


def isolated(fn: Callable[[], bytes], timeout_s: float = 600.0) -> bytes:
    """``fn()`` in a forked child, its bytes back: a native crash (SIGSEGV in onnxsim's C++, say)
    or a hang ends the child, not the run, and raises NativeCrash with the signal's name. Where
    fork does not exist, ``fn`` runs here."""
    if not hasattr(os, "fork"):
        return fn()
    with tempfile.TemporaryDirectory(prefix="rooftop-isolated-") as d:
        out = os.path.join(d, "out")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: write the result, leave without running the parent's exit handlers
            code = 1
            try:
                data = fn()
                with open(out, "wb") as f:
                    f.write(data)
                code = 0
            except BaseException as e:  # noqa: BLE001 - the parent learns it from the file
                with contextlib.suppress(Exception), open(out + ".err", "w") as f:
                    f.write(f"{type(e).__name__}: {e}")
            finally:
                os._exit(code)
        status = _wait(pid, timeout_s)
        if status is None:
            raise NativeCrash(f"did not finish in {timeout_s:.0f} s (killed)")
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            raise NativeCrash(f"crashed ({signal.Signals(sig).name})")
        if os.WEXITSTATUS(status) != 0:
            why = open(out + ".err").read() if os.path.exists(out + ".err") else f"exit {os.WEXITSTATUS(status)}"
            raise RuntimeError(why)
        with open(out, "rb") as f:
            return f.read()


def _wait(pid: int, timeout_s: float) -> int | None:
    import time

    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


# -- the interpreter and the C library ------------------------------------------------------------


def exit_now(code: int) -> None:
    """End the process once the work is done and written: exit handlers (temporary folders) run,
    output is flushed, and the interpreter's teardown of onnxruntime and of every loaded module is
    skipped (0.05-0.2 s of a 2 s run). ``atexit._run_exitfuncs`` is CPython's (3.10-3.13)."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code)


def malloc_trim() -> None:
    """Hand freed heap pages back to the OS: glibc keeps the freed memory of dropped onnxruntime
    sessions and protobuf copies, and the process's RSS stays at its peak otherwise."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


__all__ = [
    "NativeCrash",
    "exit_now",
    "isolated",
    "malloc_trim",
    "names_only",
    "onnxsim_simplify",
    "quiet_fds",
    "quiet_graphsurgeon",
    "quiet_onnxruntime",
]
