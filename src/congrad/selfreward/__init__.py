"""The self-rewarding loop (README, "How it works"): per iteration, generate responses with the policy,
judge them, pair best against worst, and train the next policy with ConGrad-filtered DPO.

- :mod:`.responses`: prompts → generated, language-checked, judged responses (``generations.jsonl``) →
  preference pairs (``pairs.jsonl``) and the counts of what was dropped;
- :mod:`.pairing`: best vs. worst response of one prompt;
- :mod:`.loop`: the iterations, their directories, resume, and the reference policy of each.
"""
