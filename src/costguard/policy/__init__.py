"""The policy language: pydantic models, the YAML loader, merging and the JSON Schema.

A policy file is one YAML document::

    version: 1
    defaults: {...}          # merged under every workflow; also what unknown workflows get
    workflows:
      claims-intake: {...}   # mode, on_ledger_error, unpriced, default_model, models,
                             # per_request, per_session, budget, actions

Rules the loader applies:

* Unknown keys are errors; every limit is optional. Money is :class:`~decimal.Decimal`, built
  from the YAML text of the scalar (``1.50`` is ``Decimal("1.50")``), never through a float.
* ``defaults`` are deep-merged under each workflow: a workflow's keys win, nested mappings
  (``per_request``, ``per_session``, ``models``, ``budget``, ``actions`` and each action rule)
  merge key by key, lists
  (``models.allow``, ``budget.alert_at_pct``) are replaced. An explicit ``null`` in a workflow
  clears an inherited value (the built-in default applies instead).
* Several files (a directory, or a list of paths) make one :class:`PolicySet`: ``version`` is
  required in every file, ``defaults`` may appear in one file only and a workflow in one file
  only.
* Every problem in every file is collected and raised as one :class:`~costguard.errors.PolicyError`
  whose details name the file, the 1-based line and the dotted field.

Modules: :mod:`.models` (the pydantic models and :class:`PolicySet`), :mod:`.loader` (YAML
files to a :class:`PolicySet`), :mod:`.selectors` (the ``actions`` selector and trim-path
grammar), :mod:`.render` (values in error messages).
"""

from __future__ import annotations

from costguard.policy.loader import PathArg, check_policies, load_policies
from costguard.policy.models import (
    DEFAULT_ALERT_AT_PCT,
    DEFAULTS_NAME,
    RULES,
    WORKFLOW_NAME_PATTERN,
    ActionRule,
    ActionSelectorText,
    ActionTrim,
    Budget,
    DefaultsSection,
    Limits,
    Mode,
    ModelPattern,
    ModelRules,
    Money,
    NonNegInt,
    OnExhausted,
    OnLedgerError,
    Percent,
    PolicyFile,
    PolicySet,
    PositiveInt,
    PositiveMoney,
    StrictBool,
    TrimPath,
    Unpriced,
    Version,
    WorkflowName,
    WorkflowPolicy,
    WorkflowSection,
    policy_json_schema,
)
from costguard.policy.selectors import (
    HTTP_METHODS,
    SELECTOR_SYNTAX,
    ActionSelector,
    parse_action_selector,
    parse_trim_path,
)

__all__ = [
    "RULES",
    "ActionRule",
    "ActionTrim",
    "Budget",
    "DefaultsSection",
    "Limits",
    "ModelRules",
    "PolicyFile",
    "PolicySet",
    "WorkflowPolicy",
    "WorkflowSection",
    "check_policies",
    "load_policies",
    "parse_action_selector",
    "parse_trim_path",
    "policy_json_schema",
]
