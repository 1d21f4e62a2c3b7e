"""Judges: a score in [0, 5] for each response to a prompt.

- :mod:`.verdicts`: what a judge is given and returns, and how a judge's text is read;
- :mod:`.llm`: LLM-as-a-judge on the additive 0–5 rubric (the policy itself, or another model);
- :mod:`.api`: the LLM judge's model behind an OpenAI-compatible server (``judge=api``);
- :mod:`.cache`: the verdict cache every LLM judge reads before it asks;
- :mod:`.rule`: a transparent rule-based scorer for tiny models and tests (a pipeline check, never a
  self-rewarding result).
"""
