"""The paper against its producers, read statically (no LaTeX, no chapter run).

What ``paper/main.tex`` shows must be made by a chapter: every ``\\includegraphics``
names a figure of the manifest ``paper/figures.toml``; every values macro it uses
is written by some chapter's ``write_values``; every manifest figure is saved by
its chapter and is either in the paper or marked ``supplementary = true``; labels
are unique and every reference and citation resolves; no two chapters write the
same macro.

How a chapter's macros and figures are found (the rule, no code is run): the
notebook ``notebooks/<chapter>.py`` is parsed with :mod:`ast`.

* Macros: the keys of the dict passed to ``write_values(chapter, values, ...)``;
  where that argument is a name ``values``, the keys of every ``values = {...}``,
  ``values |= {...}``, ``values.update({...})`` and ``values[key] = ...`` at the
  notebook's top level; ``values |= more`` or ``values.update(more)`` of another
  top-level dict variable ``more`` adds the keys of ``more`` by the same rule.
* Figures: the name argument of every ``plotting.savefig(fig, name)``.
* A key or name is a string literal or an f-string. An f-string's replacement
  field becomes the strings it can take where those are literal: a name bound at
  the top level only by ``for`` loops over literal tuples or by string
  assignments (``for field, suffix in ((T, "T"), (U, "U"))``), a ``.title()`` /
  ``.upper()`` / ``.lower()`` / ``.capitalize()`` of one, a subscript of a
  top-level dict literal of strings (``LABELS[name]``), or ``"a" if c else "b"``;
  any other field matches any letters (macros) or any name characters (figures).
  So ``f"sampling{score.title()}{label.title()}{suffix}"`` is the pattern
  ``sampling(Spread|Rmse)[A-Za-z]+(T|U)``. Any other key expression is an error.

A values macro in the paper is a control word in camelCase with a lower-case
start (``\\dataJetNorthSpeed``), the chapters' naming rule; the few LaTeX commands
of that shape are listed in ``LATEX_CAMEL_CASE``.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "paper"
NOTEBOOKS = ROOT / "notebooks"
MACRO_WILDCARD = "[A-Za-z]+"
FIGURE_WILDCARD = "[A-Za-z0-9_]+"
STRING_METHODS = {"title", "upper", "lower", "capitalize"}
LATEX_CAMEL_CASE = {"lVert", "rVert"}
SCOPES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.Lambda,
    ast.ClassDef,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
)


# --- reading a notebook -----------------------------------------------------------------


def top_level(node: ast.AST):
    """The nodes of the module's own scope: not inside functions, classes, lambdas or comprehensions."""
    for child in ast.iter_child_nodes(node):
        yield child
        if not isinstance(child, SCOPES):
            yield from top_level(child)


