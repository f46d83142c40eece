"""Build and load this package's C kernels: compiled on first use, cached, loaded with ctypes.

A kernel's C file is compiled with the system C compiler into ``$TRANSUNET_APP_CACHE``
(default ``~/.cache/transunet_app/``) under a name keyed by the SHA-256 of the source and the
flags, written to a temporary name and renamed (two processes compiling at once see either no
library or a whole one), and loaded with ctypes: calls through ``ctypes.CDLL`` release the
GIL, so the inference streams (threads) run kernels side by side. No ``-march=native``: a
cache directory may be shared by machines of different models, so the flags name exactly the
extensions the kernels use, and :func:`load` asks :mod:`transunet_app.capabilities` whether
this CPU has them and a compiler exists (``TRANSUNET_APP_PORTABLE=1`` answers no).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import threading
from pathlib import Path

from .. import capabilities
from ..data.files import atomic_write

CFLAGS = ("-O3", "-shared", "-fPIC", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl",
          "-mavx512bf16", "-mfma")


def cache_dir() -> Path:
    """Directory of compiled libraries: ``$TRANSUNET_APP_CACHE`` or ``~/.cache/transunet_app``."""
    env = os.environ.get("TRANSUNET_APP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "transunet_app"


def _build(source: Path, target: Path) -> None:
    """Compile ``source`` into ``target`` through the one atomic write (nothing half-built is
    ever visible under ``target``'s name)."""
    cc = capabilities.compiler()
    if cc is None:
        raise RuntimeError(capabilities.c_kernels().why)
    target.parent.mkdir(parents=True, exist_ok=True)

    def compile_to(tmp: Path) -> None:
        proc = subprocess.run([cc, *CFLAGS, str(source), "-o", str(tmp)], capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"{Path(cc).name} failed ({proc.returncode}): " + " | ".join(tail))

    # overwrite: another process may have built the same file meanwhile (identical bytes);
    # 0o755: a temporary file's 0600 would hide a shared cache from other users
    atomic_write(target, compile_to, overwrite=True, mode=0o755)


def load(source: Path) -> tuple[ctypes.CDLL, Path]:
    """The compiled ``source`` (built now if not cached) and its path.

    Raises:
        RuntimeError: the CPU lacks an extension the kernels use, no compiler, a compile or
            load error (the message says which).
    """
    usable = capabilities.c_kernels()
    if not usable:
        raise RuntimeError(usable.why)
    code = Path(source).read_bytes()
    key = hashlib.sha256(code + b"\0" + " ".join(CFLAGS).encode()).hexdigest()[:24]
    target = cache_dir() / f"{Path(source).stem}-{key}.so"
    if not target.exists():
        _build(Path(source), target)
    try:
        # torch is imported, so its libgomp.so.1 is loaded: the library's libgomp.so.1
        # dependency resolves to it (one OpenMP runtime, one thread pool).
        return ctypes.CDLL(str(target)), target
    except OSError as e:
        raise RuntimeError(f"cannot load {target}: {e}") from None


class Kernel:
    """One C function of a kernel source, built and loaded on first use; never raises for that.

    Args:
        source: the C file.
        name: the exported function.
        argtypes: its ctypes argument types (it returns an int status, 0 = done).

    :meth:`function` is the ctypes function or None; :attr:`reason` says why it is None.
    """

    def __init__(self, source: Path, name: str, argtypes):
        self.source, self.name, self.argtypes = Path(source), name, list(argtypes)
        self.reason: str | None = None
        self.path: Path | None = None
        self._fn = None
        self._probed = False
        self._lock = threading.Lock()  # streams may reach a kernel first at the same time

    def function(self):
        if self._probed:
            return self._fn
        with self._lock:
            if self._probed:
                return self._fn
            try:
                lib, self.path = load(self.source)
                fn = getattr(lib, self.name)
                fn.restype, fn.argtypes = ctypes.c_int, self.argtypes
                self._fn = fn
            except Exception as e:  # noqa: BLE001 (any failure means: not used)
                self.reason = str(e) if isinstance(e, RuntimeError) else f"{type(e).__name__}: {e}"
            self._probed = True
        return self._fn

    def available(self) -> bool:
        return self.function() is not None

    def clear(self) -> None:
        """Forget the probe (tests; after changing the compiler or the cache directory)."""
        self._fn, self._probed, self.reason, self.path = None, False, None, None

    def __call__(self, *args) -> None:
        status = self.function()(*args)
        if status != 0:
            raise RuntimeError(f"{self.name} failed (status {status})")
