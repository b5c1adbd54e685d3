"""What a job does with each event of the training loop: the run store, the W&B run, its log lines.

``benchmark.train`` hands every observation to one callable (``log=``) as a plain dict, so the
loop knows nothing of files, W&B or how a job talks to its user. ``EventSink`` is that callable
for a job: it appends the event to ``metrics.jsonl``, mirrors it into W&B, and says in the log
what a person watching the job wants to know (the time the run will take, each epoch's
perplexities, the test, a divergence, a probe's growth), in one place.
"""

from __future__ import annotations

import logging

from runners.run_store import RunStore
from runners.tracking import WandbTracker

# The job's own logger: while a job runs, runners.job.lines_named leads its lines with the job's name.
log = logging.getLogger("runners.job")

# How a divergence reads in the log; a finite but absurd validation perplexity says so itself
# ("validation perplexity (above 10x the vocabulary size)"), never "non-finite" (issue 26).
DIVERGED_HOW = {"loss": "the training loss became NaN or infinite",
                "gradient": "the gradient norm became NaN or infinite",
                "validation loss": "the validation loss became NaN or infinite"}


class EventSink:
    """The training loop's ``log``: every event to the store and W&B, and a line for the ones a person reads."""

    def __init__(self, store: RunStore, tracker: WandbTracker | None, train_tokens: int, epochs: int) -> None:
        self.store, self.tracker = store, tracker
        self.train_tokens, self.epochs = train_tokens, epochs  # tokens of one epoch, epochs of the run
        self.estimated = False  # the run's duration is said once, at the first measured speed
        self.train_ppl: float | None = None  # the last epoch's, printed beside its validation

    def __call__(self, event: dict) -> None:
        if event.get("scope") == "interval" and not self.estimated and event.get("tokens_per_s"):
            self.estimated = True
            self.say_duration(event["tokens_per_s"])
        self.store.log(event)
        if self.tracker is not None:
            self.tracker.log(event)
        self.say(event)

    def say_duration(self, tokens_per_s: float) -> None:
        seconds = self.train_tokens * self.epochs / tokens_per_s
        log.info("at %.0f tokens/s, %d epochs of training take about %s", tokens_per_s, self.epochs,
                 f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min")

    def say(self, event: dict) -> None:
        if event["split"] == "train" and event.get("scope") == "epoch":
            self.train_ppl = event["ppl"]
        elif event["split"] == "val":
            log.info("epoch %d  train ppl %s  val ppl %.2f", event["epoch"],
                     f"{self.train_ppl:.2f}" if self.train_ppl is not None else "-", event["ppl"])
        elif event["split"] == "test":
            log.info("test ppl %.2f (%s weights, epoch %s)", event["ppl"],
                     "best-validation" if event.get("weights") == "best" else "last epoch's",
                     event.get("weights_epoch", "-"))
        elif event.get("event") == "diverged":
            log.warning("diverged at step %d: %s", event["step"], DIVERGED_HOW.get(event["what"], event["what"]))
        elif event["split"] == "probe" and event.get("growth_per_step") is not None:
            log.info("probe: state grows x%.3f per step, largest value %.3g", event["growth_per_step"],
                     event["max_state"])
