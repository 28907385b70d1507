"""``genlab compress``: a smaller or faster copy of a finished run, stored as a new, linked run.

Three methods, for any registered model:

- ``prune:S`` — magnitude pruning with ``torch.nn.utils.prune``: in every convolution and Linear
  layer, the fraction S of weights with the smallest absolute value is set to zero
  (``l1_unstructured``, layer by layer, so no layer is emptied while others keep their small
  weights), then the pruning is made permanent (``prune.remove``). Biases and norms are kept.
  The pruned weights are saved packed (bitmask + nonzeros).
- ``int8`` — dynamic int8 quantization with ``torch.ao.quantization.quantize_dynamic`` on the
  Linear layers (the only layers it supports besides recurrent ones and embeddings):
  int8 weights, activations quantized per batch on the fly. Convolutions and norms stay float32,
  and the record says which layers are which. A model without Linear layers is refused.
- ``fp16`` — half precision: every layer with parameters stores and computes in float16.

The new run is linked to its parent (:mod:`genlab.lineage`), keeps the parent's config (the
architecture and data it came from) and formal privacy: compression reads only the trained
weights, so it is post-processing and costs no privacy (Dwork & Roth 2014, Proposition 2.1).
Its own train and test losses are recomputed; ``genlab evaluate`` (which ``genlab compress``
runs unless told not to) fills its three-axis record and its efficiency block.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from genlab.checkpoint import load_run_model, load_weights
from genlab.errors import ConfigError, StoreError
from genlab.lineage import (
    create_derived_run,
    derived_summary,
    finish_derived_run,
    lineage_of,
    trained_roots,
    write_derived_artifacts,
)
from genlab.precision import parameter_counts, quantize_linear_int8, to_half_layers
from genlab.runs import RunStore

METHODS_HELP = "prune:S (a sparsity 0 < S < 1, e.g. prune:0.5), int8 or fp16"
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
            nn.ConvTranspose3d, nn.Linear)
# Derived runs whose weights are no longer a plain float32 model: compress their parent instead.
NOT_COMPRESSIBLE = ("int8", "fp16", "ensemble")
POST_PROCESSING = ("compression reads only the parent's trained weights, so it is "
                   "post-processing: the formal ε and δ are the parent's "
                   "(Dwork & Roth 2014, Proposition 2.1)")


@dataclass(frozen=True)
class CompressionSpec:
    """A parsed ``--method``: ``prune`` with its ``sparsity``, ``int8`` or ``fp16``."""

    method: str
    sparsity: float | None = None

    @property
    def text(self) -> str:
        return f"prune:{self.sparsity:g}" if self.method == "prune" else self.method


def parse_method(text: str) -> CompressionSpec:
    """Parse ``prune:0.5``, ``int8`` or ``fp16``.

    Raises:
        ConfigError: anything else, with the valid forms (``prune:1.5``: the sparsity's range).
    """
    raw = str(text).strip().lower()
    if raw in ("int8", "fp16"):
        return CompressionSpec(raw)
    name, sep, arg = raw.partition(":")
    if name == "prune":
        try:
            sparsity = float(arg) if sep else math.nan
        except ValueError:
            sparsity = math.nan
        if not 0 < sparsity < 1:  # NaN fails too
            shown = arg if sep else "none"
            raise ConfigError(f"prune needs a sparsity strictly between 0 and 1 (got {shown}); "
                              "e.g. prune:0.5 zeroes half the weights of each layer")
        return CompressionSpec("prune", sparsity)
    hint = " (int8 is the only integer precision)" if re.fullmatch(r"int\d+", raw) else ""
    raise ConfigError(f"unknown compression method {text!r}{hint}; use {METHODS_HELP}")


# ----------------------------------------------------------------------------- the methods
def prune_layers(model: nn.Module, sparsity: float) -> dict[str, Any]:
    """Zero the fraction ``sparsity`` of smallest-magnitude weights in every conv and Linear
    layer, permanently; returns what was pruned (``layers``: name -> weights and zeros)."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise ConfigError(f"the {model.name} has no convolution or Linear layers to prune")
    report = {}
    for name, m in layers:
        prune.l1_unstructured(m, name="weight", amount=sparsity)
        prune.remove(m, "weight")  # weight = weight_orig * mask, as a plain parameter again
        w = m.weight.detach()
        report[name] = {"weights": w.numel(), "zeros": int((w == 0).sum())}
    total = sum(r["weights"] for r in report.values())
    zeros = sum(r["zeros"] for r in report.values())
    return {"scope": "per layer", "criterion": "L1 magnitude, unstructured",
            "sparsity": sparsity, "pruned_sparsity": zeros / total, "layers": report}


def _float_left(model: nn.Module) -> dict[str, int]:
    """Parameters that stay float32 after int8 quantization, by layer type."""
    out: dict[str, int] = {}
    for m in model.modules():
        own = sum(p.numel() for p in m.parameters(recurse=False) if p.is_floating_point())
        kind = "Linear (biases)" if type(m).__name__ == "Int8Linear" else type(m).__name__
        if own:
            out[kind] = out.get(kind, 0) + own
    return out


def convert(model: nn.Module, spec: CompressionSpec) -> dict[str, Any]:
    """Apply ``int8`` or ``fp16`` to ``model`` in place (also used to rebuild a stored run
    before its weights load); returns what was converted.

    Raises:
        ConfigError: int8 on a model without Linear layers: nothing could be quantized.
    """
    if spec.method == "int8":
        linear = {n: m.weight.numel() for n, m in model.named_modules() if type(m) is nn.Linear}
        if not linear:
            raise ConfigError(
                f"int8 cannot compress the {model.name}: torch.ao's dynamic quantization works "
                "on Linear layers and this model has none; use fp16 or prune:S instead")
        quantize_linear_int8(model)
        return {"quantized": {"layers": sorted(linear), "weights": sum(linear.values()),
                              "dtype": "qint8", "qscheme": "per tensor, affine",
                              "activations": "quantized per batch on the fly (dynamic)"},
                "float32": _float_left(model)}
    if spec.method == "fp16":
        half, rounded = to_half_layers(model)
        return {"float16_layers": half, "rounded_only": rounded}
    raise ConfigError(f"convert() takes int8 or fp16, not {spec.text}")


def load_derived(link, model: nn.Module, cfg, path) -> nn.Module:
    """Rebuild a compressed run (:func:`genlab.lineage.load_derived`): convert a fresh model of
    its config as the method did, then load the stored weights into it."""
    spec = parse_method(link.spec)
    if spec.method != "prune":  # pruned weights load into the plain architecture
        convert(model, spec)
    return load_weights(model, path)


# ----------------------------------------------------------------------------- the run
def compress_run(store: RunStore, run_id: str, method: str) -> str:
    """Compress the finished run ``run_id`` with ``method`` into a new linked run; returns its id.

    The new run is finished with its weights, sample grid, summary (its own train and test
    losses) and formal privacy block; evaluate it with :func:`genlab.evaluate.evaluate_run`.

    Raises:
        ConfigError: a bad method, or one the model cannot take (int8 without Linear layers).
        StoreError: the run is unknown, unfinished, or already int8, fp16 or an ensemble.
    """
    spec = parse_method(method)  # a bad method fails before anything is loaded
    parent = store.get(run_id)
    if parent.status != "finished":
        raise StoreError(f"run {parent.id} is {parent.status}, not finished; compress it once "
                         "it has finished")
    link = lineage_of(store, parent.id)
    if link is not None and link.method in NOT_COMPRESSIBLE:
        raise StoreError(f"run {parent.id} was made by {link.spec} already; compress its "
                         f"parent {link.parents[0]} instead")
    start = time.perf_counter()
    model, cfg, data = load_run_model(store, parent.id)
    before = parameter_counts(model)
    if spec.method == "prune":
        details = prune_layers(model, spec.sparsity)
        save_options = {"packed": [f"{name}.weight" for name in details["layers"]]}
    else:
        details = convert(model, spec)
        save_options = {"dtype": torch.float16} if spec.method == "fp16" else {}
    model.eval()
    details["params_before"], details["params_after"] = before, parameter_counts(model)
    details["privacy_roots"] = trained_roots(store, parent)
    new_id = create_derived_run(store, parents=[parent], method=spec.method, spec=spec.text,
                                config=parent.config, details=details)
    try:
        write_derived_artifacts(store, new_id, parent.config, model, seed=cfg.train.seed,
                                metadata={"genlab_method": spec.text, "genlab_parent": parent.id},
                                **save_options)
        trained_privacy = parent.summary.get("privacy")  # the accountant's fields, if DP
        formal = dict(trained_privacy or {"epsilon": None, "delta": None, "accountant": None})
        extra = {"privacy": trained_privacy} if trained_privacy else {}
        summary = derived_summary(parent, model, data, **extra,
                                  compress_seconds=time.perf_counter() - start)
        finish_derived_run(store, new_id, summary=summary,
                           privacy={**formal, "post_processing": POST_PROCESSING})
    except BaseException as err:
        store.fail(new_id, f"{type(err).__name__}: {err}")
        raise
    return new_id
