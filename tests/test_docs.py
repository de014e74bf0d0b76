"""The documentation stays true to the repository.

- docs/config.md is what scripts/config_reference.py generates from the schema dataclasses now (`make docs`).
- Every repository path cited in the docs (README.md, docs/**/*.md) and in the comments and docstrings of the code
  and configs (vbon_exp/**/*.py, scripts/*.py, conf/**/*.yaml, Makefile, pyproject.toml) exists, and every relative
  markdown link of the docs resolves (its file, and its #anchor to a heading of that file).

A cited path is a token that starts with a top-level directory of the repository (`vbon_exp/`, `conf/`, `scripts/`,
`tests/`, `docs/`) or is `README.md`, `Makefile` or `pyproject.toml`, made of the characters [A-Za-z0-9_./*<>{}-]
and not preceded by one of them (nor by `/`); trailing punctuation is stripped, and a `:line` or `::name` suffix
(tests/test_docs.py::test_cited_paths_exist) is not part of it. Tokens containing `<`, `{` or `*` are templates or
globs (`docs/results/<name>/`, `conf/objective/*.yaml`) and are skipped, as are paths under `outputs/`.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PATH_CHARS = r"A-Za-z0-9_./*<>{}\-"
CITED = re.compile(
    rf"(?<![{PATH_CHARS}])"  # a token starts here
    rf"((?:vbon_exp|conf|scripts|tests|docs)/[{PATH_CHARS}]*|(?:README\.md|Makefile|pyproject\.toml)(?![A-Za-z0-9_]))"
    r"(?::\d+|::\w+)?"  # a :line or ::name suffix, not part of the path
)
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _load_config_reference():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- (a) the generated config reference


def test_config_reference_is_current():
    ref = _load_config_reference()
    expected = ref.render()
    current = ref.OUT.read_text(encoding="utf-8") if ref.OUT.exists() else ""
    assert current == expected, (
        "docs/config.md is stale (the schema dataclasses or their field comments changed): run make docs")


def test_config_reference_reads_comments_and_inherited_fields():
    """The generator's reading of a class source: the comment lines directly above a field, the most derived
    definition of an inherited field, nested dataclasses as dotted keys."""
    ref = _load_config_reference()
    from vbon_exp.config import schema_catalogue

    catalogue = dict(schema_catalogue())
    text = ref.render(list(catalogue.items()))
    assert "| `train.lora.rank` |" in text
    # bon's `n` is redefined twice below ObjectiveConfig: the most derived comment (PoolNConfig's) wins
    bon = ref.field_comments(catalogue["objective=bon"])
    assert "all" in bon["n"] and bon["name"]


# --------------------------------------------------------------------------- (b) cited paths and links


def _doc_files() -> list[Path]:
    docs = [ROOT / "README.md"]
    for path in sorted((ROOT / "docs").rglob("*.md")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("docs/results/") and path.name != "README.md":
            continue  # the measured data of docs/results/: only each study's README is prose
        docs.append(path)
    return docs


def _python_texts(path: Path):
    """(line, text) of every comment and docstring of a Python file."""
    source = path.read_text(encoding="utf-8")
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                for i, line in enumerate(first.value.value.splitlines()):
                    yield first.lineno + i, line


def _hash_comments(path: Path):
    """(line, text) of the `#` comments of a YAML file, the Makefile or pyproject.toml."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.lstrip()
        if stripped.startswith("#"):
            yield number, stripped
        elif " #" in line:
            yield number, line[line.index(" #"):]


def _cited(text: str):
    for match in CITED.finditer(text):
        token = match.group(1).rstrip(".,;:!?'\"`-")
        if any(c in token for c in "<{*") or token.startswith("outputs/"):
            continue
        yield token


def _sources():
    """(file, line, text) of everything whose cited paths must exist."""
    for path in _doc_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            yield path, number, line
    for path in sorted([*(ROOT / "vbon_exp").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        for number, text in _python_texts(path):
            yield path, number, text
    for path in sorted([*(ROOT / "conf").rglob("*.yaml"), ROOT / "Makefile", ROOT / "pyproject.toml"]):
        for number, text in _hash_comments(path):
            yield path, number, text


def test_cited_paths_exist():
    missing = []
    for path, number, text in _sources():
        for token in _cited(text):
            if not (ROOT / token).exists():
                missing.append(f"{path.relative_to(ROOT).as_posix()}:{number}: {token}")
    assert not missing, "cited paths that do not exist:\n  " + "\n  ".join(missing)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (but - and _), spaces as hyphens."""
    heading = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    return "".join(c for c in heading.lower() if c.isalnum() or c in " -_").replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors, in_code, seen = set(), False, {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            slug = _slug(line.lstrip("#"))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_markdown_links_resolve():
    broken = []
    for path in _doc_files():
        in_code = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("```"):
                in_code = not in_code
            if in_code:
                continue
            for target in LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                    continue
                file_part, _, anchor = target.partition("#")
                dest = (path.parent / file_part).resolve() if file_part else path
                where = f"{path.relative_to(ROOT).as_posix()}:{number}: {target}"
                if not dest.exists():
                    broken.append(f"{where} (no such file)")
                elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                    broken.append(f"{where} (no heading #{anchor})")
    assert not broken, "markdown links that do not resolve:\n  " + "\n  ".join(broken)
