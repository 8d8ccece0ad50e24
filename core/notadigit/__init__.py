"""Not a digit: telling a drawing that is no digit from one that is, each concept in one module.

- nondigits: the lab's own held-out non-digit images (letters, shapes, scribbles, noise, ...) and
  digits redrawn as the Sketch pad draws them: what measures a detector;
- exposure: the exposure images (other fonts, generators and seeds): what detectors and
  outlier-exposure training learn "not a digit" from;
- detector: each run's detector (pytorch-ood's and the exposure one), fitted, kept in the run
  folder, read back and scored;
- head: the exposure detector's classifier of a run's features (small MLPs, kept as tensors);
- evaluation: how well each detector does on the non-digit set;
- outlier_exposure: the training loss that teaches a model to be unsure on exposure images.

Nothing is imported here: core.training imports outlier_exposure, and the detector imports
analysis and store code, so a package-level import would tie them in a cycle.
"""
