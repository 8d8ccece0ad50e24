"""The commands that report on finished runs (core.cli parses their options): compare two runs,
calibrate one, combine several as an ensemble, rank label issues, map the embedding, look inside
one model layer by layer. Each returns
the exit status; a LabError is printed by core.cli as one line."""
from __future__ import annotations

import sys

import numpy as np

from core.analysis import inside, label_issues, robustness
from core.analysis.calibration import calibrate
from core.analysis.compare import compare
from core.analysis.embedding import METHODS, embedding
from core.analysis.ensemble import create_ensemble
from core.config import ConfigError
from core.data.images import normalize_uint8, preprocess
from core.data.mnist import load_mnist
from core.export.graph import export
from core.fsio import strict_json
from core.notadigit import detector, evaluation


def cmd_compare(args) -> int:
    result = compare(args.run_a, args.run_b, args.checkpoints)
    if args.json:
        print(strict_json(result.to_json()))
        return 0
    t = result.table
    for figures in (result.a, result.b):
        low, high = figures.ci95
        print(f"{figures.name}: {figures.accuracy:.2f}% of {figures.n:,} test images (95% CI {low:.2f}-{high:.2f})")
    print(f"right by both {t.both:,}, by {result.a.name} alone {t.a_only:,}, by {result.b.name} alone "
          f"{t.b_only:,}, by neither {t.neither:,}")
    low, high = (100 * x for x in t.difference_ci)
    print(f"difference {100 * t.difference:+.2f} points (paired 95% CI {low:+.2f} to {high:+.2f}); "
          f"McNemar exact p = {t.p_value:.4g}")
    print(result.sentence())
    return 0


def cmd_ood(args) -> int:
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    just_fitted = None  # measured as it is, not fitted again (evaluation.evaluate)
    if args.refit or args.detector != detector.DEFAULT:
        fitted = just_fitted = detector.fit(args.run, args.checkpoints, args.data, name=args.detector, report=say)
    else:
        fitted = detector.detector_for(args.run, args.checkpoints, args.data, report=say)
    if args.evaluate:
        fitted.evaluation = evaluation.evaluate(args.run, args.checkpoints, args.data, report=say, fitted=just_fitted)
        detector.keep(fitted, args.checkpoints)
    summary = {"run_id": fitted.run_id, "detector": fitted.name, "threshold": fitted.threshold,
               "accept": detector.ACCEPT, "fitted_on": fitted.fitted_on, "evaluation": fitted.evaluation}
    if args.json:
        print(strict_json(summary))
        return 0
    print(f"not-a-digit detector of run {fitted.run_id}: {detector.DETECTORS[fitted.name]} ({fitted.name}), "
          f"threshold {fitted.threshold:.4g}: {detector.ACCEPT:.0%} of its "
          f"{fitted.fitted_on.get('validation_images', 0):,} validation digits score at or below it")
    figures = fitted.evaluation.get("detectors") if fitted.evaluation else None
    if figures:
        print(f"on the held-out half of the not-a-digit set ({fitted.evaluation['non_digits']} images in all) "
              f"against {fitted.evaluation['test_digits']:,} MNIST test digits:")
        print(f"{'detector':<12} {'AUROC':>6} {'FPR95':>6} {'non-digits flagged':>19} {'test digits flagged':>20} "
              f"{'pad digits flagged':>19}")
        for name, row in figures.items():
            held = row["held-out"]
            print(f"{name:<12} {held['auroc']:6.3f} {held['fpr95tpr']:6.3f} {held['flagged']:19.1%} "
                  f"{row['test_flagged']:20.1%} {row['pad_flagged']:19.1%}")
    return 0


