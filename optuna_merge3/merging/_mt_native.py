"""MT19937 output in bulk from a small C loop (built once with the system C compiler).

Why: replaying MergeKit's DARE / DELLA masks needs one MT19937 output per element, in order; a
168M-weight model with three endpoints draws 504M of them per trial. numpy's ``MT19937`` emits
one output per call of a function pointer (~4.5 ns each here: ~2.3 s per trial, most of a DARE
trial). MT19937 itself vectorises well: each regeneration of the 624-word state is three loops
whose reads lag their writes by 227 or 397 words, and tempering is element-wise; compiled with
``-O3 -march=native`` the same stream costs a fraction of a nanosecond per output.

The C source below is the reference MT19937 (Matsumoto & Nishimura 1998; numpy's
``mt19937_gen`` and PyTorch's ``mt19937_engine``), consuming state in numpy's convention: the
next output is ``key[pos]``, ``pos == 624`` regenerates first. The library is compiled into a
per-user cache directory (keyed by the source, the compiler and the CPU's flags; written under a
temporary name and renamed, so concurrent workers are safe) and loaded with ctypes. It is used
only after it reproduced numpy's MT19937 bit for bit across several regenerations in this
process; no compiler, a failed build or a mismatch leaves :func:`mt19937_uint24` returning None
and the caller draws through numpy (logged once).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

__all__ = ["mt19937_uint24"]

_logger = logging.getLogger(__name__)

_SOURCE = r"""
#include <stdint.h>

#define MT_N 624
#define MT_M 397

static void regenerate(uint32_t *mt) {
    int i;
    /* Reads of mt[i + 1] and mt[i + MT_M] (old) come before their writes: vectorisable. */
    for (i = 0; i < MT_N - MT_M; i++) {
        uint32_t y = (mt[i] & 0x80000000u) | (mt[i + 1] & 0x7fffffffu);
        mt[i] = mt[i + MT_M] ^ (y >> 1) ^ ((0u - (y & 1u)) & 0x9908b0dfu);
    }
    /* mt[i + MT_M - MT_N] was written 227 iterations earlier. */
    for (; i < MT_N - 1; i++) {
        uint32_t y = (mt[i] & 0x80000000u) | (mt[i + 1] & 0x7fffffffu);
        mt[i] = mt[i + (MT_M - MT_N)] ^ (y >> 1) ^ ((0u - (y & 1u)) & 0x9908b0dfu);
    }
    uint32_t y = (mt[MT_N - 1] & 0x80000000u) | (mt[0] & 0x7fffffffu);
    mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ ((0u - (y & 1u)) & 0x9908b0dfu);
}

/* The next n tempered outputs of state (mt, *pos), masked with `mask`, into out. */
void mt19937_fill(uint32_t *mt, int32_t *pos, uint32_t *out, int64_t n, uint32_t mask) {
    int p = *pos;
    int64_t done = 0;
    while (done < n) {
        if (p >= MT_N) {
            regenerate(mt);
            p = 0;
        }
        int64_t take = MT_N - p;
        if (take > n - done) take = n - done;
        const uint32_t *src = mt + p;
        uint32_t *dst = out + done;
        for (int64_t k = 0; k < take; k++) {
            uint32_t y = src[k];
            y ^= y >> 11;
            y ^= (y << 7) & 0x9d2c5680u;
            y ^= (y << 15) & 0xefc60000u;
            y ^= y >> 18;
            dst[k] = y & mask;
        }
        p += (int)take;
        done += take;
    }
    *pos = p;
}
"""

_U24_MASK = 0xFFFFFF
_lock = threading.Lock()
_function: object = None  # the ctypes function once loaded and checked; False: unavailable


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(root) / "optuna_merge3"
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:  # read-only home: the temp directory
        path = Path(tempfile.gettempdir()) / f"optuna_merge3_{os.getuid()}"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _build() -> ctypes.CDLL:
    compiler = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if compiler is None:
        raise RuntimeError("no C compiler on PATH")
    flags = ["-O3", "-march=native", "-shared", "-fPIC"]
    digest = hashlib.blake2b(
        "\0".join([_SOURCE, compiler, *flags, _cpu_flags()]).encode(), digest_size=10
    ).hexdigest()
    target = _cache_dir() / f"mt19937_{digest}.so"
    if target.exists():
        try:
            return ctypes.CDLL(str(target))
        except OSError as exc:  # a damaged cache file (truncated, emptied): build it again
            _logger.warning("compiled MT19937 cache %s is unreadable (%s); rebuilding it",
                            target, exc)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "mt19937.c"
        src.write_text(_SOURCE)
        built = Path(tmp) / target.name
        subprocess.run([compiler, *flags, str(src), "-o", str(built)], check=True,
                       capture_output=True, timeout=120)
        os.replace(built, target)  # atomic: a concurrent worker sees all or nothing
    return ctypes.CDLL(str(target))


def _load() -> object:
    lib = _build()
    fill = lib.mt19937_fill
    fill.restype = None
    fill.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                     ctypes.c_uint32]
    # Bit for bit against numpy from a mid-block position, across several regenerations,
    # in uneven pieces.
    reference = np.random.MT19937(12345)
    reference.random_raw(101)
    state = reference.state["state"]
    key = np.array(state["key"], dtype=np.uint32)
    pos = np.array([state["pos"]], dtype=np.int32)
    expected = reference.random_raw(3001).astype(np.uint32)
    got = np.empty(3001, dtype=np.uint32)
    start = 0
    for size in (1, 622, 1249, 1129):
        fill(key.ctypes.data, pos.ctypes.data, got[start:].ctypes.data, size, 0xFFFFFFFF)
        start += size
    if not np.array_equal(got, expected):
        raise ArithmeticError("compiled MT19937 differs from numpy's")
    if not np.array_equal(key, np.asarray(reference.state["state"]["key"], dtype=np.uint32)):
        raise ArithmeticError("compiled MT19937 left another state than numpy's")
    return fill


def _native() -> object:
    global _function
    with _lock:
        if _function is None:
            try:
                _function = _load()
            except Exception as exc:  # no compiler, failed build, mismatch: numpy draws
                _logger.info("compiled MT19937 unavailable (%s: %s); drawing through numpy",
                             type(exc).__name__, exc)
                _function = False
        return _function


def mt19937_uint24(key: np.ndarray, pos: np.ndarray, out: np.ndarray) -> np.ndarray | None:
    """Fill int32 ``out`` with the next ``out.size`` MT19937 outputs' low 24 bits, advancing the
    state in place (``key``: C-contiguous uint32[624]; ``pos``: int32[1], numpy's position).
    Returns ``out``, or None (state untouched) where the compiled loop is unavailable."""
    fill = _native()
    if not fill:
        return None
    if key.dtype != np.uint32 or key.shape != (624,) or not key.flags.c_contiguous:
        raise ValueError("key must be a C-contiguous uint32 array of 624 words")
    if pos.dtype != np.int32 or pos.shape != (1,) or not 0 <= int(pos[0]) <= 624:
        raise ValueError("pos must be an int32 array holding one position in [0, 624]")
    if out.dtype != np.int32 or out.ndim != 1 or not out.flags.c_contiguous:
        raise ValueError("out must be a flat C-contiguous int32 array")
    fill(key.ctypes.data, pos.ctypes.data, out.ctypes.data, out.size, _U24_MASK)
    return out
