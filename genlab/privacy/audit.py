"""The membership audit: can an attacker tell which images a trained model saw?

Members are a random subset of the train split, as many as the holdout split has images;
non-members are the holdout split, which no model ever trains on. Two attacks score every image
with the model's ``score(x)`` (higher means "looks like a member"):

- **loss**: one global threshold on the score (the LOSS attack of Yeom et al. 2018);
- **reference**: the target's score minus that of a reference model with the same config,
  trained on images that are neither members nor non-members (the rest of the train split plus
  the test split). Subtracting it removes how easy an image is for any model, so what remains is
  what the target learnt from that image (after Carlini et al. 2022, "offline" variant).

From each attack's rates comes an empirical lower bound on ε (:func:`attack.empirical_epsilon`),
and from generated samples the distance-to-closest-record ratio. The pure statistics live in
:mod:`genlab.privacy.attack`; this module gathers the scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genlab.checkpoint import load_weights, save_weights
from genlab.config import RunConfig
from genlab.data import DataSplits, Split
from genlab.models import GenerativeModel, build
from genlab.paths import cache_dir
from genlab.privacy import attack

AUDIT_SEED = 0
SCORE_DRAWS = 8  # stochastic scores (the VAE's ELBO) are averaged over this many draws
DEFAULT_DELTA = 1e-5  # δ of the empirical bound for a run trained without DP
N_EXPOSED = 16


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """The audit's fields for the record's privacy block, and the most exposed members beside
    their nearest generated samples (K, 2, C, H, W) for display."""

    record: dict[str, Any]
    exposed_pairs: Tensor


@dataclasses.dataclass(frozen=True)
class AuditSets:
    """Who is a member: rows of the train split (members) and of the holdout split."""

    members: Tensor  # int64 indices into data.train
    nonmembers: Tensor  # int64 indices into data.holdout

    @classmethod
    def draw(cls, data: DataSplits, *, seed: int = AUDIT_SEED) -> AuditSets:
        n = min(len(data.train), len(data.holdout))
        gen = torch.Generator().manual_seed(seed)
        members = torch.randperm(len(data.train), generator=gen)[:n].sort().values
        nonmembers = torch.randperm(len(data.holdout), generator=gen)[:n].sort().values
        return cls(members=members, nonmembers=nonmembers)

    def reference_split(self, data: DataSplits) -> Split:
        """Images that are neither members nor non-members: the other train rows and the test
        split. A reference model trained on them has never seen an audited image."""
        keep = torch.ones(len(data.train), dtype=torch.bool)
        keep[self.members] = False
        x = torch.cat([data.train.x[keep], data.test.x])
        y = torch.cat([data.train.y[keep], data.test.y])
        return Split(x=x.contiguous(), y=y)


@torch.no_grad()
def membership_scores(
    model: GenerativeModel,
    x: Tensor,
    y: Tensor,
    *,
    draws: int = SCORE_DRAWS,
    seed: int = AUDIT_SEED,
    batch_size: int = 500,
) -> np.ndarray:
    """``model.score`` per image, averaged over ``draws`` noise draws when the score is random.

    The draws are seeded, so the same model gives the same scores every time.
    """
    was_training = model.training
    model.eval()
    device = model.device
    draws = draws if model.stochastic_score else 1
    total = torch.zeros(len(x), dtype=torch.float64)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for d in range(draws):
            torch.manual_seed(seed + d)
            for i in range(0, len(x), batch_size):
                xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
                total[i : i + batch_size] += model.score(xb, yb).double().cpu()
    model.train(was_training)
    return (total / draws).numpy()


def reference_model(
    cfg: RunConfig,
    data: DataSplits,
    sets: AuditSets,
    *,
    callbacks: Sequence[Any] = (),
    device: str | None = None,
) -> GenerativeModel:
    """A model with the run's config trained on the reference split; cached per config."""
    from genlab.train import Trainer, resolve_device, seed_everything

    path = cache_dir("audit_references") / f"{cfg.config_hash()}-{len(sets.members)}.safetensors"
    train_cfg = cfg.train if device is None else dataclasses.replace(cfg.train, device=device)
    seed_everything(cfg.train.seed)
    model = build(
        cfg.model, shape=data.shape, num_classes=data.num_classes, config=cfg.model_config
    )
    if path.exists():
        return load_weights(model, path).to(resolve_device(train_cfg.device)).eval()
    ref_data = dataclasses.replace(data, train=sets.reference_split(data))
    Trainer(model, train_cfg, callbacks=callbacks, privacy=cfg.privacy).fit(ref_data)
    save_weights(model, path)
    return model.eval()


