"""The command-line tools, ``launch.py --exp NAME --summary | --visualize | --gradcheck``,
given the experiment's model and a few of its test images (``launch.py`` loads them)."""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax

from cnnjax.analysis._trace import init_variables, seed_key
from cnnjax.analysis.gradcheck_model import check_model, format_by_layer
from cnnjax.analysis.summary import format_table, layer_rows
from cnnjax.analysis.visualize import write_pictures

__all__ = ["run_tools"]


def run_tools(
    model: nn.Module,
    images: jax.Array,
    labels: jax.Array,
    *,
    seed: int,
    summary: bool = False,
    visualize_dir: str | Path | None = None,
    gradcheck: bool = False,
) -> int:
    """Prints the layer table, writes the pictures, and/or runs the gradient check.

    Args:
      model: the experiment's model (unbound).
      images: ``(N, *spatial, C)`` preprocessed test images, ``N >= 2``: the first is the
        picture's input, the first two the gradient check's batch.
      labels: ``(N,)`` their classes.
      seed: initialises the parameters (no checkpoint is read).
      summary, visualize_dir, gradcheck: which tools to run, in this order;
        ``visualize_dir`` is where the pictures go.

    Returns:
      The exit status: 1 when the gradient check failed, else 0.
    """
    if summary:
        print(format_table(layer_rows(model, images[:1].shape)), flush=True)
    if visualize_dir is not None:
        variables = init_variables(model, seed_key(seed), images[:1])
        paths = write_pictures(model, variables, images[:1], visualize_dir)
        print(
            f"Wrote {', '.join(p.name for p in paths)} into {visualize_dir} (parameters "
            f"initialised from seed {seed}; no checkpoint is read).",
            flush=True,
        )
    if gradcheck:
        report = check_model(model, images[:2], labels[:2], seed=seed)
        print(format_by_layer(report), flush=True)
        return 0 if report.passed else 1
    return 0
