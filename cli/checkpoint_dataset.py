"""A checkpoint with the dataset it records, for the commands that measure it on that data (``gtc prune``,
``gtc sparsify``, ``gtc export --quantize``): ``--data`` names one for a checkpoint that records none,
``--data-root`` says where the files of a file-based one are now."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import check_data_option, dir_value

RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Where the checkpoint's dataset files are (file-based datasets).",
        parser=dir_value,
        metavar="<dir>",
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option(help="The dataset of a checkpoint that records none (imported from PyG), e.g. cluster or tu:NCI1."),
]


def load_with_dataset(
    checkpoint: Path, data_root: Path | None, data: str | None = None
) -> tuple[Any, dict[str, Any], Any]:
    """The checkpoint, its meta and its dataset, split as when it was trained and, for a TEDDY
    checkpoint, sparsified as its inputs were: pruning it on the original graphs would train and
    measure it on inputs it is never served.

    ``data`` (``--data``) names the dataset of a checkpoint that records none (one imported from
    PyG); it is then recorded in the meta, so the compressed checkpoint records it."""
    from gtcompress.checkpoint import load_checkpoint
    from gtcompress.checkpoint_data import (
        checkpoint_data_spec,
        input_mismatch,
        load_for_model,
        same_dataset,
        sparsified,
        teddy_transform,
    )
    from gtcompress.data import check_data_root
    from gtcompress.errors import ConfigError, GTCompressError

    check_data_option(data)
    model, meta = load_checkpoint(checkpoint)
    recorded = (meta.get("dataset") or {}).get("name")
    if data is not None and recorded and not same_dataset(recorded, data):
        raise ConfigError(
            f"--data {data!r}: {checkpoint} was trained on {recorded!r}, and it is compressed on the dataset and "
            "split it was trained on; leave --data out"
        )
    spec = checkpoint_data_spec(meta, data, root=str(data_root) if data_root is not None else None)
    if spec is None:
        raise GTCompressError(
            f"{checkpoint}: no dataset recorded in the checkpoint (one imported from PyG): pass --data NAME"
        )
    check_data_root(spec.name, data_root, "--data-root")
    ds = load_for_model(spec, model.config, f"--data {data}", checkpoint)
    if not recorded:
        problem = input_mismatch(model.config, ds.info)
        if problem is not None:
            raise ConfigError(f"--data {data} does not fit the model of {checkpoint}: {problem}")
        meta = {**meta, "dataset": {**spec.to_dict(), "info": ds.info.to_dict()}}
    elif data_root is not None:  # where the files are now: the compressed checkpoint records it, not the stale root
        meta = {**meta, "dataset": {**meta["dataset"], "root": spec.to_dict()["root"]}}
    return model, meta, sparsified(ds, teddy_transform(meta, model.config))
