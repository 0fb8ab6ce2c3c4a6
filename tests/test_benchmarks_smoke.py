"""The benchmarks never rot: every asv benchmark method runs once, at the smallest
size (one transformer block, 1e4 parameters, mlp_digits, tiny meta-trainer), and
the standalone table script runs. No timing assertions."""

import importlib
import inspect
import itertools
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
MODULES = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
PREFIXES = ("time_", "track_", "peakmem_", "mem_", "timeraw_")
# smallest values for the size-like parameters; others run every value
SMALL = {"num_params": [10**4], "task": ["mlp_digits"], "dtype": ["float32"]}

# Every benchmark compiles its own programs (about 3 min in all on 2 cores):
# slow, run by .ci/run (`python -m pytest -m slow tests/test_benchmarks_smoke.py`).
pytestmark = pytest.mark.slow

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def small(monkeypatch, tmp_path):
    """Shrink the shared helpers and share compiled programs between benchmarks."""
    common = importlib.import_module("benchmarks._common")
    monkeypatch.setattr(common, "NUM_BLOCKS", 1)
    monkeypatch.setitem(sys.modules, "_common", common)  # what timeraw code imports
    orig_ratio = common.update_ratio
    orig_train = common.train_step_ratio
    monkeypatch.setattr(
        common, "update_ratio", lambda *a, **k: orig_ratio(*a, **{**k, "repeats": 1})
    )
    monkeypatch.setattr(
        common,
        "train_step_ratio",
        lambda *a, **k: orig_train(*a, **{**k, "repeats": 1}),
    )
    monkeypatch.setattr(common, "auto_number", lambda fn, target_s=0.0: 1)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield common
    jax.config.update("jax_compilation_cache_dir", None)


def _cases():
    for mod_name in MODULES:
        module = importlib.import_module(f"benchmarks.{mod_name}")
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            methods = [m for m in dir(cls) if m.startswith(PREFIXES)]
            if methods:
                yield pytest.param(mod_name, cls_name, id=f"{mod_name}.{cls_name}")


def _param_combos(cls):
    names = list(getattr(cls, "param_names", []))
    values = getattr(cls, "params", [])
    if names and values and not isinstance(values[0], list):
        values = [values]
    lists = [SMALL.get(n, v) for n, v in zip(names, values, strict=True)]
    return list(itertools.product(*lists)) if names else [()]


@pytest.mark.parametrize("mod_name,cls_name", list(_cases()))
def test_benchmark_runs(small, monkeypatch, mod_name, cls_name):
    module = importlib.import_module(f"benchmarks.{mod_name}")
    cls = getattr(module, cls_name)
    for attr, value in {
        "small": True,
        "stream_size": 10**5,
        "num_params": 10**4,
        "num_steps": 2,
    }.items():
        if hasattr(cls, attr):
            monkeypatch.setattr(cls, attr, value)
    ran = 0
    for combo in _param_combos(cls):
        bench = cls()
        try:
            if hasattr(bench, "setup"):
                bench.setup(*combo)
        except NotImplementedError:
            continue  # asv's skip
        for name in (m for m in dir(cls) if m.startswith(PREFIXES)):
            out = getattr(bench, name)(*combo)
            if name.startswith("track_"):
                assert isinstance(out, (int, float))
            if name.startswith("timeraw_"):
                stmt, setup = out
                namespace: dict = {}
                exec(setup, namespace)
                exec(stmt, namespace)
            ran += 1
    assert ran or mod_name == "bench_quality"


def test_update_ratio_script(small):
    module = importlib.import_module("benchmarks.update_ratio")
    assert (
        module.main(
            ["--sizes", "1e4", "--repeats", "1", "--stream-size", "1e5", "--no-train"]
        )
        == 0
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("asv") is None and
                    importlib.util.find_spec("asv") is None, reason="asv not installed")
def test_asv_check():
    asv = [sys.executable, "-m", "asv"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.run([*asv, "machine", "--yes"], cwd=ROOT, check=True, env=env)
    subprocess.run([*asv, "check", "--python=same"], cwd=ROOT, check=True, env=env)


def test_update_anatomy_script(small, capsys):
    module = importlib.import_module("benchmarks.update_anatomy")
    assert module.main(["--size", "1e4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    # bytes moved per parameter come from the compiled HLO: Adam reads and
    # writes at least params, grads and its two moments (4 bytes each)
    adam_bytes = float(
        next(ln for ln in out.splitlines() if ln.startswith("| adam")).split("|")[3]
    )
    assert adam_bytes >= 5 * 4


def test_tradeoff_script(small, capsys):
    module = importlib.import_module("benchmarks.tradeoff")
    ablation = str(ROOT / "docs" / "results_ablation_v1" / "ablation.json")
    assert module.main(["--size", "1e4", "--repeats", "1", "--ablation", ablation]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [ln for ln in lines if ln.startswith("| h")]
    floats = {r.split(":")[0].strip("| "): float(r.split("|")[2]) for r in rows}
    # state floats per parameter: heads * r * (value size + 1), + 1 second moment (v2)
    assert floats == {"h1_r2": 5.0, "h3_r2": 13.0, "h1_r4": 9.0, "h1_r8": 17.0}
    (floor,) = [ln for ln in lines if ln.startswith(f"| {module.WITHOUT_MEMORY}:")]
    assert float(floor.split("|")[3].strip(" x")) > 0


def test_features_and_head_only_is_the_step_without_the_read_out():
    """The program timed as 'no memory' computes exactly the first step of an
    optimizer whose read-out weights are zero."""
    import jax.numpy as jnp

    import mnemosyne
    from mnemosyne.evaluation._ablation import _read_start, _zero_read_out

    module = importlib.import_module("benchmarks.tradeoff")
    default = mnemosyne.pretrained("default")
    lopt = _zero_read_out(default, _read_start(default))
    keys = jax.random.split(jax.random.key(0), 4)
    params = {
        "w": jax.random.normal(keys[0], (7, 5)),
        "b": jax.random.normal(keys[1], (5,)),
    }
    grads = {
        "w": jax.random.normal(keys[2], (7, 5)),
        "b": 1e-3 * jax.random.normal(keys[3], (5,)),
    }
    expected, _ = mnemosyne.scale_by_mnemosyne(lopt).update(
        grads, lopt.init(params), params
    )
    got, _ = module.features_and_head_only(lopt).update(grads, None, params)
    for name in params:
        assert jnp.allclose(got[name], expected[name], rtol=1e-5, atol=1e-7)
        assert float(jnp.max(jnp.abs(got[name]))) > 0
