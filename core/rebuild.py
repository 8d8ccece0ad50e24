"""Rebuilding a run's model from its config.json: one architecture of the registry
(core.models), or an ensemble of finished runs (core.analysis.ensemble) whose `member_archs` lists its
members' architectures, nested for a member that is itself an ensemble. core.store.runs.load_model
builds the model here and loads the weights into it."""
from __future__ import annotations

from core.errors import LabError
from core.layers import Ensemble
from core.models import create_model


class RebuildError(LabError):
    """A config.json that cannot be turned into a model; the message says why."""


def build_model(config: dict):
    """An untrained model shaped as `config` describes (for load_state_dict)."""
    if config.get("kind") == "ensemble":
        check_member_archs(config.get("member_archs"))
        return _build(config["member_archs"])
    return create_model(config["arch"])


MAX_NESTING = 8  # ensembles of ensembles, this many levels deep at most


def check_member_archs(member_archs, depth: int = 1) -> None:
    """RebuildError unless `member_archs` is a non-empty list of architecture names and such lists,
    nested at most MAX_NESTING deep (a deeper one is refused before Python's recursion limit)."""
    if not isinstance(member_archs, list) or not member_archs:
        raise RebuildError("an ensemble's config lists no member_archs")
    if depth > MAX_NESTING:
        raise RebuildError(f"an ensemble's config nests member_archs more than {MAX_NESTING} deep: "
                           "it was not written by MNIST Lab")
    for arch in member_archs:
        if isinstance(arch, list):
            check_member_archs(arch, depth + 1)
        elif not isinstance(arch, str):
            raise RebuildError(f"an ensemble's config lists {arch!r:.40} among its member_archs, not an "
                               "architecture name")


def _build(member_archs: list):
    return Ensemble([_build(a) if isinstance(a, list) else create_model(a) for a in member_archs])


def saved_members(state: dict) -> int:
    """How many members an ensemble's saved weights hold (keys members.<i>.…)."""
    return len({key.split(".")[1] for key in state if key.startswith("members.") and key.count(".") >= 2})
