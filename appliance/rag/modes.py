"""Which answer mode a question gets: the request's, else the setting's, and for ``auto`` the one
that suits the model's size.

Measured with the default 135M model (bench/answers.py), quoting the sources (``extractive``)
answers better than the model; a model of a billion parameters and more writes answers worth
checking against the sources (``grounded``). A model whose size is unknown (a remote server with no
``size`` setting) is taken to be large: grounded keeps to what the sources back either way, and
falls back to quoting them when the model's sentences do not pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

AnswerMode = Literal["abstractive", "extractive", "grounded"]
ModeSetting = Literal["auto", "abstractive", "extractive", "grounded"]
ANSWER_MODES: tuple[str, ...] = get_args(AnswerMode)
MODE_SETTINGS: tuple[str, ...] = get_args(ModeSetting)
AUTO_MIN_PARAMETERS = 1_000_000_000


def auto_mode(parameters: int | None, threshold: int = AUTO_MIN_PARAMETERS) -> AnswerMode:
    """``extractive`` below ``threshold`` parameters, ``grounded`` at or above it or unknown."""
    if parameters is not None and parameters < threshold:
        return "extractive"
    return "grounded"


def choose(
    requested: ModeSetting | None, setting: ModeSetting, model: str, auto: Mapping[str, AnswerMode]
) -> AnswerMode:
    """The mode of one question on ``model``: ``requested`` (the request's field or model-id
    suffix), else ``setting``; ``auto`` resolves to the model's entry in ``auto`` (grounded for a
    model not in it)."""
    mode = requested or setting
    if mode == "auto":
        return auto.get(model, "grounded")
    return mode


def split_mode(model_id: str) -> tuple[str, AnswerMode | None]:
    """``"<model or collection>:<mode>"`` -> (the id, the mode); any other id -> (it, None)."""
    base, sep, suffix = model_id.rpartition(":")
    if sep and base and suffix in ANSWER_MODES:
        return base, suffix  # type: ignore[return-value]
    return model_id, None
