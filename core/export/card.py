"""A model card (Mitchell et al. 2019) for an exported run: what the file expects and returns, how the
model was trained (every config field), on what data and split, how well it does with how much
certainty, what else is known of it (calibration, robustness, not-a-digit detection) and its known
limits. One dict, written as Markdown for people and as JSON for programs.
"""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from core.analysis import calibration, robustness
from core.analysis.label_issues import confirmed_indices
from core.config import TrainConfig
from core.fsio import strict_json
from core.notadigit.detector import ACCEPT, read_kept
from core.store.folder import DATASET, REFERENCE, read_json, run_dir
from core.store.runs import Run, load_predictions

REPO = Path(__file__).resolve().parents[2]
INPUT_TEXT = ("float32 tensor `pixels` of shape (N, 1, 28, 28), any N: MNIST-style images, white ink on black, "
              "pixel values in [0, 1] (the raw 0-255 pixels divided by 255), digit centred by its centre of mass "
              "in a 20x20 box as MNIST's are; the graph normalises them itself")
OUTPUT_TEXT = "float32 tensor `probabilities` of shape (N, 10): the probability of each digit 0-9; each row sums to 1"


def commit() -> str | None:
    """The commit of the lab's code that exported the file, if it runs from a git checkout."""
    try:
        found = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None if found.returncode == 0 else None


def build(run: Run, root, fmt: str, file_name: str, opset: int | None, verified: dict | None) -> dict:
    config = {k: v for k, v in run.config.items() if k != "format"}
    if config.get("kind") != "ensemble":  # every field, those the saved file leaves to their defaults too
        config = {**TrainConfig.from_dict(run.config).to_dict(), **config}
    metrics = run.metrics
    counts, ci = run.test_counts, run.test_ci
    performance = {"test_accuracy": run.test_acc, "test_images": counts[1] if counts else None,
                   "test_accuracy_ci95": list(ci) if ci else None, "interval": "Wilson score, 95%",
                   "validation_accuracy": run.val_acc}
    kept = calibration.cached(run.run_id, root)
    report = robustness.cached(run.run_id, root)
    detector, _ = read_kept(run.run_id, root)
    marker = read_json(run_dir(run.run_id, root) / REFERENCE)
    preds = load_predictions(run.run_id, root)
    wrong_confirmed = [int(i) for i in confirmed_indices() if preds["predicted"][i] == preds["labels"][i]]
    return {
        "model": {"run_id": run.run_id, "name": run.name, "architecture": run.arch,
                  "kind": config.get("kind", "trained run"), "parameters": _whole(metrics.get("parameters")),
                  "members": config.get("member_archs")},
        "file": {"name": file_name, "format": fmt, **({"opset": opset} if opset else {}),
                 "input": INPUT_TEXT, "output": OUTPUT_TEXT},
        "training": {"config": config, "started": run.status_info.get("created"), "finished": metrics.get("finished"),
                     "device": metrics.get("device"), "seconds": metrics.get("seconds"), "torch": metrics.get("torch"),
                     "kept_weights": metrics.get("kept_weights"),
                     "trained_at_commit": (marker or {}).get("trained_at_commit")},
        "data": read_json(run_dir(run.run_id, root) / DATASET) or {},
        "performance": performance,
        "calibration": kept.to_json() if kept else None,
        "robustness": _robustness(report),
        "not_a_digit": _detector(detector),
        "limits": [
            "Trained and tested on MNIST only: centred, size-normalised handwritten digits, white on black.",
            "15 of MNIST's test labels are confirmed wrong by human reviewers (Northcutt et al. 2021); the test "
            f"accuracy counts them as the dataset labels them (this model agrees with the given label on "
            f"{len(wrong_confirmed)} of them).",
            "Anything that is not a digit (a letter, a shape, a scribble) still gets a digit with a probability: "
            "the graph has no reject option" + (" (the lab's not-a-digit detector is not part of the file)"
                                                  if detector else "") + ".",
            "Not robust to small adversarial changes unless a robustness figure above says otherwise.",
        ],
        "verified": verified,
        "exported_by_commit": commit(),
    }