def cmd_robustness(args) -> int:
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    found = robustness.robustness(args.run, args.checkpoints, args.data, refresh=args.refresh, report=say)
    entries = [{"corruption": r["corruption"], "accuracy": r["accuracy"], "images": r["images"]}
               for r in found["corruptions"]] + found["attacks"]
    if args.json:
        print(strict_json({"run_id": found["run_id"], "clean_accuracy": found["clean_accuracy"],
                           "mean_corruption_error": found["mean_corruption_error"], "entries": entries,
                           "checks": found["checks"], "seconds": found["seconds"]}))
        return 0
    print(f"run {found['run_id']}: {found['clean_accuracy']:.2f}% on the clean test set; mean corruption error "
          f"{found['mean_corruption_error']:.2f}%")
    for row in found["corruptions"]:
        print(f"  {row['corruption']:<14} {row['accuracy']:6.2f}%")
    for row in found["attacks"][1:]:
        how = "FGSM" if row["attack"] == "fgsm" else f"PGD-{row['steps']}x{row['restarts']}"
        print(f"  eps {row['epsilon']:.2f} {how:<11} {row['accuracy']:6.2f}%")
    checks = found["checks"]
    print(f"checks on {checks['images']} images: {'passed' if checks['passed'] else 'FAILED'} (unbounded attack "
          f"{checks['unbounded_accuracy']:.1f}%; eps 0.3: PGD-50x10 {checks['eps_0.3']['pgd_50x10']:.1f}%, "
          f"PGD-100x20 {checks['eps_0.3']['pgd_100x20']:.1f}%, margin loss {checks['eps_0.3']['pgd_50x10_margin_loss']:.1f}%)")
    return 0


