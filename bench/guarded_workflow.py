"""The workflow the end-to-end benchmarks meter: every check on, no limit ever reached.

Budgets, per-request and per-session caps are all enforced, so the meter does all its work on
every request (reservations, session reads, cap checks) without refusing one.
"""

from __future__ import annotations

POLICY = """
version: 1
workflows:
  bench:
    per_request: {max_model_calls: 500, max_tool_calls: 500, max_tokens: 1000000000, max_cost_usd: 100000, max_tool_response_bytes: 1000000}
    per_session: {max_model_calls: 100000000}
    budget: {daily_usd: 1000000, monthly_usd: 10000000}
"""
