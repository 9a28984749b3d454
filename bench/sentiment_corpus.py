"""P5 on a corpus of distinct texts: Healthbeat's sentiment path against bare VADER on the same texts.

`bench.generate.distinct_texts` makes texts distinct by a serial number alone, so two texts share all their words
but one. Here every text is built from fragments of customer mail (openings, complaints, praise, questions,
closings) with random words of VADER's lexicon and of plain English, numbers, names and now and then an emoji or
a quoted reply, so the model meets a different sentence every time and the cache never answers: each text is
scored once, by the model.

The comparison runs in one process, the worker's path first with no worker process (the share of one core its
own per-text work takes) and then as a cycle runs it (a second process on a second core, when there is one),
against `SentimentIntensityAnalyzer.polarity_scores` on the same cleaned texts. Both sides are warmed up, and
the runs alternate, each `repeats` times; the report keeps every run and judges the medians.

`python -m bench.sentiment_corpus [--texts N] [--repeats R]` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

_OPENINGS = ("Hi team,", "Hello,", "Good morning,", "Hey folks,", "Dear support,", "Hi there,", "Quick note:",
             "Following up:", "As discussed,", "FYI,")
_BODIES = (
    "the {thing} has been {adj} since {day} and {who} {feel} about it.",
    "we saw {n} errors in the {thing} yesterday, which is {adj}.",
    "{who} said the new {thing} is {adj}, {adv} so after the {day} release.",
    "can you check why the {thing} takes {n} seconds to load for {who}?",
    "the rollout of the {thing} to {n} users went {adv} {adj}.",
    "our {who} is {feel} because the {thing} was {adj} again on {day}.",
    "thanks for fixing the {thing}, it is {adv} {adj} now.",
    "we are not sure the {thing} is worth it: {n} tickets this month and {who} {feel}.",
    "please send the invoice for the {thing}, reference {n}.",
    "is there a way to export the {thing} for {who} before {day}?",
)
_THINGS = ("dashboard", "export", "integration", "API", "login page", "report", "sync job", "billing portal",
           "mobile app", "workflow", "alert", "search", "SSO setup", "data import", "admin console")
_ADJECTIVES = ("great", "terrible", "slow", "fine", "broken", "excellent", "confusing", "reliable", "awful",
               "helpful", "useless", "amazing", "frustrating", "stable", "disappointing", "ok", "perfect", "bad")
_ADVERBS = ("really", "very", "quite", "extremely", "somewhat", "not", "barely", "incredibly", "hardly")
_WHO = ("our CFO", "the team", "my manager", "our admins", "the sales team", "leadership", "everyone",
        "the night shift", "our customers", "the analysts")
_FEELINGS = ("is happy", "is angry", "is worried", "is thrilled", "is upset", "doesn't care", "is delighted",
             "is annoyed", "feels ignored", "is grateful")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "last week", "the 3rd", "yesterday", "March")
_CLOSINGS = ("Thanks!", "Regards,", "Cheers", "Best,", "Thanks in advance.", "Talk soon.", "Please advise.",
             "This is urgent!!", "No rush.", "Appreciate it :)")
_EMOJIS = ("🙂", "😡", "👍", "🎉", "😞")
_NAMES = ("Ana", "Bo", "Chen", "Dee", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Mo", "Nia")
_QUOTE = "\n\nOn {day}, {name} wrote:\n> {body}"


def corpus(count: int, seed: int = 22) -> list[str]:
    """`count` texts, no two equal: fragments, words, numbers and names drawn at random (the serial number
    that makes the last few alike differ is one of many random parts)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    texts: list[str] = []
    while len(texts) < count:
        parts = [rng.choice(_OPENINGS)]
        for _ in range(rng.randint(1, 4)):
            body = rng.choice(_BODIES).format(
                thing=rng.choice(_THINGS), adj=rng.choice(_ADJECTIVES), adv=rng.choice(_ADVERBS),
                who=rng.choice(_WHO), feel=rng.choice(_FEELINGS), day=rng.choice(_DAYS), n=rng.randint(2, 9999))
            parts.append(body[0].upper() + body[1:] if rng.random() < 0.5 else body)
        if rng.random() < 0.1:
            parts.append(rng.choice(_EMOJIS))
        parts.append(f"{rng.choice(_CLOSINGS)} {rng.choice(_NAMES)} ({rng.randint(1, 10**6)})")
        text = " ".join(parts)
        if rng.random() < 0.25:
            text += _QUOTE.format(day=rng.choice(_DAYS), name=rng.choice(_NAMES), body=rng.choice(_BODIES))
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def _worker_run(workdir: Path, texts: list[str], workers: int | None) -> dict[str, float]:
    """`score_pending_texts` over `texts` freshly stored; workers=0: this process alone."""
    import resource

    from bench.rescoring import insert_inbound_emails
    from worker.scoring.sentiment import Parallelism, VaderModel, score_pending_texts
    from worker.store import Store

    db = workdir / f"corpus-{workers}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with Store(db) as store:
        with store.transaction() as conn:
            insert_inbound_emails(conn, texts, tag="C")
        model = VaderModel()
        for text in corpus(200, seed=7):
            model.compound(text)
        parallel = Parallelism() if workers is None else Parallelism(workers=workers)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu, wall = time.process_time(), time.perf_counter()
        scored = score_pending_texts(store, model, parallel=parallel)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        children_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return {"scored": scored, "wall": wall, "cpu": cpu + children_cpu, "rate": scored / wall}


def _bare_run(texts: list[str]) -> dict[str, float]:
    """The library alone on the cleaned texts (what the worker hands the model), warm."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from worker.scoring.sentiment import clean_text

    analyzer = SentimentIntensityAnalyzer()
    for text in corpus(200, seed=7):
        analyzer.polarity_scores(text)
    cleaned = [clean_text(t) for t in texts]
    cpu, wall = time.process_time(), time.perf_counter()
    for text in cleaned:
        analyzer.polarity_scores(text)
    wall = time.perf_counter() - wall
    return {"scored": len(cleaned), "wall": wall, "cpu": time.process_time() - cpu, "rate": len(cleaned) / wall}


def run(workdir: Path, texts: int, repeats: int = 3) -> dict[str, Any]:
    """Bare VADER, the worker alone and the worker as a cycle runs it, alternated `repeats` times, each in a
    process of its own."""
    from bench.measure import isolated

    corpus_texts = corpus(texts)
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "worker_one_process": [], "worker": []}
    for _ in range(repeats):
        runs["bare"].append(isolated(_bare_run, corpus_texts))
        runs["worker_one_process"].append(isolated(_worker_run, workdir, corpus_texts, 0))
        runs["worker"].append(isolated(_worker_run, workdir, corpus_texts, None))
    medians = {name: {key: statistics.median(r[key] for r in found) for key in ("wall", "cpu", "rate")}
               for name, found in runs.items()}
    bare = medians["bare"]["rate"]
    return {"texts": texts, "distinct": len(set(corpus_texts)), "repeats": repeats, "runs": runs,
            "medians": medians,
            "share_of_bare": {name: m["rate"] / bare for name, m in medians.items() if name != "bare"},
            "cpu_per_text_us": {name: m["cpu"] / texts * 1e6 for name, m in medians.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sentiment_corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="healthbeat-corpus-") as work:
        print(json.dumps(run(Path(work), args.texts, args.repeats), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
