"""Hostile policy files: every problem is ``file:line: field: message`` and exit 2, never a traceback.

Before (issue 12): 50,000-level nesting and a surrogate escape ended in tracebacks (exit 1), and a
20 MB file took 8 to 11 s to parse.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from costguard.cli import app
from costguard.errors import PolicyError, PolicyErrorDetail
from costguard.policy import PolicySet, check_policies
from costguard.policy.loader import MAX_POLICY_DEPTH, MAX_POLICY_FILE_BYTES, MAX_POLICY_NODES

runner = CliRunner()


def check_cli(path: Path) -> tuple[int, list[str]]:
    result = runner.invoke(app, ["policy", "check", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr.splitlines()


def only_error(path: Path) -> PolicyErrorDetail:
    errors = check_policies(path)
    assert len(errors) == 1, errors
    return errors[0]


def test_50000_nested_lists_are_one_error_with_a_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("version: 1\nworkflows:\n  a:\n    mode: " + "[" * 50_000 + "]" * 50_000 + "\n")
    error = only_error(path)
    assert (error.file, error.line, error.field) == (str(path), 4, "-")
    assert error.message == f"invalid YAML: nested deeper than {MAX_POLICY_DEPTH} levels"
    code, lines = check_cli(path)
    assert code == 2
    assert lines == [f"{path}:4: -: invalid YAML: nested deeper than 64 levels"]


def test_50000_nested_mappings_are_one_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("version: 1\nworkflows: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n")
    assert only_error(path).message == "invalid YAML: nested deeper than 64 levels"
    assert check_cli(path)[0] == 2


def test_nesting_at_the_cap_is_still_parsed(tmp_path: Path) -> None:
    # 64 levels in all: the root mapping, workflows, a, models and 60 lists around the pattern.
    path = tmp_path / "deep.yaml"
    path.write_text("version: 1\nworkflows: {a: {models: {allow: " + "[" * 60 + "'x'" + "]" * 60 + "}}}\n")
    error = only_error(path)
    assert error.field == "workflows.a.models.allow[0]"
    assert error.message.startswith("must be a model id or glob pattern")


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "x\\udc80y"])
def test_surrogate_escape_is_reported_with_its_field_and_the_rest_still_checked(tmp_path: Path, escape: str) -> None:
    path = tmp_path / "surrogate.yaml"
    path.write_text(f'version: 1\nworkflows:\n  a:\n    default_model: "{escape}"\n    mode: bogus\n')
    errors = check_policies(path)
    assert [(e.line, e.field) for e in errors] == [(4, "workflows.a.default_model"), (5, "workflows.a.mode")]
    assert errors[0].message.startswith("not valid Unicode text: a lone surrogate escape")
    code, lines = check_cli(path)
    assert code == 2
    assert len(lines) == 2 and lines[0].startswith(f"{path}:4: workflows.a.default_model: not valid Unicode")


def test_surrogate_escape_in_a_key(tmp_path: Path) -> None:
    path = tmp_path / "surrogate.yaml"
    path.write_text('version: 1\nworkflows:\n  "\\ud800": {}\n')
    errors = check_policies(path)
    assert errors[0].line == 3 and errors[0].field == "workflows.\ufffd"
    assert errors[0].message.startswith("not valid Unicode text")
    assert check_cli(path)[0] == 2


def test_surrogate_in_text_given_directly() -> None:
    with pytest.raises(PolicyError) as info:
        PolicySet.from_yaml("version: 1\nworkflows:\n  a: {default_model: \ud800}\n")
    assert [(e.line, e.message) for e in info.value.errors] == [
        (3, "invalid YAML: unacceptable character #xd800: special characters are not allowed")
    ]


def test_binary_junk_and_control_characters(tmp_path: Path) -> None:
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"version: 1\n\x00\x01\x02 junk\n")
    error = only_error(nul)
    assert (error.line, error.message) == (2, "invalid YAML: unacceptable character #x0000: special characters are not allowed")
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(b"version: 1\n\xff\xfe\x00junk")
    error = only_error(junk)
    assert (error.line, error.message) == (2, "not UTF-8 text (invalid start byte at byte 11)")
    for path in (nul, junk):
        assert check_cli(path)[0] == 2


def test_latin1_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nworkflows:\n  # caf\xe9\n  a: {}\n")
    error = only_error(path)
    assert (error.line, error.message) == (3, "not UTF-8 text (invalid continuation byte at byte 29)")


def test_20_mb_file_is_refused_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.write(b"version: 1\n# ")
        handle.truncate(20 * 1024 * 1024)  # sparse: 20 MB on paper, nothing written
    error = only_error(path)
    assert error.message == (
        "larger than 1048576 bytes (1 MiB), the most a policy file may hold: split it into several files"
    )
    code, lines = check_cli(path)
    assert (code, len(lines)) == (2, 1)


def test_size_cap_is_exact(tmp_path: Path) -> None:
    assert MAX_POLICY_FILE_BYTES == 1024 * 1024
    head = b"version: 1\n"
    at_cap = tmp_path / "at.yaml"
    at_cap.write_bytes(head + b"#" * (MAX_POLICY_FILE_BYTES - len(head)))
    assert check_policies(at_cap) == []
    over = tmp_path / "over.yaml"
    over.write_bytes(head + b"#" * (MAX_POLICY_FILE_BYTES - len(head) + 1))
    assert only_error(over).message.startswith("larger than 1048576 bytes")
    with pytest.raises(PolicyError):
        PolicySet.from_yaml("version: 1\n" + "#" * MAX_POLICY_FILE_BYTES)


def test_alias_bomb_is_refused_before_validation(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    lines = ["version: 1", "x0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    lines += [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path.write_text("\n".join(lines) + "\n")
    error = only_error(path)
    # the root, 10 keys, the version's 1, and level i: itself plus 10 copies of level i-1 (11, 111...)
    expanded = 1 + 10 + 1 + sum(int("1" * (i + 2)) for i in range(9))
    assert error.message == (
        f"too many values: the file expands to {expanded} values once aliases are followed (at most {MAX_POLICY_NODES})"
    )
    assert check_cli(path)[0] == 2


def test_unreadable_names_are_messages(tmp_path: Path) -> None:
    errors = check_policies([str(tmp_path / ("x" * 5000)), "bad\x00name.yaml"])
    assert [e.message for e in errors] == ["cannot read: File name too long", "no such file or directory"]


@pytest.mark.parametrize("text", ["a: &x\n    b: *x", "a: &x [1, *x]"])
def test_an_alias_inside_itself_is_one_error_not_a_hang(tmp_path: Path, text: str) -> None:
    path = tmp_path / "recursive.yaml"
    path.write_text("version: 1\nworkflows:\n  " + text + "\n")
    error = only_error(path)
    assert (error.line, error.message) == (
        1,
        "too many values: an alias refers to the mapping or list that contains it, so it never ends once expanded",
    )
    assert check_cli(path)[0] == 2


def test_an_integer_too_long_for_python_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "long-int.yaml"
    path.write_text("version: 1\nworkflows:\n  a:\n    per_request: {max_tokens: " + "9" * 5_000 + "}\n")
    error = only_error(path)
    assert (error.line, error.message) == (4, "invalid YAML: integer of 5000 characters is too long")
