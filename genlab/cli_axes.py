"""The CLI's privacy and interpretability commands: ``audit``, ``explain`` and ``budget``."""

from __future__ import annotations

import argparse

from genlab.cli_output import print_json, run_json
from genlab.errors import ConfigError
from genlab.runs import RunStore


def cmd_audit(args: argparse.Namespace) -> int:
    from genlab.evaluate import audit_run
    from genlab.progress import ProgressBar

    store = RunStore()
    run_id = store.get(args.run).id
    callbacks = [] if args.quiet else [ProgressBar(desc="reference model")]
    block = audit_run(store, run_id, reference=not args.no_reference, callbacks=callbacks)
    if args.json:
        print_json(run_json(store.get(run_id)))
        return 0
    eps = block.get("epsilon")
    print(f"{run_id}: formal ε = {'∞ (no DP)' if eps is None else f'{eps:.3g}'}")
    for name, a in block["attacks"].items():
        e = a["epsilon"]
        tpr01 = a["tpr_at_0_1pct_fpr"]
        print(
            f"  {name:<9} AUC {a['auc']:.3f}  TPR@1%FPR {a['tpr_at_1pct_fpr']:.3f}  "
            f"TPR@0.1%FPR {'n/a' if tpr01 is None else f'{tpr01:.3f}'}  "
            f"empirical ε ≥ {e['epsilon_lower_bound']:.3f}"
        )
    print(f"  dcr_ratio {block['dcr_ratio']:.3f} (below 1: samples sit closer to members)")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from genlab.checkpoint import load_run_model
    from genlab.interpret import example_inputs, explain, save_explanation_png
    from genlab.interpret.attribution import method_entry

    method_entry(args.method)  # an unknown method fails before the model is loaded
    if args.n < 1:
        raise ConfigError(f"--n must be at least 1 (got {args.n})")
    store = RunStore()
    run_id = store.get(args.run).id
    model, _, data = load_run_model(store, run_id)
    x = example_inputs(model, data, target=args.target, n=args.n, seed=args.seed)
    options = {"n_steps": args.steps} if args.method == "ig" else {}
    expl = explain(model, x, method=args.method, target=args.target, seed=args.seed, **options)
    path = save_explanation_png(expl, args.out)
    if args.json:
        print_json(
            {
                "run_id": run_id,
                "out": str(path),
                "method": expl.method,
                "target": expl.target,
                "n": len(expl.inputs),
                "space": expl.space,
            }
        )
    else:
        print(f"{run_id}: {expl.method} on {expl.description}; {len(expl.inputs)} images -> {path}")
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    from genlab.privacy.accounting import plan_budget

    plan = plan_budget(
        n=args.n,
        batch_size=args.batch_size,
        epochs=args.epochs,
        delta=args.delta,
        sigma=args.sigma,
        epsilon=args.epsilon,
        accountant=args.accountant,
        compare=args.compare,
    )
    if args.json:
        print_json(plan)
        return 0
    if plan.get("note"):
        print(f"note: {plan['note']}")
    print(
        f"N={plan['n']} batch={plan['batch_size']} epochs={plan['epochs']}: "
        f"q={plan['sample_rate']:.4g}, {plan['steps']} steps, σ={plan['noise_multiplier']:.4g} "
        f"gives ε={plan['epsilon']:.4g} at δ={plan['delta']:g} ({plan['accountant']})"
    )
    if plan.get("fallback_reason"):
        print(f"note: {plan['fallback_reason']}")
    for name, eps in (plan.get("comparison") or {}).items():
        print(f"  {name}: ε={'could not be computed' if eps is None else f'{eps:.4g}'}")
    return 0
