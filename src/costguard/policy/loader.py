"""Loading policy files: YAML with exact decimals, file:line:field errors, merging defaults."""

from __future__ import annotations

import difflib
import os
import re
import types
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from costguard.errors import PolicyError, PolicyErrorDetail
from costguard.policy.models import DEFAULTS_NAME, PolicyFile, PolicySet, WorkflowPolicy
from costguard.policy.render import _show

PathArg = str | os.PathLike[str]

_POLICY_SUFFIXES: Final[tuple[str, ...]] = (".yaml", ".yml")
_GEO_PREFIXES: Final[frozenset[str]] = frozenset({"us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"})


# --------------------------------------------------------------------------------------------
# YAML: a SafeLoader whose floats are Decimals built from the scalar's text
# --------------------------------------------------------------------------------------------


#: The largest policy file read (1 MiB): a real policy is a few KiB, and a bigger file is refused
#: before it is parsed, so a stray 20 MB file costs milliseconds, not seconds.
MAX_POLICY_FILE_BYTES: Final[int] = 1024 * 1024
#: The deepest nesting of mappings and lists (a real policy nests about 7 levels). PyYAML composes
#: recursively, so without a cap deep nesting ends in a RecursionError instead of a message.
MAX_POLICY_DEPTH: Final[int] = 64
#: The most YAML nodes a file may expand to once aliases are followed ("billion laughs").
MAX_POLICY_NODES: Final[int] = 100_000
_SURROGATE_RE: Final[re.Pattern[str]] = re.compile("[\ud800-\udfff]")


