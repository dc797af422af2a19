"""No framework is imported with costguard or its integration modules; a missing one is named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from costguard.errors import IntegrationError

FRAMEWORKS = ("strands", "langchain_aws", "langchain_core", "bedrock_agentcore")


def test_importing_costguard_and_its_integrations_imports_no_framework() -> None:
    code = (
        "import sys, costguard, costguard.integrations.strands, costguard.integrations.langchain, "
        "costguard.integrations.agentcore; costguard.Guard\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("call", "module", "extra"),
    [
        ("strands", "strands.models.bedrock", "strands"),
        ("langchain", "langchain_aws", "langchain"),
        ("agentcore", "bedrock_agentcore.runtime", "agentcore"),
    ],
)
def test_a_missing_framework_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch, call: str, module: str, extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what an uninstalled package looks like to import
    from costguard.integrations import agentcore, langchain, strands

    attempts = {
        "strands": lambda: strands.meter_agent(object(), None, workflow="wf"),  # type: ignore[arg-type]
        "langchain": lambda: langchain.govern(object(), None, workflow="wf"),  # type: ignore[arg-type]
        "agentcore": agentcore.agentcore_app,
    }
    with pytest.raises(IntegrationError, match=rf"pip install 'costguard\[{extra}\]'"):
        attempts[call]()
