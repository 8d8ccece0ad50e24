"""The training knobs as a newcomer reads them: one plain sentence per configuration field (the
Train form's and the Search form's help texts begin with it), and the +/- step of a number field."""
from __future__ import annotations

import math

# One plain sentence per field, shown before the table's technical help (a test checks none is missing).
PLAIN = {
    "epochs": "How many times training goes through all the training images. More is slower and usually better, "
              "up to a point.",
    "batch_size": "How many images the model looks at before each small correction of its weights.",
    "lr": "How big each correction is: too small learns slowly, too large overshoots and may never settle.",
    "optimizer": "The rule that turns the errors into corrections: plain SGD, or Adam/AdamW, which adapt the step "
                 "for each weight.",
    "momentum": "SGD only: how much of the previous corrections carries on into the next, which smooths the path.",
    "beta1": "Adam only: how long its running average of the corrections remembers (closer to 1 is longer).",
    "beta2": "Adam only: how long its running average of the corrections' sizes remembers.",
    "nesterov": "SGD with momentum: look one step ahead before correcting, a slightly better momentum.",
    "weight_decay": "Pulls every weight a little towards zero at each step, which keeps the model simple.",
    "schedule": "How the learning rate changes during training: constant, dropping in steps, a smooth cosine "
                "descent, or up then down (onecycle).",
    "step_size": "With the step schedule: how many epochs pass between two drops of the learning rate.",
    "gamma": "With the step schedule: what the learning rate is multiplied by at each drop (0.1: a tenth).",
    "warmup": "With onecycle: the share of training spent raising the learning rate to its peak.",
    "start_factor": "With onecycle: where the learning rate starts, as a share of its peak.",
    "final_factor": "With onecycle: where the learning rate ends, as a share of its peak.",
    "label_smoothing": "Asks the model to be a little less than 100% sure of the right digit, which often makes "
                       "its confidence more honest.",
    "augment": "Shows each training image slightly rotated or shifted each time, so the model learns digits "
               "rather than exact pixels.",
    "aug_degrees": "With augmentation: the largest rotation, in degrees either way.",
    "aug_shift": "With affine augmentation: the largest shift, in pixels either way.",
    "aug_zoom": "With affine augmentation: the largest zoom in or out (0.1: up to 10%).",
    "ema": "Keeps a slowly moving average of the weights and tests that average, which is often a little better.",
    "ema_decay": "With the average: how slowly it moves (closer to 1 is slower).",
    "adv_eps": "Trains on images a little attack has changed, to make the model harder to fool: how far each "
               "pixel may move (0.1: a tenth of its range; 0 is off).",
    "adv_steps": "With adversarial training: how many steps each attack takes (1 is quick, more is stronger).",
    "adv_step": "With adversarial training: the size of each attack step, as a multiple of the radius above.",
    "adv_warmup": "With adversarial training: the share of training over which the attacks grow to full strength.",
    "oe_weight": "Teaches the model to be unsure on pictures that are no digit (0 is off); larger weighs that "
                 "lesson more.",
    "seed": "The number that fixes every random choice: the same seed and settings train the same model again.",
    "device": "Where to train: the CPU, a CUDA GPU, or auto (the GPU when there is one).",
    "val_size": "Training images kept aside to check the model after each epoch; never trained on.",
    "train_limit": "Train on only this many images, for a quick first look (0 uses all 55,000).",
    "bf16": "Computes in a shorter number format on a GPU: faster, about as accurate.",
    "channels_last": "A memory layout that speeds up convolutions on some machines.",
    "compile": "Compiles the model for the GPU first: slower to start, faster to train.",
    "name": "A name to find the run by in every list; empty gives it its id.",
}


def float_step(value: float) -> float:
    """The +/- step of a float field: one unit of its leading digit (0.9 -> 0.1, 5e-4 -> 1e-4),
    of the distance to 1 for a share close to 1 (0.999 -> 0.001)."""
    size = min(value, 1 - value) if 0 < value < 1 else abs(value)
    return 10.0 ** math.floor(math.log10(size)) if size > 0 else 0.01
