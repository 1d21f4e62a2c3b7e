"""Steps 1–3 of one iteration: prompts → ``generations.jsonl`` rows → ``pairs.jsonl`` rows and counts.

A ``generations.jsonl`` row holds a prompt (``id``, ``language``, ``prompt``) and, one entry per response:
``responses``, ``scores`` (the judge's mean, null when unjudged), ``judge_samples`` and ``judge_problems``
(per judgement: the parsed value, and null / ``unparseable`` / ``out_of_range``), ``detected_language``
and ``language_confidence`` (py3langid), ``dropped`` (null, ``empty`` or ``unjudged``); and
``judgements``, the judge's raw texts, for LLM judges. Every non-empty response is judged: the language
check (``self_reward.language_match``) is applied when pairing, so pairs and their counts are a pure
function of these rows and the pairing settings, and a resumed iteration rebuilds them from the file
instead of generating again, whatever those settings are now.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from congrad.data.prompts import Prompt
from congrad.generation.langid import detect, same_language
from congrad.generation.sampling import Sampling, TextGenerator
from congrad.judging.verdicts import Candidate
from congrad.selfreward.pairing import best_vs_worst
from congrad.utils import cost

EMPTY, LANGUAGE, UNJUDGED = "empty", "language", "unjudged"


def generate_and_judge(prompts: Sequence[Prompt], generator: TextGenerator, judge, sampling: Sampling) -> list[dict]:
    """Sample, identify languages, judge every non-empty response; one row per prompt."""
    with cost.stage("generate"):
        responses = generator.generate([p.prompt for p in prompts], sampling, desc="generate")
    rows, candidates, slots = [], [], []
    for k, (prompt, texts) in enumerate(zip(prompts, responses)):
        detections = [detect(text) for text in texts]
        dropped = []
        for j, text in enumerate(texts):
            if not text:
                dropped.append(EMPTY)
            else:
                dropped.append(None)
                candidates.append(Candidate(prompt.prompt, prompt.language, text))
                slots.append((k, j))
        rows.append(
            {
                "id": prompt.id,
                "language": prompt.language,
                "prompt": prompt.prompt,
                "responses": texts,
                "scores": [None] * len(texts),
                "judge_samples": [[] for _ in texts],
                "judge_problems": [[] for _ in texts],
                "detected_language": [d.language for d in detections],
                "language_confidence": [d.confidence for d in detections],
                "dropped": dropped,
            }
        )
    with cost.stage("judge"):
        verdicts = judge.judge(candidates, generator) if candidates else []
    keep_texts = any(v.texts for v in verdicts)  # LLM judges: keep what they wrote
    if keep_texts:
        for row in rows:
            row["judgements"] = [[] for _ in row["responses"]]
    for (k, j), verdict in zip(slots, verdicts):
        row = rows[k]
        row["scores"][j] = verdict.score
        row["judge_samples"][j] = verdict.samples
        row["judge_problems"][j] = verdict.problems
        if keep_texts:
            row["judgements"][j] = verdict.texts
        if verdict.score is None:
            row["dropped"][j] = UNJUDGED
    return rows


def pairs_from_generations(rows: Sequence[dict], min_score_gap: float, language_match: bool) -> tuple[list[dict], dict]:
    """The ``pairs.jsonl`` rows (the preference format, with ``chosen_score`` and ``rejected_score``) and the counts of
    what happened on the way, per language and in total. With ``language_match`` a response whose identified
    language is not the prompt's takes no part (``dropped_language``); without, it is only counted
    (``language_mismatch``, counted either way)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    pairs = []
    for row in rows:
        c = counts[row["language"]]
        c["prompts"] += 1
        c["responses"] += len(row["responses"])
        mismatch = [
            bool(text) and not same_language(detected, row["language"])
            for text, detected in zip(row["responses"], row["detected_language"])
        ]
        c["language_mismatch"] += sum(mismatch)
        dropped = [
            reason or (LANGUAGE if language_match and other else None)
            for reason, other in zip(row["dropped"], mismatch)
        ]
        c.update(f"dropped_{reason}" for reason in dropped if reason)
        c.update(f"judgements_{problem or 'valid'}" for problems in row["judge_problems"] for problem in problems)
        scores = [None if reason else score for score, reason in zip(row["scores"], dropped)]
        pair, reason = best_vs_worst(row["responses"], scores, min_score_gap)
        if pair is None:
            c[f"no_pair_{reason}"] += 1
            continue
        c["pairs"] += 1
        best, worst = pair
        pairs.append(
            {
                "id": row["id"],
                "language": row["language"],
                "prompt": row["prompt"],
                "chosen": row["responses"][best],
                "rejected": row["responses"][worst],
                "chosen_score": row["scores"][best],
                "rejected_score": row["scores"][worst],
            }
        )
    total = sum(counts.values(), Counter())
    report = {
        "languages": {lang: dict(sorted(c.items())) for lang, c in sorted(counts.items())},
        "total": dict(sorted(total.items())),
    }
    return pairs, report