def _attack(
    member_scores: np.ndarray, nonmember_scores: np.ndarray, delta: float, alpha: float
) -> dict[str, Any]:
    metrics = attack.attack_metrics(member_scores, nonmember_scores)
    metrics["epsilon"] = attack.empirical_epsilon(
        member_scores, nonmember_scores, delta=delta, alpha=alpha, seed=AUDIT_SEED
    )
    return metrics


def membership_audit(
    model: GenerativeModel,
    cfg: RunConfig,
    data: DataSplits,
    *,
    reference: bool = True,
    seed: int = AUDIT_SEED,
    callbacks: Sequence[Any] = (),
) -> AuditResult:
    """Attack ``model``; the result holds the audit's part of the record's privacy block.

    Args:
        model: the trained target model.
        cfg: its run config (the reference model copies it, DP settings included).
        data: its data splits.
        reference: also run the reference-calibrated attack (trains, or loads, a second model).
        seed: draws the members and the generated samples.
        callbacks: Trainer callbacks for the reference model's training (progress bars).

    Returns:
        An :class:`AuditResult`. Its record has the headline fields ``mia_auc``,
        ``mia_tpr_at_1pct_fpr``, ``mia_tpr_at_0_1pct_fpr``, ``epsilon_lower_bound`` and
        ``dcr_ratio`` from the stronger attack, plus ``attacks`` (each attack's full metrics and
        ROC), ``exposed`` (the most exposed members) and the audit's settings.
    """
    sets = AuditSets.draw(data, seed=seed)
    delta = cfg.privacy.delta if cfg.privacy else DEFAULT_DELTA
    xm, ym = data.train.x[sets.members], data.train.y[sets.members]
    xn, yn = data.holdout.x[sets.nonmembers], data.holdout.y[sets.nonmembers]
    target_m = membership_scores(model, xm, ym, seed=seed)
    target_n = membership_scores(model, xn, yn, seed=seed)

    scores = {"loss": (target_m, target_n)}
    reason = None
    if reference:
        ref = reference_model(cfg, data, sets, callbacks=callbacks, device=str(model.device))
        ref_m = membership_scores(ref, xm, ym, seed=seed)
        ref_n = membership_scores(ref, xn, yn, seed=seed)
        scores["reference"] = (target_m - ref_m, target_n - ref_n)
    else:
        reason = "reference attack skipped"
    # Two attacks, two chances at a lucky bound: each gets half the error rate (Bonferroni), so
    # the larger of the two bounds still holds with 95% confidence.
    alpha = 0.05 / len(scores)
    attacks = {name: _attack(m, n, delta, alpha) for name, (m, n) in scores.items()}
    best = max(attacks, key=lambda name: attacks[name]["auc"])
    bound = max(a["epsilon"]["epsilon_lower_bound"] for a in attacks.values())

    gen = torch.Generator().manual_seed(seed)
    generated = model.sample(len(xm), generator=gen).cpu()
    evidence = scores[best][0]
    exposed = attack.most_exposed(evidence, k=min(N_EXPOSED, len(evidence)))
    dist, nearest = attack.nearest_neighbours(xm[exposed], generated)
    pairs = torch.stack([xm[exposed], generated[nearest]], dim=1)
    record = {
        "mia_auc": attacks[best]["auc"],
        "mia_tpr_at_1pct_fpr": attacks[best]["tpr_at_1pct_fpr"],
        "mia_tpr_at_0_1pct_fpr": attacks[best]["tpr_at_0_1pct_fpr"],
        "mia_tpr_at_0_1pct_fpr_reason": attacks[best]["tpr_at_0_1pct_fpr_reason"],
        "epsilon_lower_bound": bound,
        "dcr_ratio": attack.dcr_ratio(generated, xm, xn),
        "mia_attack": best,
        "attacks": attacks,
        "audit": {
            "n_members": len(xm),
            "n_nonmembers": len(xn),
            "score_draws": SCORE_DRAWS if model.stochastic_score else 1,
            "delta": delta,
            "confidence": 0.95,
            "seed": seed,
            "reference_note": reason,
        },
        "exposed": [
            {
                "train_index": int(sets.members[i]),
                "evidence": float(evidence[i]),
                "nearest_generated": int(j),
                "distance": float(d),
            }
            for i, j, d in zip(exposed, nearest.tolist(), dist.tolist(), strict=True)
        ],
    }
    return AuditResult(record=record, exposed_pairs=pairs)
