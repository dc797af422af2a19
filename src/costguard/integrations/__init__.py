"""Integrations with agent frameworks: Strands Agents, LangChain, AgentCore Runtime.

Each module imports its framework only when used, so ``import costguard`` never imports one; a
missing framework raises :class:`~costguard.errors.IntegrationError` naming the extra to install
(``pip install 'costguard[strands]'``, ``[langchain]``, ``[agentcore]``).
"""
