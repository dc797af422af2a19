from __future__ import annotations

from costguard.display import Column, fit_columns, terminal_width

COLUMNS = [Column("workflow"), Column("requests"), Column("input_tokens"), Column("cost_usd", money=True), Column("tool_calls")]
CELLS = [["claims-intake", "43", "478,440", "$1.5745", "16"]]
# natural widths: content + 3 (padding and divider): 16, 11, 10, 10, 8 -> 55, minus the last divider


def test_everything_fits_when_wide_enough() -> None:
    assert fit_columns(COLUMNS, CELLS, 54, ["tool_calls", "input_tokens"]) == ([0, 1, 2, 3, 4], [])


def test_columns_drop_in_the_stated_order_until_the_table_fits() -> None:
    assert fit_columns(COLUMNS, CELLS, 53, ["tool_calls", "input_tokens", "requests"]) == ([0, 1, 2, 3], ["tool_calls"])
    assert fit_columns(COLUMNS, CELLS, 40, ["tool_calls", "input_tokens", "requests"]) == ([0, 1, 3], ["tool_calls", "input_tokens"])


def test_the_key_and_money_are_never_dropped_even_when_they_overflow() -> None:
    kept, dropped = fit_columns(COLUMNS, CELLS, 10, ["workflow", "cost_usd", "tool_calls", "input_tokens", "requests"])
    assert kept == [0, 3] and dropped == ["tool_calls", "input_tokens", "requests"]


def test_columns_left_out_of_the_drop_order_go_after_it_from_the_right() -> None:
    # rich would otherwise squeeze every column, money included, into "$1…"
    assert fit_columns(COLUMNS, CELLS, 40, ["tool_calls"]) == ([0, 1, 3], ["tool_calls", "input_tokens"])
    assert fit_columns(COLUMNS, CELLS, 10, []) == ([0, 3], ["tool_calls", "input_tokens", "requests"])


def test_headers_wrap_so_only_their_longest_word_counts() -> None:
    wide_header = [Column("a"), Column("cache_write_tokens")]
    # "cache write tokens" needs 6 ("tokens"), not 18
    assert fit_columns(wide_header, [["x", "0"]], 1 + 3 + 6 + 3 - 1, ["cache_write_tokens"]) == ([0, 1], [])


def test_width_comes_from_columns_when_set(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COLUMNS", "93")
    assert terminal_width() == 93
    monkeypatch.setenv("COLUMNS", "")
    assert terminal_width() == 160  # piped (pytest captures stdout) and no COLUMNS
