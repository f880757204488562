"""Griffe extension for the API reference: docstrings written for Sphinx, rendered as Markdown.

Loaded by mkdocstrings (``extensions:`` in mkdocs.yml). Once the whole package is loaded
(statically: nothing is imported), it rewrites what Markdown would render badly; the Python
sources are not changed.

**Docstrings built by concatenation.** ``NSMLinear`` and ``NSMConv2d`` set
``__doc__ = "..." + _NSM_DOC``, which griffe reads as an expression, not a docstring. A
``__doc__`` made only of string literals, ``+`` and module-level string constants is evaluated
and becomes the class's docstring, as it does at import.

**Several parameters on one line.** ``probe_x, probe_y: ...`` in an ``Args:`` section becomes
one entry per name, so that griffe checks each against the signature.

**Literal blocks.** ``text::`` followed by an indented block (reStructuredText) becomes
``text:`` followed by a fenced ``text`` block.

**Option lists.** A line ending with ``:`` that is not a section griffe knows (``Args:`` ...),
followed at once by deeper lines ``name: text`` (``Keyword options (after torch's own
arguments):`` of the NSM layers), becomes a bulleted list, one item per name.

**Sphinx cross-reference roles.** ``:func:`nsm.mc_predict```, ``:class:`~nsm.nn.layers.NSMLinear```,
``:mod:`.registry```, ``:meth:`release```:

- become a cross-reference ``[`name`][nsm.path.to.object]`` when the target is an object of
  the package (resolved as Sphinx does: absolute, relative with leading dots, or unqualified
  from the enclosing class and module). mkdocs-autorefs links it to where the object is
  documented, and warns (failing ``--strict``) if it is documented nowhere;
- become inline code otherwise (Python's own ``FileNotFoundError``, ``gzip``, torch, ...);
- inside literal blocks, roles and ````code```` become plain text;
- a reference to ``nsm.<something>`` that does not exist is a warning (a stale docstring).

``~`` shows only the last component, ``title <target>`` shows the title; functions and
methods get ``()`` as in Sphinx.
"""

from __future__ import annotations

import ast
import inspect
import re
from typing import Any

import griffe

logger = griffe.get_logger("griffe_sphinx")

ROLE = re.compile(r":(?:py:)?(?P<role>func|meth|class|mod|attr|data|exc|obj|const):`(?P<body>[^`]+)`")
CALLABLE = ("func", "meth")
# the sections of a Google-style docstring that hold one entry per parameter
ARGS = re.compile(
    r"^[ \t]*(?:Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters)"
    r":[ \t]*$"
)
SECTION = re.compile(
    r"^[ \t]*(?:Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters"
    r"|Other Args|Returns|Return|Yields|Raises|Exceptions|Warns|Warnings|Attributes|Examples?"
    r"|Notes?|References|Methods|Functions|Classes|Modules|Receives|Todo):[ \t]*$"
)
MULTI = re.compile(
    r"^(?P<indent>[ \t]+)(?P<names>\*{0,2}\w+(?:[ \t]*,[ \t]*\*{0,2}\w+)+)"
    r"(?P<rest>[ \t]*(?:\([^)]*\))?:.*)$"
)
OPTION = re.compile(r"^[ \t]*(?P<names>[A-Za-z_]\w*(?:[ \t]*,[ \t]*[A-Za-z_]\w*)*):[ \t]+(?P<text>\S.*)$")
FENCE = re.compile(r"(?ms)^[ \t]*```text\n.*?^[ \t]*```[ \t]*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _walk(obj):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


# --- docstrings built by concatenation ------------------------------------------------------


def _static_str(source: str, module, depth: int = 0):
    """The value of the expression ``source`` if it is built of string literals, ``+`` and
    names of string constants of ``module``; else None."""
    try:
        node = ast.parse(source, mode="eval").body
    except SyntaxError:
        return None

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = value(node.left), value(node.right)
            return None if left is None or right is None else left + right
        if isinstance(node, ast.Name) and depth < 5:
            member = module.members.get(node.id)
            if member is not None and not member.is_alias and member.is_attribute and member.value is not None:
                return _static_str(str(member.value), module, depth + 1)
        return None

    return value(node)


def _concatenated_docstring(obj, like) -> None:
    doc = obj.members.get("__doc__")
    if obj.docstring is not None or doc is None or doc.is_alias or doc.value is None:
        return
    text = _static_str(str(doc.value), obj.module)
    if text is not None:
        obj.docstring = griffe.Docstring(
            inspect.cleandoc(text),
            lineno=doc.lineno,
            endlineno=doc.endlineno,
            parent=obj,
            parser=like.parser,
            parser_options=like.parser_options,
        )


# --- layout: several names per parameter, literal blocks, option lists ----------------------


def _split_names(lines: list[str]) -> list[str]:
    """``a, b: text`` in an Args-like section becomes ``a: text`` and ``b: text``."""
    out, section = [], None
    for line in lines:
        if ARGS.match(line):
            section = _indent(line)
        elif section is not None and line.strip() and _indent(line) <= section:
            section = None
        item = MULTI.match(line) if section is not None else None
        if item and len(item["indent"]) > section:
            out += [item["indent"] + name.strip() + item["rest"] for name in item["names"].split(",")]
        else:
            out.append(line)
    return out


def _literal_blocks(lines: list[str]) -> list[str]:
    """reStructuredText's ``text::`` + indented block -> ``text:`` + a fenced block."""
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::"):
            out.append(line)
            i += 1
            continue
        j, block = i + 1, []
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > _indent(line)):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            block.pop()
            j -= 1
        while block and not block[0].strip():
            block.pop(0)
        if not any(b.strip() for b in block):  # not a literal block after all
            out.append(line)
            i += 1
            continue
        head = line.rstrip()[:-2].rstrip()
        pad = " " * _indent(line)
        base = min(_indent(b) for b in block if b.strip())
        out += (
            [head + ":" if head.strip() else ""]
            + ["", pad + "```text"]
            + [pad + b[base:] if b.strip() else "" for b in block]
            + [pad + "```", ""]
        )
        i = j
    return out