def cmd_calibration(args) -> int:
    result = calibrate(args.run, args.checkpoints, args.data, refit=args.refit,
                       report=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(strict_json(result.to_json()))
        return 0
    print(f"ECE ({result.bins} bins) of the saved test probabilities: {result.ece:.4f}")
    print(f"temperature {result.temperature:.4f}, fitted on the {result.fitted_on['images']:,} images of the "
          f"run's {result.fitted_on['split']} split (NLL {result.nll_before:.4f} -> {result.nll_after:.4f})")
    print(f"ECE after temperature scaling: {result.ece_calibrated:.4f}")
    return 0


def cmd_ensemble(args) -> int:
    print(create_ensemble(args.runs, name=args.name, root=args.checkpoints))
    return 0


def cmd_label_issues(args) -> int:
    if args.top < 1:
        raise ConfigError(f"--top must be a whole number >= 1, got {args.top}")
    runs = args.runs
    if not runs:  # the default: runs a damaged one is left out of, with a warning naming it
        runs, skipped = label_issues.usable_default_runs(args.checkpoints)
        for warning in skipped:
            print(f"warning: {warning}", file=sys.stderr)
    ranking = label_issues.rank(runs, args.checkpoints)
    top = ranking.top(args.top)
    rows = [{"rank": n, "index": int(r.index), "label": int(r.label), "suggested": int(r.suggested),
             "score": float(r.score), "confirmed": bool(r.confirmed)} for n, r in enumerate(top.itertuples(), 1)]
    if args.json:
        print(strict_json(rows))
        return 0
    print(f"label issues from {len(runs)} run(s); {ranking.confirmed_in_top(args.top)} of the 15 "
          f"human-confirmed errors in the top {args.top}")
    print(f"{'rank':>4}  {'index':>5}  label  suggested  {'score':>8}")
    for row in rows:
        print(f"{row['rank']:>4}  {row['index']:>5}  {row['label']:>5}  {row['suggested']:>9}  {row['score']:8.5f}"
              + ("  confirmed label error" if row["confirmed"] else ""))
    return 0


def cmd_embedding(args) -> int:
    emb = embedding(args.run, args.method, args.checkpoints, args.data,
                    report=lambda line: print(line, file=sys.stderr, flush=True))
    if emb.cached:
        how = "read from the run folder"
    elif emb.not_kept:
        how = f"computed, but not kept in the run folder ({emb.not_kept}): it will be computed again next time"
    else:
        how = "computed and kept in the run folder"
    print(f"{METHODS[args.method]} map of {len(emb.xy):,} test images, {how}; took {emb.seconds:.1f} s "
          f"to compute; {int(emb.mistakes.sum())} mistakes")
    return 0


def cmd_export(args) -> int:
    done = export(args.run, args.checkpoints, args.format, args.output, verify=not args.no_verify, data_root=args.data,
                  report=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(strict_json({"path": str(done.path), "card_md": str(done.card_md), "card_json": str(done.card_json),
                           "format": done.format, "seconds": done.seconds, "bytes": done.bytes, "card": done.card}))
        return 0
    print(f"wrote {done.path} ({done.bytes:,} bytes, {done.format}, exported in {done.seconds:.1f} s) and its card "
          f"{done.card_md} (+ {done.card_json.name})")
    verified = done.card.get("verified")
    if verified and verified["digits_as_saved"] != verified["images"]:
        print(f"warning: the file's digit differs from the run's saved one for "
              f"{verified['images'] - verified['digits_as_saved']} test images (near-ties)", file=sys.stderr)
    if verified:
        print(f"verified in {verified['runtime']}: {verified['digits_as_saved']:,} of {verified['images']:,} test digits "
              f"as the run saved them; probabilities within {verified['max_probability_difference']:.1e} of PyTorch's")
    return 0




def cmd_inside(args) -> int:
    inside.check_metric(args.metric)
    if args.k < 1:
        raise inside.InsideError(f"--k must be a whole number >= 1, got {args.k}")
    if args.image is not None:
        _, image = preprocess(args.image)
        given = {"image": args.image}
    else:
        if not 0 <= args.test_index < inside.TEST_IMAGES:
            raise inside.InsideError(f"--test-index must be 0..{inside.TEST_IMAGES - 1}, got {args.test_index}")
        mnist = load_mnist(args.data)
        image = normalize_uint8(mnist.test_images[args.test_index:args.test_index + 1])
        given = {"test_index": args.test_index, "label": int(mnist.test_labels[args.test_index])}
    found = inside.look(args.run, image, args.member, args.metric, args.k, args.checkpoints, args.data,
                        report=lambda line: print(line, file=sys.stderr, flush=True))
    near = found.neighbours
    digit = int(np.argmax(found.probabilities))
    if args.json:
        print(strict_json({
            "run": found.run.run_id, "member": found.member, "input": given,
            "layers": [{"name": layer.name, "what": layer.what, "shape": list(layer.shape),
                        **({"role": layer.role} if layer.role else {})} for layer in found.layers],
            "probabilities": [round(float(p), 6) for p in found.probabilities], "predicted": digit,
            "metric": near.metric,
            "neighbours": [{"train_index": int(i), "label": int(label), "distance": round(float(d), 6)}
                           for i, label, d in zip(near.train_index, near.labels, near.distance)],
            "knn_vote": near.vote, "knn_votes": near.votes, "knn_agrees": near.vote == digit}))
        return 0
    print(f"{found.run.name} ({found.run.arch})" + (f", {found.member}" if found.member != "model" else "")
          + f": predicts {digit} ({found.probabilities[digit]:.1%})")
    width = max(len(layer.name) for layer in found.layers)
    for layer in found.layers:
        shape = "x".join(str(s) for s in layer.shape)
        print(f"  {layer.name:<{width}}  {shape:>10}  {layer.what}" + (f" [{layer.role}]" if layer.role else ""))
    print(f"nearest training digits ({near.metric} distance): "
          + ", ".join(f"{label} (#{i}, {d:.3f})" for i, label, d in zip(near.train_index, near.labels, near.distance)))
    agree = "agrees with the model" if near.vote == digit else f"the model says {digit}"
    print(f"their vote: {near.vote} ({near.votes} of {len(near.labels)}): {agree}")
    return 0


REPORTS = {"export": cmd_export, "compare": cmd_compare, "calibration": cmd_calibration, "ood": cmd_ood,
           "robustness": cmd_robustness, "ensemble": cmd_ensemble, "label-issues": cmd_label_issues,
           "embedding": cmd_embedding, "inside": cmd_inside}