def literal_strings(node: ast.AST) -> list[str] | None:
    """The strings a literal expression can be (a str constant, or both branches of ``a if c else b``); None if not literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = literal_strings(node.body), literal_strings(node.orelse)
        return None if body is None or orelse is None else body + orelse
    return None


def _merge(bindings: dict, name: str, strings: list[str] | None) -> None:
    """Add one binding of ``name``; once a binding is not literal, the name is unknown (None) for good."""
    known = bindings.get(name, [])
    bindings[name] = None if known is None or strings is None else known + strings


def _bind(target: ast.AST, value: ast.AST | None, bindings: dict) -> None:
    """Bind ``target = value`` (tuples unpacked element by element); ``value`` None: not literal."""
    if isinstance(target, ast.Name):
        _merge(bindings, target.id, None if value is None else literal_strings(value))
        return
    if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)):
        if len(value.elts) == len(target.elts):
            for t, v in zip(target.elts, value.elts, strict=True):
                _bind(t, v, bindings)
            return
    for name in ast.walk(target):
        if isinstance(name, ast.Name) and isinstance(name.ctx, ast.Store):
            _merge(bindings, name.id, None)


def _bind_loop(target: ast.AST, iterable: ast.AST, bindings: dict) -> None:
    """Bind the names of ``for target in iterable``: literal where ``iterable`` is a tuple or list literal."""
    if isinstance(iterable, (ast.Tuple, ast.List)):
        for item in iterable.elts:
            _bind(target, item, bindings)
    else:
        _bind(target, None, bindings)


def name_bindings(nodes) -> dict[str, list[str] | None]:
    """Each name stored in ``nodes`` -> the strings it can hold, or None where any binding is not a literal string."""
    bindings: dict[str, list[str] | None] = {}
    nodes = list(nodes)
    handled = set()
    for node in nodes:
        if isinstance(node, (ast.For, ast.comprehension)):
            _bind_loop(node.target, node.iter, bindings)
            handled |= {id(n) for n in ast.walk(node.target)}
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            _bind(node.targets[0], node.value, bindings)
            handled |= {id(n) for n in ast.walk(node.targets[0])}
    for node in nodes:  # any other store (augmented assignment, with, walrus, ...) is not literal
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and id(node) not in handled:
            _merge(bindings, node.id, None)
    return bindings


def string_tables(tree: ast.Module) -> dict[str, list[str]]:
    """Top-level ``NAME = {key: "str", ...}`` dict literals -> their string values."""
    tables = {}
    for node in top_level(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if isinstance(node.value, ast.Dict):
                strings = [literal_strings(v) for v in node.value.values]
                if strings and all(s is not None and len(s) == 1 for s in strings):
                    tables[node.targets[0].id] = [s[0] for s in strings]
    return tables


@dataclass
class Reader:
    """Turns key expressions of one notebook into regular expressions (the module docstring's rule)."""

    bindings: dict
    tables: dict
    wildcard: str
    problems: list = field(default_factory=list)

    def alternatives(self, expr: ast.AST) -> list[str] | None:
        strings = literal_strings(expr)
        if strings is not None:
            return strings
        if isinstance(expr, ast.Name):
            return self.bindings.get(expr.id)
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and not expr.args:
            inner = self.alternatives(expr.func.value) if expr.func.attr in STRING_METHODS else None
            return None if inner is None else [getattr(s, expr.func.attr)() for s in inner]
        if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name):
            return self.tables.get(expr.value.id)
        return None

    def field_pattern(self, part: ast.FormattedValue) -> str:
        strings = None if part.format_spec or part.conversion != -1 else self.alternatives(part.value)
        return self.wildcard if strings is None else "(?:" + "|".join(map(re.escape, dict.fromkeys(strings))) + ")"

    def pattern(self, expr: ast.AST, where: str) -> str | None:
        """The regular expression of the names ``expr`` can be; None (and a problem noted) if it is not a string."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return re.escape(expr.value)
        if isinstance(expr, ast.JoinedStr):
            parts = [
                re.escape(p.value) if isinstance(p, ast.Constant) else self.field_pattern(p) for p in expr.values
            ]
            return "".join(parts)
        self.problems.append(f"{where}: line {expr.lineno}: {ast.unparse(expr)} is not a string or f-string")
        return None


def _is_call(node: ast.AST, name: str, owner: str | None = None) -> bool:
    """``name(...)`` or ``<owner>.name(...)`` (any plain name as owner where ``owner`` is None)."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Name):
        return func.id == name
    owned = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.attr == name
    return owned and (owner is None or func.value.id == owner)


def _argument(call: ast.Call, position: int, keyword: str) -> ast.AST | None:
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _dict_keys(node: ast.AST, reader: Reader) -> list[tuple[ast.AST, Reader]]:
    """The keys of a dict literal or dict comprehension, each with the reader that resolves it."""
    if isinstance(node, ast.Dict):
        return [(k, reader) for k in node.keys if k is not None]
    if isinstance(node, ast.DictComp):
        inner = Reader({**reader.bindings, **name_bindings(node.generators)}, reader.tables, reader.wildcard)
        inner.problems = reader.problems
        return [(node.key, inner)]
    return []


