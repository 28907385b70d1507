"""Lesson presets for class: a question, a small sweep that answers it, and the page to look at.

Each lesson is data: a :class:`~genlab.sweep.SweepSpec` on the bundled ``digits`` data, small
enough to train and evaluate (all three axes, the full membership audit) within two minutes on a
laptop CPU, and the dashboard page (with its query parameters) that shows the answer. The Home
page lists them with a button that launches the sweep in the background
(:func:`genlab.sweep.launch_sweep`); from a terminal, :meth:`Lesson.command` gives the same
sweep as a ``genlab sweep`` command. Lessons that share a run's settings share the run: it is
trained once.

Measured wall times of each lesson alone, from ``genlab sweep ... --quiet`` in a fresh
``GENLAB_HOME`` (so including the one-off reference classifier, about 7 s, and every worker's
start-up), under ``nice -n 5``, 2026-11-23, on a shared 2-core CPU with other jobs running (load
average 4.4 to 6.7), torch CPU build; a laptop to itself is faster:

- ``dp-samples``: 75 s (attack AUC 0.64 without DP, 0.52 at ε = 1; FD 32 against 274)
- ``which-pixels``: 51 s
- ``membership``: 105 s (attack AUC 0.75 without DP, 0.56 at ε = 1)
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from genlab.sweep import SweepSpec

PAGES = ("explore", "explain", "privacy", "tradeoffs")  # the pages' url_path values


@dataclass(frozen=True)
class Answer:
    """A link to the page that shows (part of) the answer.

    Args:
        label: the link's text.
        page: the page's ``url_path`` (one of :data:`PAGES`).
        query: ``(parameter, index)`` pairs: the parameter takes the id of the sweep's run at
            that index (in :meth:`SweepSpec.configs` order).
    """

    label: str
    page: str
    query: tuple[tuple[str, int], ...] = ()

    def query_params(self, run_ids: list[str | None]) -> dict[str, str]:
        """The page's query parameters for the sweep's run ids; a missing run is left out."""
        return {name: run_ids[i] for name, i in self.query if run_ids[i] is not None}


@dataclass(frozen=True)
class Lesson:
    """A classroom question answered by a small sweep.

    Args:
        id: a short stable name (used in keys and URLs).
        title: the lesson's heading.
        question: what the class asks.
        explanation: what to look for, in plain words for students.
        spec: the sweep that answers it.
        answers: where to look once it has finished; the first one is the main answer.
    """

    id: str
    title: str
    question: str
    explanation: str
    spec: SweepSpec
    answers: tuple[Answer, ...]

    def __post_init__(self):
        for answer in self.answers:
            if answer.page not in PAGES:
                raise ValueError(f"lesson {self.id}: unknown page {answer.page!r}")
            for _, i in answer.query:
                if not 0 <= i < self.spec.size:
                    raise ValueError(f"lesson {self.id}: no run {i} in {self.spec.size} runs")

    @property
    def page(self) -> str:
        """The ``url_path`` of the page that shows the main answer."""
        return self.answers[0].page

    def query_params(self, run_ids: list[str | None]) -> dict[str, str]:
        """The main answer page's query parameters, given the sweep's run ids."""
        return self.answers[0].query_params(run_ids)

    def command(self) -> str:
        """The same sweep as a ``genlab sweep`` command line."""
        s = self.spec
        parts = ["genlab", "sweep", "--dataset", s.dataset, "--models", ",".join(s.models),
                 "--epsilons", ",".join("inf" if math.isinf(e) else f"{e:g}" for e in s.epsilons),
                 "--seeds", ",".join(map(str, s.seeds))]
        if s.epochs is not None:
            parts += ["--epochs", str(s.epochs)]
        for key, value in s.overrides:
            parts += ["--set", f"{key}={value}"]
        return shlex.join(parts)


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        id="dp-samples",
        title="What does DP do to samples?",
        question="If we train with differential privacy, do the pictures the model makes get "
        "worse?",
        explanation=(
            "Two copies of the same model learn the digits: one normally, one with differential "
            "privacy at ε = 1, a strong guarantee. DP clips what each image may teach the model "
            "and adds random noise on top, so no single child's handwriting can leave a mark. "
            "Compare the samples and the prototype images (the Components tab): the private "
            "model's digits are noisier and harder to read. That is the price of privacy."
        ),
        # a Bernoulli mixture: its samples are its prototypes, so the DP noise shows plainly
        spec=SweepSpec(dataset="digits", models=("mixture",), epsilons=(math.inf, 1.0),
                       seeds=(0,), epochs=15),
        answers=(
            Answer("Samples without DP", "explore", (("run", 0),)),
            Answer("Samples with DP (ε = 1)", "explore", (("run", 1),)),
            Answer("Both on the three axes", "tradeoffs"),
        ),
    ),
    Lesson(
        id="which-pixels",
        title="Which pixels matter?",
        question="When the model judges how typical a digit looks, which pixels does it look at?",
        explanation=(
            "A variational autoencoder squeezes each digit into 8 numbers and rebuilds it. "
            "Integrated Gradients colours every pixel by how much it changed the model's "
            "verdict: red pixels raise it, blue ones lower it. Look for the strokes of the digit "
            "lighting up, and try a latent target to see what one of the 8 numbers encodes."
        ),
        spec=SweepSpec(dataset="digits", models=("vae",), epsilons=(math.inf,), seeds=(0,),
                       epochs=30, overrides=(("arch", "mlp"), ("latent_dim", 8), ("lr", 3e-3))),
        answers=(Answer("Attributions of the VAE", "explain", (("run", 0),)),),
    ),
    Lesson(
        id="membership",
        title="Can an attacker tell who was in the training set?",
        question="Could someone find out whether *your* digit was used to train the model?",
        explanation=(
            "This model is trained on only about 270 digits for many epochs, with 200 prototype "
            "images: it memorises them. An attacker scores each image; members of the training "
            "set score better than images the model never saw. An attack AUC of 0.5 is "
            "guessing, 1.0 finds every member. The same model trained with DP at ε = 1 cannot "
            "memorise, and the attack falls back towards guessing."
        ),
        spec=SweepSpec(dataset="digits", models=("mixture",), epsilons=(math.inf, 1.0),
                       seeds=(0,), epochs=20,
                       overrides=(("components", 200), ("holdout_fraction", 0.45),
                                  ("test_fraction", 0.4))),
        answers=(
            Answer("The attack: memorising model against DP", "privacy",
                   (("run", 0), ("compare", 1))),
        ),
    ),
)


def lesson(lesson_id: str) -> Lesson:
    """The lesson with this id; KeyError lists the known ones."""
    for item in LESSONS:
        if item.id == lesson_id:
            return item
    raise KeyError(f"unknown lesson {lesson_id!r}; known: {', '.join(x.id for x in LESSONS)}")
