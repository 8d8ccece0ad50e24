"""A recipe: the default hyperparameters an architecture trains with (core.models registers each
architecture with one; core.config.TrainConfig has a field for each knob and fills it from here)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Recipe:
    """Default hyperparameters of an architecture (the recipe of the project it comes from).

    Every knob that changes training is here, so a run's config.json is its whole recipe;
    `TrainConfig` has one field for each, filled from here when not given.
    """
    optimizer: str = "sgd"          # sgd | adam | adamw
    lr: float = 0.01                # peak learning rate
    batch_size: int = 64
    epochs: int = 10
    momentum: float = 0.0           # SGD only
    beta1: float = 0.9              # Adam/AdamW: decay of the gradient's running mean
    beta2: float = 0.999            # Adam/AdamW: decay of the squared gradient's running mean
    nesterov: bool = False          # SGD only: Nesterov momentum instead of plain momentum
    weight_decay: float = 0.0
    schedule: str = "none"          # none | step | cosine | onecycle
    step_size: int = 5              # epochs between LR drops (schedule=step)
    gamma: float = 0.1              # LR factor at each drop (schedule=step)
    warmup: float = 0.25            # onecycle: share of all steps spent warming up
    start_factor: float = 0.04      # onecycle: LR at step 0, as a share of the peak (1/25)
    final_factor: float = 1e-4      # onecycle: LR at the last step, as a share of the peak
    label_smoothing: float = 0.0
    augment: str = "none"           # none | rotate | affine (done on the device, in batches)
    aug_degrees: float = 10.0       # rotate/affine: rotations drawn from +-this many degrees
    aug_shift: float = 2.0          # affine: shifts drawn from +-this many pixels
    aug_zoom: float = 0.1           # affine: zoom drawn from 1 +- this
    ema: bool = False               # keep and evaluate an exponential moving average of the weights
    ema_decay: float = 0.999        # EMA: decay per step (after a warm-up, see core.training.loop.EMA)
    adv_eps: float = 0.0            # adversarial training: L-inf radius in pixels on [0, 1] (0: off)
    adv_steps: int = 1              # attack steps per batch: 1 is FGSM with a random start, more is PGD
    adv_step: float = 1.25          # size of each attack step, as a multiple of adv_eps
    adv_warmup: float = 0.0         # share of the steps over which the radius grows from 0 to adv_eps
    oe_weight: float = 0.0          # outlier exposure: weight of the loss that makes the model unsure on non-digits (0: off)

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self, sep: str = ", ") -> str:
        """One line, e.g. 'sgd lr 0.01, batch 128, 15 epochs, momentum 0.9, step (x0.1 every 6)'."""
        epochs = f"{self.epochs} epoch" + ("" if self.epochs == 1 else "s")
        parts = [f"{self.optimizer} lr {self.lr:g}", f"batch {self.batch_size}", epochs]
        if self.momentum:
            parts.append(("nesterov " if self.nesterov else "") + f"momentum {self.momentum:g}")
        if self.optimizer != "sgd" and (self.beta1, self.beta2) != (0.9, 0.999):
            parts.append(f"betas ({self.beta1:g}, {self.beta2:g})")
        if self.weight_decay:
            parts.append(f"weight decay {self.weight_decay:g}")
        if self.schedule != "none":
            parts.append(self.schedule + (f" (x{self.gamma:g} every {self.step_size})" if self.schedule == "step" else ""))
        if self.augment != "none":
            parts.append(f"{self.augment} augmentation (+-{self.aug_degrees:g} deg"
                         + (f", +-{self.aug_shift:g} px, zoom +-{self.aug_zoom:g})" if self.augment == "affine" else ")"))
        if self.label_smoothing:
            parts.append(f"label smoothing {self.label_smoothing:g}")
        if self.ema:
            parts.append("EMA weights")
        if self.adv_eps:
            attack = "FGSM with a random start" if self.adv_steps == 1 else f"PGD-{self.adv_steps}"
            parts.append(f"adversarial training ({attack}, eps {self.adv_eps:g}, step {self.adv_step:g} eps"
                         + (f", eps warm-up over {self.adv_warmup:.0%} of the steps)" if self.adv_warmup else ")"))
        if self.oe_weight:
            parts.append(f"outlier exposure (weight {self.oe_weight:g})")
        return sep.join(parts)