def _keys_of_name(tree: ast.Module, name: str, reader: Reader, seen: frozenset = frozenset()) -> list[tuple[ast.AST, Reader]]:
    """Keys put into the top-level dict variable ``name``: assignments, ``|=``, ``.update`` and item stores;
    ``|=`` or ``.update`` of another top-level dict variable brings that variable's keys (followed once)."""
    seen = seen | {name}

    def merged(value: ast.AST) -> list[tuple[ast.AST, Reader]]:
        if isinstance(value, ast.Name) and value.id not in seen:
            return _keys_of_name(tree, value.id, reader, seen)
        return _dict_keys(value, reader)

    keys = []
    for node in top_level(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    keys += _dict_keys(node.value, reader)
                if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id == name:
                    keys.append((target.slice, reader))
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            keys += merged(node.value)
        elif _is_call(node, "update", owner=name):
            keys += [k for arg in node.args for k in merged(arg)]
    return keys


@dataclass
class Chapter:
    """What one notebook writes, as regular expressions: its macros and its figures."""

    stem: str
    macros: list[str]
    figures: list[str]
    values_chapters: set[str]
    problems: list[str]


def read_chapter(path: Path) -> Chapter:
    """Parse ``notebooks/<stem>.py`` (see the module docstring for the rule)."""
    tree = ast.parse(path.read_text(), str(path))
    bindings, tables = name_bindings(top_level(tree)), string_tables(tree)
    macro_reader, figure_reader = Reader(bindings, tables, MACRO_WILDCARD), Reader(bindings, tables, FIGURE_WILDCARD)
    figure_reader.problems = macro_reader.problems
    macros, figures, chapters = [], [], set()
    for node in top_level(tree):
        if _is_call(node, "write_values"):
            chapter, values = _argument(node, 0, "chapter"), _argument(node, 1, "values")
            chapters |= set(literal_strings(chapter) or [f"<not a literal: {ast.unparse(chapter)}>"])
            keys = _keys_of_name(tree, values.id, macro_reader) if isinstance(values, ast.Name) else []
            keys += _dict_keys(values, macro_reader)
            macros += [r.pattern(k, path.name) for k, r in keys]
        elif _is_call(node, "savefig", owner="plotting"):
            figures.append(figure_reader.pattern(_argument(node, 1, "name"), path.name))
    return Chapter(path.stem, [m for m in macros if m], [f for f in figures if f], chapters, macro_reader.problems)


# --- reading the paper -------------------------------------------------------------------


def tex_source() -> str:
    """``paper/main.tex`` without comments."""
    return re.sub(r"(?<!\\)%.*", "", (PAPER / "main.tex").read_text())


def included_figures(tex: str) -> list[str]:
    return [Path(name).stem for name in re.findall(r"\\includegraphics\s*(?:\[[^\]]*\])?\s*\{([^}]+)\}", tex)]


def used_macros(tex: str) -> set[str]:
    """Control words of the values-macro shape, less those ``main.tex`` defines itself."""
    defined = set(re.findall(r"\\(?:re)?newcommand\*?\s*\{?\\([A-Za-z]+)", tex))
    words = set(re.findall(r"\\([A-Za-z]+)", tex))
    return {w for w in words if re.fullmatch(r"[a-z]+[A-Z][A-Za-z]*", w)} - LATEX_CAMEL_CASE - defined


def manifest() -> dict[str, dict]:
    with open(PAPER / "figures.toml", "rb") as f:
        return tomllib.load(f)["figures"]


@pytest.fixture(scope="module")
def chapters() -> dict[str, Chapter]:
    return {p.stem: read_chapter(p) for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))}


def test_reader_follows_its_rule(tmp_path):
    """The rule itself, on a small notebook: literals, f-strings over literal loops, tables, dict variables."""
    source = (
        'LABELS = {"edm": "Edm", "flow": "Flow"}\nvalues = {"aB": 1}\nvalues |= {"aC": 2}\n'
        'for field, suffix in (("t", "T"), ("u", "U")):\n    values[f"aRmse{suffix}"] = 3\n'
        'for name, row in frame.iterrows():\n    values[f"aNfe{LABELS[name]}{name.title()}"] = 4\n'
        'write_values("99_x", values, profile=p)\nplotting.savefig(fig, f"x_{\'t\' if a else \'u\'}")\n'
        "fig.savefig('not_a_figure.png')\nvalues[key] = 5\n"
        'more = {"aD": 1}\nif flag:\n    more |= {"aE": 2}\nmore["aF"] = 3\nvalues |= more\nvalues.update(more)\n'
    )
    path = tmp_path / "99_x.py"
    path.write_text(source)
    chapter = read_chapter(path)
    assert chapter.values_chapters == {"99_x"}
    assert set(chapter.macros) == {"aB", "aC", "aRmse(?:T|U)", "aNfe(?:Edm|Flow)[A-Za-z]+", "aD", "aE", "aF"}
    assert chapter.figures == ["x_(?:t|u)"]
    assert len(chapter.problems) == 1 and chapter.problems[0].endswith("key is not a string or f-string")
    assert used_macros(r"\newcommand{\myMacro}{1} \dataJetSpeed{} \section{x} \lVert \myMacro") == {"dataJetSpeed"}


def test_chapters_are_read_without_problems(chapters):
    problems = [p for c in chapters.values() for p in c.problems]
    assert not problems, "keys the static reader cannot follow:\n" + "\n".join(problems)
    wrong = {c.stem: c.values_chapters for c in chapters.values() if c.values_chapters - {c.stem}}
    assert not wrong, f"chapters that write values under another chapter's name: {wrong}"


