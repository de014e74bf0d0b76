"""Process-wide work meters for the throughput columns (`<stage>_gen_tok_s`, `<stage>_score_samples_s`): the
sampler adds the tokens it draws, the scorer the pairs it scores; `run.StageMeter` reads them per stage."""

from __future__ import annotations


class Meter:
    """Work done by one stage kind in this process and the seconds it took, cumulative (throughput logs): take a
    `snapshot()` before a stage and `since(snapshot)` after it."""

    def __init__(self, unit: str):
        self.unit, self.count, self.seconds = unit, 0.0, 0.0

    def add(self, count: float, seconds: float) -> None:
        self.count += float(count)
        self.seconds += float(seconds)

    def snapshot(self) -> tuple[float, float]:
        return self.count, self.seconds

    def since(self, snap: tuple[float, float]) -> dict[str, float | None]:
        """{count, seconds, rate} of the work since `snap`; rate None when nothing was done."""
        count, seconds = self.count - snap[0], self.seconds - snap[1]
        return {"count": count, "seconds": seconds, "rate": count / seconds if count > 0 and seconds > 0 else None}


GENERATION = Meter("tokens")  # response tokens sampled by `sample_responses` (up to and including EOS), seconds
SCORING = Meter("samples")  # pairs scored by `rewards.score` in this process, and the seconds it took
