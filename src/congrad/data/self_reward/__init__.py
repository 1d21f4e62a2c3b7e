"""Steps 1–3 of a self-rewarding iteration (DESIGN §1): from prompts to preference pairs.

- :mod:`~congrad.data.self_reward.prompts`: the prompt set (``prompt``, ``language``) and the shipped tiny one;
- :mod:`~congrad.data.self_reward.generation`: K sampled responses per prompt, batched ``generate``;
- :mod:`~congrad.data.self_reward.langid`: the language of every response (py3langid, offline);
- :mod:`~congrad.data.self_reward.judges`: LLM-as-a-judge on the additive 0–5 rubric, and the rule judge;
- :mod:`~congrad.data.self_reward.pairing`: best vs. worst response per prompt;
- :mod:`~congrad.data.self_reward.builder`: the three steps together, what ``iteration_<t>/`` holds.

The iteration loop around them (resume, reference policy, training) is :mod:`congrad.self_rewarding`.
"""