def _option_lists(lines: list[str]) -> list[str]:
    """A header ``...:`` griffe does not know, followed by deeper ``name: text`` lines -> a list."""
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not (
            line.rstrip().endswith(":")
            and not line.rstrip().endswith("::")
            and not SECTION.match(line)
            and nxt.strip()
            and _indent(nxt) > _indent(line)
            and OPTION.match(nxt)
        ):
            out.append(line)
            i += 1
            continue
        pad, base = " " * _indent(line), _indent(nxt)
        out += [line, ""]
        j = i + 1
        while j < len(lines) and lines[j].strip() and _indent(lines[j]) >= base:
            item = OPTION.match(lines[j]) if _indent(lines[j]) == base else None
            if item:
                names = ", ".join(f"`{n.strip()}`" for n in item["names"].split(","))
                out.append(f"{pad}- {names}: {item['text']}")
            else:
                out.append(f"{pad}  {lines[j].strip()}")
            j += 1
        out.append("")
        i = j
    return out


# --- Sphinx roles ---------------------------------------------------------------------------


def _lookup(scope, name: str):
    try:
        return scope[name]
    except Exception:  # KeyError, AliasResolutionError, ...: not there
        return None


def _resolve(pkg, obj, target: str):
    """The griffe object ``target`` names from ``obj``'s docstring, or None."""
    root = pkg.name
    if target == root:
        return pkg
    if target.startswith(root + "."):
        return _lookup(pkg, target[len(root) + 1 :])
    if target.startswith("."):
        module = obj.module
        base = module if module.is_init_module else module.parent
        rest = target[1:]
        while rest.startswith(".") and base.parent is not None:
            base, rest = base.parent, rest[1:]
        return _lookup(base, rest) if rest else base
    scope = obj if (obj.is_class or obj.is_module) else obj.parent
    while scope is not None:  # unqualified: the enclosing class, then the module, then parents
        found = _lookup(scope, target)
        if found is not None:
            return found
        scope = scope.parent
    return None


def _path(found):
    """The path where ``found`` is documented; None for an alias of something outside the package."""
    try:
        return found.final_target.path if found.is_alias else found.path
    except Exception:  # an alias to another package (gzip, torch, ...)
        return None


def _documented(path: str) -> bool:
    """Whether the API reference renders this path (its filters drop names starting with _)."""
    return not any(part.startswith("_") for part in path.split("."))


def _role(pkg, obj, match: re.Match, *, literal: bool) -> str:
    role, body = match["role"], match["body"].strip()
    titled = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>", body)
    target = (titled["target"] if titled else body).lstrip("~!")
    if titled:
        text = titled["title"]
    elif body.startswith("~"):
        text = target.rsplit(".", 1)[-1]
    else:
        text = target.lstrip(".")
    if role in CALLABLE and not text.endswith(")"):
        text += "()"
    found = _resolve(pkg, obj, target)
    if found is None and (target == pkg.name or target.startswith(pkg.name + ".")):
        logger.warning("%s: the docstring refers to %s, which does not exist", obj.path, match[0])
    path = None if found is None else _path(found)
    if literal:
        return text
    if path is None or not _documented(path):
        return f"`{text}`"
    return f"[`{text}`][{path}]"


def _roles(pkg, obj, text: str) -> str:
    out, pos = [], 0
    for block in [*FENCE.finditer(text), None]:
        end = block.start() if block else len(text)
        out.append(ROLE.sub(lambda m: _role(pkg, obj, m, literal=False), text[pos:end]))
        if block:
            literal = ROLE.sub(lambda m: _role(pkg, obj, m, literal=True), block[0])
            out.append(re.sub(r"``(.+?)``", r"\1", literal))  # reST inline literals, inside a code block
            pos = block.end()
    return "".join(out)


class SphinxDocstrings(griffe.Extension):
    def on_package(self, *, pkg, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.is_class:
                _concatenated_docstring(obj, like=pkg.docstring)
            if obj.docstring is not None:
                lines = _option_lists(_literal_blocks(_split_names(obj.docstring.value.split("\n"))))
                obj.docstring.value = _roles(pkg, obj, "\n".join(lines))
