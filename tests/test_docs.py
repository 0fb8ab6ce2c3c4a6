"""The documentation: runnable examples, doctests, code-block policy, API
coverage, paper-to-code references, the theory page's numbers, and a strict
offline site build.

Every code block on the pages this file polices is one of: an include of a
section of a script under `docs/examples/` (each script is run here, at
`MNEMOSYNE_EXAMPLE_STEPS=5`), a doctest (run here), or one of the README's
shell commands (checked word for word; the demo command is run here at 5 steps).
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import json
import os
import pathlib
import re
import runpy
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.py"))
SUBPACKAGES = ("meta", "tasks", "baselines", "backends", "evaluation")
# Pages owned by the evaluation / benchmark / reliability work: their numbers and
# commands are theirs, and are not held to the code-block policy below.
NOT_POLICED = {
    "results.md",
    "performance.md",
    "reliability.md",
    "results_suite/results.md",
    "results_suite_v1/results.md",
    "results_ablation_v1/ablation.md",
    "results_long/results.md",
}
POLICED_PAGES = sorted(
    p for p in DOCS.rglob("*.md") if p.relative_to(DOCS).as_posix() not in NOT_POLICED
)
# Examples that compile a meta-gradient and an evaluation (about a minute of CPU
# even at 5 steps) or several sharded programs (about 20 s): CI runs them with
# `python -m pytest -q -m slow tests/test_docs.py`, keeping the default run short.
SLOW_EXAMPLES = {"meta_train.py", "sharded.py"}
FAST_STEPS = "5"

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```",
    re.M | re.S,
)
_INCLUDE = re.compile(r'^\s*--8<-- "(?P<path>[^":]+)(?::(?P<section>[^"]+))?"\s*$')


def _code_blocks(page: pathlib.Path) -> list[tuple[str, str]]:
    """`(language, body)` of every fenced code block of a Markdown file."""
    return [(m["lang"], m["body"]) for m in _FENCE.finditer(page.read_text())]


# --------------------------------------------------------------------------- #
# examples
# --------------------------------------------------------------------------- #


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"getting_started.py", "meta_train.py", "sharded.py"} <= names


@pytest.mark.parametrize(
    "example",
    [
        pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW_EXAMPLES else p
        for p in EXAMPLES
    ],
    ids=lambda p: p.name,
)
def test_example_runs(example, tmp_path, monkeypatch):
    """Each docs example runs to completion (its own asserts check the results),
    in this process: the sharded example needs the 8 host devices conftest.py
    sets up before JAX starts."""
    import jax

    if example.name == "sharded.py":
        assert jax.device_count() >= 8, "conftest.py should give 8 host devices"
    monkeypatch.setenv("MNEMOSYNE_EXAMPLE_STEPS", FAST_STEPS)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runpy.run_path(str(example), run_name="__main__")


def test_every_example_is_on_a_page():
    """No orphan example: each script is included by some page."""
    text = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    for example in EXAMPLES:
        rel = example.relative_to(ROOT).as_posix()
        assert f'--8<-- "{rel}' in text, f"{rel} is not included by any page"


# --------------------------------------------------------------------------- #
# code blocks on the pages
# --------------------------------------------------------------------------- #


def _readme_commands() -> set[str]:
    return {
        body.strip()
        for lang, body in _code_blocks(ROOT / "README.md")
        if lang in ("bash", "sh")
    }


@pytest.mark.parametrize(
    "page", POLICED_PAGES, ids=lambda p: p.relative_to(DOCS).as_posix()
)
def test_code_blocks_are_executed(page):
    """Every code block is an include of an executed script, a doctest, a README
    command, a launch command of the Scale out page, or a BibTeX entry (the
    FAQ's citation)."""
    readme_commands = _readme_commands()
    for lang, body in _code_blocks(page):
        lines = [ln for ln in body.splitlines() if ln.strip()]
        where = f"{page.relative_to(DOCS)}: block {body[:60]!r}"
        if lang == "python":
            if lines and lines[0].lstrip().startswith(">>>"):
                continue  # a doctest: test_page_doctests runs it
            for line in lines:
                m = _INCLUDE.match(line)
                assert m, (
                    f"{where}: python code that is neither an include nor a doctest"
                )
                path = m["path"]
                assert path.startswith("docs/examples/") and path.endswith(".py"), (
                    f"{where}: includes {path}, which no test runs"
                )
                assert m["section"], f"{where}: include a named section"
        elif lang in ("bash", "sh"):
            # (the Scale out page's launch commands: test_multiprocess.py runs
            # the two-process one, test_cli.py parses every mnemosyne command)
            assert body.strip() in readme_commands or page.name == "scale-out.md", (
                f"{where}: a shell command that is not one of the README's"
            )
        elif lang == "bibtex":
            assert "2302.01128" in body, where
        else:
            raise AssertionError(
                f"{where}: code block of language {lang!r} is not executed"
            )


def test_snippet_sections_exist():
    """Every `--8<-- "file:section"` in the docs names a section its file defines."""
    pattern = re.compile(r'--8<-- "([^":]+):([^"]+)"')
    for page in DOCS.rglob("*.md"):
        for path, section in pattern.findall(page.read_text()):
            text = (ROOT / path).read_text()
            assert f"--8<-- [start:{section}]" in text, (page.name, path, section)
            assert f"--8<-- [end:{section}]" in text, (page.name, path, section)


_DOCTEST_PAGES = [p for p in POLICED_PAGES if ">>>" in p.read_text()]


@pytest.mark.parametrize(
    "page", _DOCTEST_PAGES, ids=lambda p: p.relative_to(DOCS).as_posix()
)
def test_page_doctests(page):
    """The doctests on the pages pass (and none is skipped wholesale)."""
    text = page.read_text()
    assert "+SKIP" not in text, f"{page.name}: a skipped doctest is not executed"
    test = doctest.DocTestParser().get_doctest(text, {}, page.name, str(page), 0)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{page.name}: {result.failed} doctest example(s) failed"


def test_readme_commands_on_the_pages():
    """Home and Getting started show the README's two commands, word for word."""
    commands = _readme_commands()
    assert len(commands) >= 2
    for name in ("index.md", "getting-started.md"):
        shown = {
            body.strip() for lang, body in _code_blocks(DOCS / name) if lang == "bash"
        }
        assert shown and shown <= commands, name
    assert any(c.endswith("mnemosyne demo") for c in commands)


@pytest.mark.slow
def test_demo_command_runs(tmp_path):
    """`mnemosyne demo` (the README's first command), at 5 steps."""
    exe = shutil.which("mnemosyne", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "mnemosyne"]
    out = tmp_path / "demo_out"
    proc = subprocess.run(
        [*cmd, "demo", "--steps", FAST_STEPS, "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "results.md").exists() and (out / "results.json").exists()
    assert list(out.glob("*.png"))


# --------------------------------------------------------------------------- #
# API reference
# --------------------------------------------------------------------------- #


def _documented() -> set[str]:
    text = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    return set(re.findall(r"^:::\s*([\w.]+)", text, flags=re.M))


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def test_api_reference_covers_public_api():
    """Every name in `mnemosyne.__all__` and the sub-packages' `__all__`
    has a `::: ` entry in docs/api/*.md (optax's coverage check, as a test)."""
    import mnemosyne

    documented = _documented()
    unresolved = sorted(n for n in documented if _resolve(n) is None)
    assert not unresolved, (
        f"docs/api/*.md documents names that do not exist: {unresolved}"
    )
    wanted = {f"mnemosyne.{n}" for n in mnemosyne.__all__}
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"mnemosyne.{sub}")
        assert getattr(module, "__all__", None), f"mnemosyne.{sub} has no __all__"
        wanted |= {f"mnemosyne.{sub}.{n}" for n in module.__all__}
    # a re-export (e.g. mnemosyne.backends.sharded_update is
    # mnemosyne.sharded_update) is covered by documenting the object once
    documented_objects = {id(_resolve(n)) for n in documented}
    missing = {
        n
        for n in wanted
        if n not in documented and id(_resolve(n)) not in documented_objects
    }
    assert not missing, f"not in docs/api/*.md: {sorted(missing)}"


def _api_doctests() -> list[doctest.DocTest]:
    """The doctests in the docstrings the API reference renders (once each)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    package = str(ROOT / "mnemosyne")
    found = {}
    for name in sorted(_documented()):
        obj = _resolve(name)
        module = obj if inspect.ismodule(obj) else inspect.getmodule(obj)
        globs = dict(vars(module)) if module is not None else {}
        for test in finder.find(obj, name, module=module, globs=globs):
            if test.examples and (test.filename or "").startswith(package):
                found.setdefault((test.filename, test.lineno), test)
    return list(found.values())


@pytest.mark.slow
def test_api_docstring_examples():
    """The `Examples:` of every docstring in the API reference pass (about
    20 s of CPU: slow, run by the docs' slow job)."""
    tests = _api_doctests()
    assert len(tests) >= 5
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    failures = []
    for test in tests:
        runner = doctest.DocTestRunner(optionflags=flags)
        if runner.run(test).failed:
            failures.append(test.name)
    assert not failures, f"failing docstring examples: {failures}"


def test_api_pages_are_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (DOCS / "api").glob("*.md"):
        assert f"api/{page.name}" in nav, page.name


# --------------------------------------------------------------------------- #
# paper to code, theory, home
# --------------------------------------------------------------------------- #


def test_paper_to_code_symbols_exist():
    """Every `file` · `symbol` in the paper-to-code overview table exists, and
    every file path named on the page is in the repository."""
    text = (DOCS / "paper-to-code.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("|") and "` · `" in ln]
    assert len(rows) >= 8
    checked = 0
    for row in rows:
        cell = row.split("|")[3]
        for group in cell.split(";"):
            if "·" not in group:
                continue
            file_part, symbols = group.split("·", 1)
            (path,) = re.findall(r"`([^`]+)`", file_part)
            module = "mnemosyne." + path.removesuffix(".py").rstrip("/").replace(
                "/", "."
            )
            assert (ROOT / "mnemosyne" / path).exists(), f"{path} does not exist"
            for symbol in re.findall(r"`([^`]+)`", symbols):
                assert _resolve(f"{module}.{symbol}") is not None, f"{path} · {symbol}"
                checked += 1
    assert checked >= 25
    # every other identifier in backticks is defined somewhere in the package
    source = "\n".join(p.read_text() for p in (ROOT / "mnemosyne").rglob("*.py"))
    for name in re.findall(r"`([A-Za-z_]\w*(?:\.\w+)*)`", text):
        if name in ("lax.scan", "learning_rate", "mnemosyne") or name.endswith(".py"):
            continue
        last = name.rsplit(".", 1)[-1]
        # or registered
        defined = rf"\b(?:def|class) {last}\b|\b{last}\s*[:=]|[\"']{last}[\"']"
        assert re.search(defined, source), name
    for path in re.findall(r"`((?:mnemosyne|tests|scripts|docs)/[\w/.]+\.\w+)`", text):
        assert (ROOT / path).exists(), path


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cam_capacity_measurements():
    """scripts/cam_capacity.py on a tiny grid: one stored pattern is retrieved
    exactly by both memories; with many random features the CAM's error is
    close to exact softmax attention's (the features are unbiased for the
    softmax kernel); the error grows with L; discounting makes recent patterns
    easier to retrieve than old ones."""
    cam = _load_script("cam_capacity")
    grid = dict(
        cam.FULL,
        seeds=(0,),
        Ls=(1, 4, 16),
        dims=(8,),
        rs=(16, 2048),
        betas=(1.0,),
        taus=(0.0, 0.3),
        noises=(0.0,),
        base_d=8,
        base_beta=1.0,
    )
    result = cam.run(grid)

    def err(**kw):
        (rec,) = cam.select(result["records"], **kw)
        return rec["rel_error"]

    base = dict(d=8, beta=1.0, tau=0.0, noise=0.0)
    assert err(memory="exact", L=1, **base) < 1e-9
    assert err(memory="cam", r=16, L=1, **base) < 1e-9
    for L in (4, 16):
        assert (
            abs(
                err(memory="cam", r=2048, L=L, **base)
                - err(memory="exact", L=L, **base)
            )
            < 0.05
        )
    assert (
        err(memory="exact", L=1, **base)
        < err(memory="exact", L=4, **base)
        < err(memory="exact", L=16, **base)
    )
    ages = result["age_profile"]["0.3"]["exact"]  # by age 1..16, at L = 16
    assert ages[0] < 0.5 * ages[-1]


def _theory_table_rows(text: str, header_start: str) -> list[list[str]]:
    block = text[text.index(header_start) :]
    rows = []
    for line in block.splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_theory_page_numbers_match_the_measurements():
    """The theory page's tables quote docs/images/cam_capacity.json (2 decimals)."""
    text = (DOCS / "theory.md").read_text()
    data = json.loads((DOCS / "images" / "cam_capacity.json").read_text())
    cam = _load_script("cam_capacity")

    def err(**kw):
        (rec,) = cam.select(data["records"], **kw)
        return rec["rel_error"]

    rows = _theory_table_rows(text, "| β | memory | L = 16")
    assert len(rows) >= 6
    for beta, memory, *values in rows:
        kw = dict(d=32, beta=float(beta), tau=0.0, noise=0.0)
        if memory == "exact softmax":
            kw["memory"] = "exact"
        else:
            kw.update(memory="cam", r=int(memory.split("=")[1]))
        for L, shown in zip((16, 64, 256, 1024), values, strict=True):
            assert f"{err(L=L, **kw):.2f}" == shown, (beta, memory, L)
    rows = _theory_table_rows(text, "| τ | memory | age 1")
    assert len(rows) == 6
    for tau, memory, *values in rows:
        profile = data["age_profile"][str(float(tau))]
        series = (
            profile["exact"]
            if memory == "exact"
            else profile[f"cam_r{memory.split('=')[1].strip()}"]
        )
        for age, shown in zip((1, 10, 100, 1000), values, strict=True):
            assert f"{series[age - 1]:.2f}" == shown, (tau, memory, age)


def test_headline_table_is_the_suite_result():
    """The README's and the Results page's pretrained-vs-Adam table is exactly
    what scripts/headline_table.py prints for the committed suite result."""
    from mnemosyne.evaluation import EvaluationResult

    script = _load_script("headline_table")
    result = EvaluationResult.load(DOCS / "results_suite" / "results.json")
    record = json.loads(script.WEIGHTS_RECORD.read_text())
    table = script.headline_table(result, record)
    assert "| vit_digits | vit (held out) |" in table
    for page in (ROOT / "README.md", DOCS / "results.md"):
        assert table in page.read_text(), f"{page.name} does not hold the current table"


def test_readme_usage_snippet_trains():
    """The README's "Use it" snippet runs as written in a fresh interpreter
    (nothing imported before it, as a user would run it), its `step` lowers
    the loss of its own least-squares problem, and its LSTM lines give the
    pretrained LSTM optimizer."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use it") :]
    code = section[
        section.index("```python") + len("```python") : section.index(
            "```\n", section.index("```python") + 9
        )
    ]
    assert (
        "mnemosyne.baselines.lstm()" in code
        and 'mnemosyne.pretrained("lstm_v2")' in code
    )
    check = """
x = jax.random.normal(jax.random.key(0), (32, 3))
y = x @ jnp.array([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]]) + 0.3
losses = []
for _ in range(300):
    params, state, loss = step(params, state, x, y)
    losses.append(float(loss))
assert losses[-1] < 0.5 * losses[0], losses[::30]  # v2 steps ~1e-3..7e-3, like Adam
assert type(theta).__name__ == "LSTMOptimizer" and callable(lstm.update)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code + check], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_home_headline_numbers_are_quoted():
    """Each number in the Home page's headline results appears on the page the
    bullet cites (Results or Performance), so the summary cannot drift from
    the numbers their owners keep."""
    text = (DOCS / "index.md").read_text()
    section = text[text.index("## Headline results") : text.index("## Install and run")]
    bullets = [b for b in section.split("\n- ")[1:]]
    assert len(bullets) >= 3
    for bullet in bullets:
        cited = set(re.findall(r"\]\(((?:results|performance)\.md)\)", bullet))
        assert cited, f"headline bullet cites no page: {bullet[:60]!r}"
        source = "\n".join((DOCS / c).read_text() for c in cited)
        prose = re.sub(r"\]\([^)]*\)|`[^`]*`", "", bullet)
        for number in re.findall(r"\d+(?:\.\d+)?(?:/\d+)?", prose):
            assert number in source, f"{number} is not on {sorted(cited)}"


# --------------------------------------------------------------------------- #
# the site
# --------------------------------------------------------------------------- #


def test_mkdocs_build_strict(tmp_path):
    """`mkdocs build --strict` succeeds offline, renders the math to MathML, and
    the built pages load nothing from other hosts."""
    mkdocs = shutil.which("mkdocs") or shutil.which(
        "mkdocs", path=os.path.dirname(sys.executable)
    )
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("latex2mathml")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pages = {
        p.relative_to(site).as_posix(): p.read_text() for p in site.rglob("*.html")
    }
    for name in (
        "index.html",
        "theory/index.html",
        "paper-to-code/index.html",
        "api/optimizers/index.html",
        "getting-started/index.html",
    ):
        assert name in pages, name
    assert (
        "<math" in pages["theory/index.html"]
        and "<math" in pages["paper-to-code/index.html"]
    )
    for name, html in pages.items():
        # MathML Core (what Chromium renders) ignores these: the hook writes letters
        variants = set(re.findall(r'mathvariant="([\w-]+)"', html)) - {"normal"}
        assert not variants, f"{name}: mathvariant {variants} would not render"
        remote = re.findall(
            r'<(?:script|link|img)\b[^>]*(?:src|href)="(https?:)?//', html
        )
        assert not remote, f"{name} loads a resource from another host"
        # every local image a page shows was built
        for src in re.findall(r'<img[^>]*src="([^"]+)"', html):
            assert (site / name).parent.joinpath(src).resolve().exists(), (name, src)
    # docstring examples render as code, not as `>>>` block quotes
    for name, html in pages.items():
        if name.startswith("api/"):
            assert "<blockquote>" not in html, f"{name}: an example rendered as a quote"
    # the snippets were included, not left as markers
    assert "--8&lt;--" not in pages["getting-started/index.html"]
    assert "train_step" in pages["getting-started/index.html"]