def test_every_included_figure_is_in_the_manifest():
    figures = manifest()
    missing = [name for name in included_figures(tex_source()) if name not in figures]
    assert not missing, f"\\includegraphics of figures not in paper/figures.toml: {missing}"


def test_every_values_macro_in_the_paper_is_written_by_a_chapter(chapters):
    patterns = [p for c in chapters.values() for p in c.macros]
    orphans = sorted(m for m in used_macros(tex_source()) if not any(re.fullmatch(p, m) for p in patterns))
    assert not orphans, f"macros used in paper/main.tex that no chapter writes: {orphans}"


def test_every_chapter_with_values_is_input_by_the_paper(chapters):
    inputs = set(re.findall(r"\\IfFileExists\{values/([^}]+)\.tex\}", tex_source()))
    missing = sorted(c.stem for c in chapters.values() if c.values_chapters and c.stem not in inputs)
    assert not missing, f"paper/main.tex does not \\input the values of chapters {missing}"


def test_manifest_figures_are_made_by_their_chapter_and_used_or_supplementary(chapters):
    figures, used = manifest(), set(included_figures(tex_source()))
    problems = []
    for name, entry in figures.items():
        chapter = chapters.get(entry["chapter"])
        if chapter is None or not any(re.fullmatch(p, name) for p in chapter.figures):
            problems.append(f"{name}: not saved by notebooks/{entry['chapter']}.py")
        supplementary = entry.get("supplementary", False)
        if not isinstance(supplementary, bool) or supplementary == (name in used):
            problems.append(f"{name}: in the paper: {name in used}, supplementary = {supplementary!r} (exactly one)")
    for chapter in chapters.values():
        own = [n for n, e in figures.items() if e["chapter"] == chapter.stem]
        problems += [f"{chapter.stem} saves {p!r}, not in its manifest entries" for p in chapter.figures if not any(re.fullmatch(p, n) for n in own)]  # fmt: skip
    assert not problems, "figure manifest against chapters and paper:\n" + "\n".join(problems)


def test_no_macro_is_written_by_two_chapters(chapters):
    """Literal names must not meet another chapter's names or patterns; two patterns of different
    chapters must not share the start before their first replacement field."""
    clashes = []
    items = [(c.stem, p) for c in chapters.values() for p in c.macros]
    for i, (stem_a, a) in enumerate(items):
        for stem_b, b in items[i + 1 :]:
            if stem_a == stem_b:
                continue
            prefix_a, prefix_b = (re.split(r"\(\?:|\[A-Za-z\]", p)[0] for p in (a, b))
            literal_a, literal_b = a == prefix_a, b == prefix_b
            if literal_a and re.fullmatch(b, re.sub(r"\\(.)", r"\1", a)):
                clashes.append((stem_a, a, stem_b, b))
            elif literal_b and re.fullmatch(a, re.sub(r"\\(.)", r"\1", b)):
                clashes.append((stem_a, a, stem_b, b))
            elif not literal_a and not literal_b and (prefix_a.startswith(prefix_b) or prefix_b.startswith(prefix_a)):
                clashes.append((stem_a, a, stem_b, b))
    assert not clashes, "macros two chapters may both write:\n" + "\n".join(map(str, clashes))


def test_labels_are_unique_and_references_resolve():
    tex = tex_source()
    labels = re.findall(r"\\label\{([^}]+)\}", tex)
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    assert not duplicates, f"labels defined twice: {duplicates}"
    dangling = sorted(set(re.findall(r"\\(?:ref|eqref|autoref|pageref)\{([^}]+)\}", tex)) - set(labels))
    assert not dangling, f"references to missing labels: {dangling}"


def test_citations_are_in_the_bibliography():
    bib = (PAPER / "refs.bib").read_text()
    keys = re.findall(r"^@\w+\{([^,\s]+),", bib, re.MULTILINE)
    assert len(keys) == len(set(keys)), "refs.bib has duplicate keys"
    cited = {k.strip() for group in re.findall(r"\\cite[a-z]*\*?(?:\[[^\]]*\])*\{([^}]+)\}", tex_source()) for k in group.split(",")}
    assert cited, "paper/main.tex cites nothing"
    missing = sorted(cited - set(keys))
    assert not missing, f"citations missing from paper/refs.bib: {missing}"