class _PolicyLoader(yaml.SafeLoader):
    """SafeLoader that never makes a float (YAML floats become exact Decimals) and stops composing
    past :data:`MAX_POLICY_DEPTH` levels with a marked error."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.ScalarEvent, yaml.AliasEvent):
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        if self._depth >= MAX_POLICY_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_POLICY_DEPTH} levels", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    assert isinstance(node, yaml.ScalarNode)
    text = str(loader.construct_scalar(node)).replace("_", "").lower()
    negative = text.startswith("-")
    body = text.lstrip("+-")
    if body == ".inf":
        return Decimal("-Infinity" if negative else "Infinity")
    if body == ".nan":
        return Decimal("NaN")
    if ":" in body:  # YAML 1.1 base 60, e.g. 1:30.5
        total = Decimal(0)
        for part in body.split(":"):
            total = total * 60 + Decimal(part)
        return -total if negative else total
    return Decimal(text)  # exactly the digits written: "1.50" -> Decimal("1.50")


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    try:
        return int(yaml.SafeLoader.construct_yaml_int(loader, node))  # type: ignore[arg-type]
    except ValueError:  # Python refuses int() of more than 4,300 digits: say where
        raise yaml.constructor.ConstructorError(
            None, None, f"integer of {len(str(node.value))} characters is too long", node.start_mark
        ) from None


_PolicyLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
_PolicyLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


@dataclass
class _Document:
    """One parsed policy document: where it came from, its node tree (for lines), its data."""

    file: str
    root: yaml.Node | None
    data: dict[Any, Any]
    errors: list[PolicyErrorDetail] = field(default_factory=list)
    defaults_ok: bool = True
    workflows_ok: bool = True
    bad_workflows: set[str] = field(default_factory=set)


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _file_error(file: str, message: str, line: int | None = None, field_name: str = "-") -> PolicyErrorDetail:
    return PolicyErrorDetail(file=file, line=line, field=field_name, message=message)


def _parse(file: str, text: str, errors: list[PolicyErrorDetail]) -> _Document | None:
    """Compose and construct one YAML document; append problems to ``errors``."""
    if len(text) > MAX_POLICY_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_FILE_BYTES:
        errors.append(_too_big(file))
        return None
    loader: _PolicyLoader | None = None
    try:
        loader = _PolicyLoader(text)
        root = loader.get_single_node()
        if root is None:
            errors.append(_file_error(file, "file is empty: expected a policy document starting with 'version: 1'"))
            return None
        problems = _scan(file, root)
        if any(problem.message.startswith(_TOO_MANY_NODES) for problem in problems):
            errors.extend(problems)
            return None
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.context}: {exc.problem}"
        errors.append(_file_error(file, f"invalid YAML: {problem}", mark.line + 1 if mark else None))
        return None
    except yaml.reader.ReaderError as exc:  # a control character, a NUL, a lone surrogate in the text
        line = text.count("\n", 0, exc.position) + 1
        shown = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        errors.append(_file_error(file, f"invalid YAML: unacceptable character {shown}: {exc.reason}", line))
        return None
    except (yaml.YAMLError, ValueError, ArithmeticError) as exc:
        errors.append(_file_error(file, f"invalid YAML: {_SURROGATE_RE.sub(_REPLACEMENT, str(exc))}"))
        return None
    except RecursionError:  # the depth cap should prevent it: still a message, never a traceback
        errors.append(_file_error(file, f"invalid YAML: nested deeper than {MAX_POLICY_DEPTH} levels"))
        return None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        errors.append(
            _file_error(
                file,
                f"a policy file must be a mapping with 'version', 'defaults' and 'workflows', got {_show(data)}",
                _line(root),
            )
        )
        return None
    return _Document(file, root, data, problems)


_REPLACEMENT: Final[str] = "\ufffd"
_TOO_MANY_NODES: Final[str] = "too many values"


def _too_big(file: str) -> PolicyErrorDetail:
    return _file_error(
        file,
        f"larger than {MAX_POLICY_FILE_BYTES} bytes (1 MiB), the most a policy file may hold: "
        "split it into several files",
    )


def _scan(file: str, root: yaml.Node) -> list[PolicyErrorDetail]:
    """Problems YAML itself lets through, found on the node tree before anything is built.

    * duplicate keys (PyYAML silently keeps the last one);
    * lone surrogates from escapes such as ``"\\ud800"``: not text, so they are reported and
      replaced by U+FFFD to let validation report the rest of the file;
    * more than :data:`MAX_POLICY_NODES` nodes once aliases are expanded.
    """
    found: list[PolicyErrorDetail] = []
    seen_nodes: set[int] = set()

    def check_text(node: yaml.Node, parent: tuple[str | int, ...], is_key: bool = False) -> None:
        if isinstance(node, yaml.ScalarNode) and _SURROGATE_RE.search(node.value):
            node.value = _SURROGATE_RE.sub(_REPLACEMENT, node.value)
            path = (*parent, node.value) if is_key else parent
            found.append(
                PolicyErrorDetail(
                    file=file,
                    line=_line(node),
                    field=_dotted(path),
                    message="not valid Unicode text: a lone surrogate escape (\\ud800-\\udfff) "
                    "is not a character; write the character itself",
                )
            )

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        if id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        check_text(node, path)
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int | None] = {}
            for key, value in node.value:
                if key.tag == "tag:yaml.org,2002:merge":
                    continue
                if isinstance(key, yaml.ScalarNode):
                    check_text(key, path, is_key=True)
                    if key.value in first:
                        found.append(
                            PolicyErrorDetail(
                                file=file,
                                line=_line(key),
                                field=_dotted((*path, key.value)),
                                message=f"duplicate key '{key.value}' (first defined at line {first[key.value]})",
                            )
                        )
                    else:
                        first[key.value] = _line(key)
                    walk(value, (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    size = _expanded_size(root)
    if size is None:
        return [
            _file_error(
                file,
                f"{_TOO_MANY_NODES}: an alias refers to the mapping or list that contains it, "
                "so it never ends once expanded",
                _line(root),
            )
        ]
    if size > MAX_POLICY_NODES:
        return [
            _file_error(
                file,
                f"{_TOO_MANY_NODES}: the file expands to {size} values once aliases are followed "
                f"(at most {MAX_POLICY_NODES})",
                _line(root),
            )
        ]
    walk(root, ())
    return found


def _expanded_size(root: yaml.Node) -> int | None:
    """How many nodes the tree has with every alias expanded, counted without expanding them;
    None when an alias refers to a node that contains it (expanding would never end)."""
    sizes: dict[int, int] = {}
    counting: set[int] = set()  # nodes whose children are being counted
    pending: list[tuple[yaml.Node, bool]] = [(root, False)]
    while pending:
        node, children_done = pending.pop()
        if children_done:
            counting.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
            continue
        if id(node) in sizes:
            continue
        if id(node) in counting:  # met again below itself: a cycle
            return None
        counting.add(id(node))
        pending.append((node, True))
        pending.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


_KEY_INDEX: weakref.WeakKeyDictionary[yaml.MappingNode, dict[str, tuple[yaml.Node, yaml.Node]]] = (
    weakref.WeakKeyDictionary()
)


def _keys_by_text(node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """A mapping's ``(key, value)`` pairs by the key's text, the last one winning: one lookup per
    error instead of a scan, so a file with 20,000 workflows is not quadratic to report."""
    index = _KEY_INDEX.get(node)
    if index is None:
        index = {key.value: (key, value) for key, value in node.value if isinstance(key, yaml.ScalarNode)}
        _KEY_INDEX[node] = index
    return index


def _key_matches(key: yaml.Node, element: Any) -> bool:
    """Does a mapping key node hold the key pydantic reports (``yes`` arrives as 1, ``2024`` as 2024)?"""
    if not isinstance(key, yaml.ScalarNode):
        return False
    if key.value == str(element) and not isinstance(element, bool):
        return True
    if key.tag == "tag:yaml.org,2002:str" or not isinstance(element, int | float | Decimal):
        return False
    try:
        value = _PolicyLoader("").construct_object(key)
    except (yaml.YAMLError, ValueError, ArithmeticError):
        return False
    return bool(value == element)


def _locate(
    root: yaml.Node | None, loc: Sequence[Any], want_key: bool
) -> tuple[yaml.Node | None, str]:
    """The node a pydantic ``loc`` points at (the key node if ``want_key``, else the value node)
    and the dotted field name, spelled as the YAML spells the keys."""
    node = root
    parts: list[str] = []
    found: yaml.Node | None = root
    for index, element in enumerate(loc):
        if element == "[key]":
            continue
        if isinstance(node, yaml.MappingNode):
            match = None if isinstance(element, bool) else _keys_by_text(node).get(str(element))
            if match is None:
                for key, value in reversed(node.value):  # after a "<<" merge the last key wins
                    if _key_matches(key, element):
                        match = (key, value)
                        break
            if match is None:
                parts.append(str(element))
                node = None
                continue
            parts.append(str(match[0].value))
            is_last = index == len(loc) - 1
            next_is_key = index + 1 < len(loc) and loc[index + 1] == "[key]"
            found = match[0] if (is_last and want_key) or next_is_key else match[1]
            node = match[1]
            if next_is_key:
                node = None
        elif isinstance(node, yaml.SequenceNode) and isinstance(element, int):
            parts.append(f"[{element}]")
            if 0 <= element < len(node.value):
                node = found = node.value[element]
            else:
                node = None
        else:
            parts.append(f"[{element}]" if isinstance(element, int) else str(element))
            node = None
    return found, _join(parts)


def _join(parts: Sequence[str]) -> str:
    text = ""
    for part in parts:
        text += part if part.startswith("[") or not text else f".{part}"
    return text or "-"


def _dotted(loc: Sequence[Any]) -> str:
    return _locate(None, loc, want_key=False)[1]


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional to reach the interesting type."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _type_at(root_model: type[BaseModel], loc: Sequence[Any]) -> Any:
    """The (unwrapped) type a pydantic ``loc`` refers to, walking the model classes."""
    current: Any = root_model
    for element in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(element))
            if info is None:
                return None
            current = _unwrap(info.annotation)
        elif get_origin(current) is dict:
            current = _unwrap(get_args(current)[1])
        elif get_origin(current) is list:
            current = _unwrap(get_args(current)[0])
        else:
            return None
    return current


def _message(error: Mapping[str, Any], root_model: type[BaseModel]) -> str:
    kind: str = error["type"]
    loc: tuple[Any, ...] = tuple(error["loc"])
    value = error.get("input")
    if kind.startswith("costguard_"):
        return str(error["msg"])
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        model = _type_at(root_model, loc[:-1])
        allowed = list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
        if not allowed:
            return f"unknown key '{key}'"
        text = f"unknown key '{key}' (allowed: {', '.join(allowed)})"
        close = difflib.get_close_matches(key, allowed, n=1)
        return f"{text}; did you mean '{close[0]}'?" if close else text
    if kind == "missing":
        name = loc[-1] if loc else "?"
        hint = " (add 'version: 1')" if loc == ("version",) else ""
        return f"missing required key '{name}'{hint}"
    if kind == "literal_error":
        target = _type_at(root_model, loc)
        choices = [str(c) for c in get_args(target)] if get_origin(target) is Literal else []
        if not choices:
            choices = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        return f"must be one of {', '.join(choices)}, got {_show(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type", "mapping_type"):
        return f"must be a mapping, got {_show(value)}"
    if kind in ("list_type", "tuple_type", "iterable_type"):
        return f"must be a list, got {_show(value)}"
    if kind == "string_type":
        return f"must be a string, got {_show(value)}"
    if kind == "invalid_key":
        return "keys must be strings"
    message = str(error.get("msg", "invalid value"))
    return message[:1].lower() + message[1:]


def _details(
    exc: ValidationError,
    file: str,
    root: yaml.Node | None,
    root_model: type[BaseModel],
    prefix: tuple[Any, ...] = (),
    line: int | None = None,
) -> list[tuple[tuple[Any, ...], PolicyErrorDetail]]:
    """Map each pydantic error to ``(loc, PolicyErrorDetail)`` with file, line and dotted field."""
    out: list[tuple[tuple[Any, ...], PolicyErrorDetail]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        want_key = error["type"] in ("extra_forbidden", "invalid_key", "costguard_name")
        node, dotted = _locate(root, (*prefix, *loc), want_key)
        out.append(
            (
                loc,
                PolicyErrorDetail(
                    file=file,
                    line=_line(node) if line is None else line,
                    field=dotted,
                    message=_message(error, root_model),
                ),
            )
        )
    return out


def _validate_document(doc: _Document) -> None:
    try:
        PolicyFile.model_validate(doc.data)
    except ValidationError as exc:
        for loc, detail in _details(exc, doc.file, doc.root, PolicyFile):
            doc.errors.append(detail)
            if loc[:1] == ("defaults",):
                doc.defaults_ok = False
            elif loc[:1] == ("workflows",):
                if len(loc) >= 2:
                    doc.bad_workflows.add(str(loc[1]))
                else:  # workflows itself is unusable
                    doc.workflows_ok = False


def _as_mapping(value: Any) -> Mapping[Any, Any]:
    return value if isinstance(value, Mapping) else {}


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` wins; mappings merge key by key; lists and scalars are replaced."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = _deep_merge(below, value)
        else:
            merged[key] = value
    return merged


def _drop_nulls(data: Mapping[str, Any]) -> dict[str, Any]:
    """An explicit null clears a value: drop it so the built-in default applies."""
    return {k: (_drop_nulls(v) if isinstance(v, Mapping) else v) for k, v in data.items() if v is not None}


def _model_candidates(model_id: str) -> list[str]:
    candidates = [model_id]
    head, dot, rest = model_id.partition(".")
    if dot and head in _GEO_PREFIXES:
        candidates.append(rest)
    return candidates


def _consistency(policy: WorkflowPolicy) -> list[tuple[str, str]]:
    """Problems only visible once defaults and a workflow are merged: ``(field, message)``."""
    problems: list[tuple[str, str]] = []
    model = policy.default_model
    if model and not model.startswith("arn:") and policy.models.allow is not None:
        if not any(policy.models.allows(candidate) for candidate in _model_candidates(model)):
            problems.append(
                (
                    "default_model",
                    f"'{model}' is not allowed by models.allow ({', '.join(policy.models.allow)}): "
                    "every step priced with it would be blocked",
                )
            )
    return problems


def _effective(
    name: str,
    merged: Mapping[str, Any],
    file: str,
    line: int | None,
    prefix: tuple[str, ...],
    errors: list[PolicyErrorDetail],
) -> WorkflowPolicy | None:
    try:
        policy = WorkflowPolicy.model_validate({**_drop_nulls(merged), "name": name})
    except ValidationError as exc:
        errors.extend(detail for _, detail in _details(exc, file, None, WorkflowPolicy, prefix, line))
        return None
    problems = _consistency(policy)
    for field_name, message in problems:
        errors.append(PolicyErrorDetail(file=file, line=line, field=_dotted((*prefix, field_name)), message=message))
    return None if problems else policy


def _key_line(doc: _Document, loc: tuple[str, ...]) -> int | None:
    return _line(_locate(doc.root, loc, want_key=True)[0])


def _where(file: str, line: int | None) -> str:
    return f"{file}:{line}" if line is not None else file


def _build(documents: Sequence[_Document], errors: list[PolicyErrorDetail]) -> PolicySet:
    """Validate every document, combine them, merge defaults under workflows; raise all errors."""
    for doc in documents:
        _validate_document(doc)
        errors.extend(doc.errors)

    defaults_doc: _Document | None = None
    owners: dict[str, _Document] = {}
    order: list[str] = []
    for doc in documents:
        if "defaults" in doc.data:
            if defaults_doc is None:
                defaults_doc = doc
            else:
                first = _where(defaults_doc.file, _key_line(defaults_doc, ("defaults",)))
                errors.append(
                    PolicyErrorDetail(
                        file=doc.file,
                        line=_key_line(doc, ("defaults",)),
                        field="defaults",
                        message=f"defaults already defined in {first}: define defaults in one file only",
                    )
                )
        for name in _as_mapping(doc.data.get("workflows")):
            if not isinstance(name, str):
                continue
            if name in owners:
                other = owners[name]
                first = _where(other.file, _key_line(other, ("workflows", name)))
                errors.append(
                    PolicyErrorDetail(
                        file=doc.file,
                        line=_key_line(doc, ("workflows", name)),
                        field=f"workflows.{name}",
                        message=f"workflow '{name}' already defined in {first}: define each workflow in one file only",
                    )
                )
            else:
                owners[name] = doc
                order.append(name)

    defaults_raw: Mapping[str, Any] = {}
    defaults_ok = True
    defaults_policy = WorkflowPolicy(name=DEFAULTS_NAME)
    if defaults_doc is not None:
        defaults_ok = defaults_doc.defaults_ok
        defaults_raw = _as_mapping(defaults_doc.data.get("defaults"))
        if defaults_ok:
            built = _effective(
                DEFAULTS_NAME,
                defaults_raw,
                defaults_doc.file,
                _key_line(defaults_doc, ("defaults",)),
                ("defaults",),
                errors,
            )
            if built is None:
                defaults_ok = False
            else:
                defaults_policy = built

    workflows: dict[str, WorkflowPolicy] = {}
    for name in order:
        doc = owners[name]
        if not (defaults_ok and doc.workflows_ok) or name in doc.bad_workflows:
            continue
        own = _as_mapping(_as_mapping(doc.data.get("workflows")).get(name))
        policy = _effective(
            name,
            _deep_merge(defaults_raw, own),
            doc.file,
            _key_line(doc, ("workflows", name)),
            ("workflows", name),
            errors,
        )
        if policy is not None:
            workflows[name] = policy

    if errors:
        rank = {doc.file: index for index, doc in enumerate(documents)}
        ordered = sorted(
            enumerate(errors), key=lambda item: (rank.get(item[1].file, -1), item[1].line or 0, item[0])
        )
        raise PolicyError([detail for _, detail in ordered])
    return PolicySet(workflows, defaults_policy, tuple(doc.file for doc in documents))


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _policy_files(paths: PathArg | Sequence[PathArg], errors: list[PolicyErrorDetail]) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        given: list[PathArg] = [paths]
    else:
        given = list(paths)
    if not given:
        errors.append(_file_error("<policy>", "no policy files given"))
    files: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for item in given:
        try:
            path = Path(os.fspath(item)).expanduser()
            if path.is_dir():
                found = sorted(
                    p
                    for p in path.iterdir()
                    if p.suffix.lower() in _POLICY_SUFFIXES and not p.name.startswith(".") and p.is_file()
                )
                if not found:
                    errors.append(_file_error(str(path), "no policy files (*.yaml, *.yml) in this directory"))
                for p in found:
                    add(p)
            elif path.is_file():
                add(path)
            elif path.exists():
                errors.append(_file_error(str(path), "not a file or directory"))
            else:
                errors.append(_file_error(str(path), "no such file or directory"))
        except (OSError, ValueError) as exc:  # a name too long, a NUL in it, a directory we may not list
            errors.append(_file_error(str(item), f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
    return files


def _read(path: Path, errors: list[PolicyErrorDetail]) -> _Document | None:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_POLICY_FILE_BYTES + 1)  # never more: a huge file is refused unread
    except OSError as exc:
        errors.append(_file_error(str(path), f"cannot read: {exc.strerror or exc}"))
        return None
    if len(raw) > MAX_POLICY_FILE_BYTES:
        errors.append(_too_big(str(path)))
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        errors.append(_file_error(str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})", line))
        return None
    return _parse(str(path), text, errors)


def load_policies(path: PathArg | Sequence[PathArg]) -> PolicySet:
    """Load policy files: one YAML file, a directory of ``*.yaml``/``*.yml``, or a list of those.

    Raises :class:`~costguard.errors.PolicyError` listing every problem in every file.
    """
    errors: list[PolicyErrorDetail] = []
    documents: list[_Document] = []
    for file in _policy_files(path, errors):
        doc = _read(file, errors)
        if doc is not None:
            documents.append(doc)
    return _build(documents, errors)


def check_policies(paths: PathArg | Sequence[PathArg]) -> list[PolicyErrorDetail]:
    """Every problem in the policy files (an empty list means they are valid)."""
    try:
        load_policies(paths)
    except PolicyError as exc:
        return list(exc.errors)
    return []
