"""Shared pytest configuration and fixtures.

`XLA_FLAGS` must be set before JAX initialises its CPU backend, so it is set
here, before anything imports jax: 8 fake CPU devices for the sharding tests.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import itertools  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402
from helpers import enable_x64  # noqa: E402

# Strict dtype promotion (style.md) is *not* switched on globally: the float64
# conformance tests multiply float32 θ by float64 features on purpose, which
# strict promotion rejects, and other test modules share this conftest.


def pytest_configure(config):
    """The default suite (`-m 'not slow'`, pyproject's addopts) compiles every
    program with LLVM at -O0, as `helpers.FAST_COMPILE` does for the test jits:
    compiles dominate it, and -O0 roughly halves them (results stay IEEE-exact:
    the same HLO, only less optimised machine code). The slow tests, which run
    long unrolls, keep XLA's default. It takes effect because nothing has
    initialised a JAX backend yet (collection has not started)."""
    flag = "--xla_backend_optimization_level=0"
    flags = os.environ.get("XLA_FLAGS", "")
    if config.option.markexpr == "not slow" and "optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
    _share_compiled_programs(config)


_CACHE_VARIABLE = "MNEMOSYNE_TEST_COMPILATION_CACHE"


def _share_compiled_programs(config):
    """Point JAX's persistent compilation cache at one fresh directory for
    the whole run, shared by the pytest-xdist workers (they inherit the
    variable the controller sets before starting them) and removed at the
    end: many tests compile the same program from closures of their own,
    which the in-process jit cache cannot see, and reading it back is faster
    than compiling again (two alternating pairs of runs of the default
    suite in session 32: 267 and 277 s with it, 286 and 295 s without).
    Every program is cached, however quick its compile (-O0 makes most take
    under a second). The cached executable is the one XLA would build: the
    key holds the program, the flags and the versions."""
    if _CACHE_VARIABLE not in os.environ:
        os.environ[_CACHE_VARIABLE] = tempfile.mkdtemp(prefix="mnemosyne-xla-")
        config.add_cleanup(lambda: shutil.rmtree(os.environ.pop(_CACHE_VARIABLE),
                                                 ignore_errors=True))
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_VARIABLE])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


@pytest.fixture
def getkey():
    """A function returning a fresh PRNG key on every call (deterministic per test)."""
    base = jax.random.key(0)
    counter = itertools.count()

    def _getkey():
        return jax.random.fold_in(base, next(counter))

    return _getkey


@pytest.fixture
def x64():
    """Enable `jax_enable_x64` for the duration of one test, then restore it."""
    with enable_x64():
        yield


@pytest.fixture(params=["numpy", "jax"])
def backend(request):
    """The name of a kernel backend; tests run once per backend."""
    return request.param
