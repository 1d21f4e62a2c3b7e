"""Evaluation: does a trained policy beat its starting point, per language, on languages seen and unseen
in training?

- :mod:`.evaluator`: one policy against a baseline on the held-out sets (preference accuracy, win rate by a
  judge in both orders, language fidelity, NLL and multiple-choice alignment tax);
- :mod:`.likelihoods`: log-likelihoods of pairs, texts and answers under one model;
- :mod:`.metrics`: the numbers from plain values (win rate, bootstrap CI, macro means);
- :mod:`.outputs`: ``results.json``, ``per_language.csv``, ``generations.jsonl``, the plot, the loggers;
- :mod:`.callback`: the evaluation after a fit (``train.py``, every self-rewarding iteration);
- :mod:`.standalone`: ``evaluate.py``.
"""