def _whole(value) -> int | None:
    """A count as metrics.json should hold it (a whole number >= 0), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _figure(value, spec: str) -> str:
    """`value` formatted by `spec`, or "unknown" where a run file left it out or holds something else."""
    return format(value, spec) if _is_number(value) else "unknown"


def _percent(value) -> str:
    return f"{value:.2f}%" if _is_number(value) else "unknown"


def _text(value) -> str:
    return "unknown" if value is None or value == "" else str(value)


def _robustness(report: dict | None) -> dict | None:
    if not report:
        return None
    attacks = [f for f in report["attacks"] if isinstance(f, dict) and _is_number(f.get("epsilon"))]
    final = [f for f in attacks if f.get("attack") == "pgd" and f["epsilon"] == max(g["epsilon"] for g in attacks)]
    checks = report.get("checks")
    return {"mean_corruption_error": report.get("mean_corruption_error"),
            "pgd_at_largest_eps": final[0] if final else None,
            "checks_passed": checks.get("passed") if isinstance(checks, dict) else None,
            "measured": report.get("created")}


def _detector(detector) -> dict | None:
    if detector is None:
        return None
    held = (detector.evaluation.get("detectors", {}).get(detector.name) or {}).get("held-out")
    return {"detector": detector.name, "threshold": detector.threshold, "accepts": ACCEPT,
            "fitted_on": detector.fitted_on, "non_digits_flagged": held and held.get("flagged"),
            "auroc": held and held.get("auroc")}


def as_json(card: dict) -> str:
    return strict_json(card, indent=2) + "\n"


def markdown(card: dict) -> str:
    m, f, t, p = card["model"], card["file"], card["training"], card["performance"]
    ci = p["test_accuracy_ci95"]
    lines = [f"# Model card: {m['name']}", "",
             f"A handwritten-digit classifier exported from MNIST Lab run `{m['run_id']}` "
             f"({m['architecture']}, " + (f"{m['parameters']:,} parameters" if _is_number(m["parameters"])
                                          else "number of parameters not recorded") + ").", "",
             "## The file", "",
             f"- `{f['name']}`: {f['format']}" + (f", opset {f['opset']}" if "opset" in f else ""),
             f"- Input: {f['input']}.", f"- Output: {f['output']}."]
    if card["verified"]:
        v = card["verified"]
        lines.append(f"- Verified in {v['runtime']}: on MNIST's {v['images']:,} test images it gives the run's saved "
                     f"digit for {v['digits_as_saved']:,}; probabilities within {v['max_probability_difference']:.1e} "
                     "of the lab's own PyTorch path.")
    lines += ["", "## Performance", "",
              f"- Test accuracy: {_percent(p['test_accuracy'])}" + (
                  f" (95% interval {ci[0]:.2f}-{ci[1]:.2f}%, {p['interval']}, {p['test_images']:,} images)"
                  if ci else ""),
              f"- Validation accuracy: {_percent(p['validation_accuracy'])}"]
    if card["calibration"]:
        c = card["calibration"]
        lines.append(f"- Calibration: ECE {c['ece']:.4f}; temperature {c['temperature']:.3f} (fitted on "
                     f"{_figure(c['fitted_on'].get('images'), ',')} validation images) gives ECE {c['ece_calibrated']:.4f}. "
                     "The exported graph returns the uncalibrated probabilities.")
    if card["robustness"]:
        r = card["robustness"]
        final = r["pgd_at_largest_eps"] or {}
        lines.append(f"- Robustness: mean corruption error {_percent(r['mean_corruption_error'])}; L-inf PGD-"
                     f"{final.get('steps')}x{final.get('restarts')} at eps {final.get('epsilon')}: "
                     f"{_percent(final.get('accuracy'))} (checks passed: {r['checks_passed']}).")
    if card["not_a_digit"]:
        d = card["not_a_digit"]
        lines.append(f"- Not a digit (in the lab only): detector {d['detector']} flags "
                     + (f"{d['non_digits_flagged']:.0%} of the lab's non-digit set" if _is_number(d["non_digits_flagged"])
                        else "non-digits") + f" while accepting {d['accepts']:.0%} of validation digits.")
    lines += ["", "## Training", "",
              f"- Started {_text(t['started'])}, finished {_text(t['finished'])} on {_text(t['device'])} "
              f"({_text(t['seconds'])} s, torch {_text(t['torch'])}); kept weights: {_text(t['kept_weights'])}.",
              f"- Data: {card['data'].get('source', '?')}, {card['data'].get('train', '?')} training and "
              f"{card['data'].get('validation', '?')} validation images, tested on {card['data'].get('test', '?')}.",
              f"- Trained at commit: {t['trained_at_commit'] or 'not recorded'}; exported at commit "
              f"{card['exported_by_commit'] or 'unknown'}.", "", "Every config field:", "", "```json",
              json.dumps(t["config"], indent=2), "```", "", "## Known limits", ""]
    lines += [f"- {limit}" for limit in card["limits"]]
    return "\n".join(lines) + "\n"
