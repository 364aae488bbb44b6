"""The stages that write checkpoints: train (or take) the dense models, then the dense-ft control,
TEDDY sparsification and GTSP pruning (plus the random baseline) of each.

Every stage is a thin wrapper over the library call that does the work (:func:`~gtcompress.train.recipe.fit`,
:func:`~gtcompress.compress.finetune.finetune_dense`, :func:`~gtcompress.compress.teddy.sparsify_model`,
:func:`~gtcompress.compress.prune.prune_model` / :func:`~gtcompress.compress.prune.random_prune`): it
builds the library config from the pipeline's section, runs the call as a cached stage and saves
the checkpoint under ``models/``. Library modules are imported inside the stages, which need torch,
so that building a config does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gtcompress.pipeline.cache import stage_key
from gtcompress.pipeline.context import ModelArtifact, RunContext

__all__ = ["compress_stages", "dense_models"]


def dense_models(ctx: RunContext) -> list[ModelArtifact]:
    """``<arch>-dense`` for every ``train.archs``, trained; or the one ``train.checkpoint`` given."""
    tcfg = ctx.config["train"]
    if tcfg["checkpoint"]:
        return [_given(ctx, Path(tcfg["checkpoint"]))]
    return [_train(ctx, arch) for arch in tcfg["archs"]]


def _given(ctx: RunContext, src: Path) -> ModelArtifact:
    """The checkpoint ``train.checkpoint`` names, copied in as the run's dense model.

    It must be measured on the dataset and split it was trained on, which the ``data`` section
    must name (``gtc pipeline`` fills it from the checkpoint): another seed's or size's test graphs
    may be its training graphs, a leaked metric, and another dataset's inputs it cannot read. A
    mismatch is refused before any stage runs, as is a TEDDY model (every stage here feeds the
    original graphs, not the sparsified ones it takes)."""
    from gtcompress.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint

    _check_given(ctx, src, read_checkpoint_meta(src))
    ckpt = ctx.out / "models" / "given-dense"
    # by content: a directory's mtime stays when its files are overwritten in place (or copied with cp -a)
    key = stage_key("given", str(src.resolve()), _content_digest(src), ctx.data_key)

    def given() -> dict[str, Any]:
        from gtcompress.checkpoint_data import input_mismatch
        from gtcompress.errors import ConfigError, DataMismatchError

        model, meta = load_checkpoint(src)
        unfit = f"data.name {ctx.config['data']['name']!r} does not fit train.checkpoint {src}"
        try:
            problem = input_mismatch(model.config, ctx.dataset_for(model.config).info)
        except DataMismatchError as e:  # refused by the loader (a TU model of neither layout's width)
            raise ConfigError(f"{unfit}: {e}") from None
        if problem is not None:  # a checkpoint that records no dataset: the configured one must fit
            raise ConfigError(f"{unfit}: {problem}")
        save_checkpoint(ckpt, model, meta)
        return {"arch": model.config.arch}

    arch = ctx.stage("train:given", key, [ckpt], given)["arch"]
    # named by the architecture it turned out to be; the checkpoint keeps its first name
    return ModelArtifact(f"{arch}-dense", ckpt, key, arch, "dense", 1.0)


def _content_digest(src: Path) -> str:
    """SHA-256 over a checkpoint's files (``config.json`` and the weights), each by name and hash."""
    from gtcompress.checkpoint import _sha256

    files = sorted(p for p in src.iterdir() if p.is_file()) if src.is_dir() else []
    return stage_key(*((f.name, _sha256(f)) for f in files))


def _check_given(ctx: RunContext, src: Path, meta: dict[str, Any]) -> None:
    """Refuse a given checkpoint whose recorded dataset the ``data`` section contradicts (name,
    size or seed; ``root`` only says where the files are), or whose inputs are TEDDY-sparsified."""
    from gtcompress.checkpoint_data import data_spec_conflicts, teddy_ratio
    from gtcompress.errors import ConfigError

    conflicts = data_spec_conflicts(meta, ctx.data_spec())
    if conflicts:
        key, was, now = conflicts[0]
        raise ConfigError(
            f"data.{key} {now!r} conflicts with the dataset of train.checkpoint {src} (config.json dataset.{key} "
            f"{was!r}); set data to the dataset and split the checkpoint was trained on"
        )
    if teddy_ratio(meta) > 0:
        raise ConfigError(
            f"train.checkpoint {src}: a TEDDY-sparsified model (config.json teddy); the pipeline starts from a dense "
            "checkpoint, give the one it was made from"
        )


def _train(ctx: RunContext, arch: str) -> ModelArtifact:
    tcfg = ctx.config["train"]
    ckpt = ctx.out / "models" / f"{arch}-dense"
    key = stage_key(ctx.data_key, arch, tcfg)

    def train_one() -> dict[str, Any]:
        from gtcompress.checkpoint import save_checkpoint
        from gtcompress.train.loop import TrainConfig
        from gtcompress.train.recipe import default_pe, fit

        overrides = {
            "hidden": tcfg["hidden"],
            "num_layers": tcfg["layers"],
            "heads": tcfg["heads"],
            "readout": tcfg["readout"],
            "pe": default_pe(ctx.config["data"]["name"]),
        }
        tc = TrainConfig(
            epochs=tcfg["epochs"],
            batch_size=tcfg["batch_size"],
            lr=tcfg["lr"],
            seed=tcfg["seed"],
            warmup_epochs=min(2, tcfg["epochs"]),
        )
        res = fit(ctx.data_spec(), arch, overrides, tc, dataset=ctx.dataset(overrides["pe"]))
        save_checkpoint(ckpt, res.model, res.meta)
        return {"val": res.result.val_metric, "test": res.result.test_metric}

    ctx.stage(f"train:{arch}", key, [ckpt], train_one)
    return ModelArtifact(f"{arch}-dense", ckpt, key, arch, "dense", 1.0)


def compress_stages(ctx: RunContext, parent: ModelArtifact) -> tuple[list[ModelArtifact], list[str]]:
    """Everything made from one dense model, in report order: its dense-ft control, TEDDY, GTSP at
    each budget from the largest (one out of reach skips it and every smaller one, with a note,
    the second list) and the random baseline at the smallest budget GTSP reached."""
    from gtcompress.compress.budget import BudgetError

    made: list[ModelArtifact] = []
    skipped: list[str] = []
    if ctx.config["control"]["dense_ft"]:
        made.append(_dense_ft(ctx, parent))
    if ctx.config["sparsify"]["enabled"]:
        made.append(_sparsify(ctx, parent))
    pcfg = ctx.config["prune"]
    done: list[float] = []
    for b in sorted(pcfg["budgets"], reverse=True):
        try:
            made.append(_prune(ctx, parent, b, "gtsp"))
        except BudgetError as e:  # out of reach for this architecture: so is every smaller budget
            skipped.append(f"{parent.arch} at {b:g} of the FLOPs: {e}")
            ctx.log(f"[yellow]skipped {parent.arch}-gtsp-{b:g}: {e}[/]")
            break
        done.append(b)
    if pcfg["random_baseline"] and done:
        made.append(_prune(ctx, parent, min(done), "random"))
    return made, skipped


def _dense_ft(ctx: RunContext, parent: ModelArtifact) -> ModelArtifact:
    """The dense-ft control (:mod:`gtcompress.compress.finetune`): the dense model trained for the
    epochs a pruned model gets after it (mask training + fine-tuning), with the same distillation."""
    pcfg, batch_size = ctx.config["prune"], ctx.config["train"]["batch_size"]
    ckpt = ctx.out / "models" / f"{parent.arch}-dense-ft"
    epochs = pcfg["epochs"] + pcfg["finetune_epochs"]
    seed = ctx.config["train"]["seed"] + 1  # finetune_dense's own default (1) at the default train.seed (0)
    key = stage_key(parent.key, "dense-ft", epochs, pcfg["lr"], batch_size, seed)

    def finetune() -> dict[str, Any]:
        from gtcompress.checkpoint import load_checkpoint, save_checkpoint
        from gtcompress.compress.finetune import finetune_dense

        model, meta = load_checkpoint(parent.ckpt)
        res = finetune_dense(
            model, ctx.dataset_for(model.config), epochs, lr=pcfg["lr"], batch_size=batch_size, seed=seed
        )
        rep = res.report
        # its own metrics, not the parent's copied with the meta (gtc info shows these)
        metrics = {
            "metric": rep["metric"],
            "val": rep["val"],
            "test": rep["test"],
            "params": sum(p.numel() for p in res.model.parameters()),
        }
        save_checkpoint(ckpt, res.model, {**meta, "metrics": metrics, "compression": rep})
        return {"epochs": res.report["epochs_run"]}

    ctx.stage(f"control:{parent.arch}:dense-ft", key, [ckpt], finetune)
    return ModelArtifact(f"{parent.arch}-dense-ft", ckpt, key, parent.arch, "dense-ft", 1.0)


def _sparsify(ctx: RunContext, parent: ModelArtifact) -> ModelArtifact:
    """TEDDY: edges removed per graph (a deployment applies the same to every request), then
    distillation; the checkpoint records the settings its inputs need."""
    scfg = ctx.config["sparsify"]
    ckpt = ctx.out / "models" / f"{parent.arch}-teddy"
    seed, batch_size = ctx.config["train"]["seed"], ctx.config["train"]["batch_size"]
    key = stage_key(parent.key, scfg, seed, batch_size)

    def teddy() -> dict[str, Any]:
        from gtcompress.checkpoint import load_checkpoint, save_checkpoint
        from gtcompress.compress.report import checkpoint_metrics
        from gtcompress.compress.teddy import SparsifyConfig, sparsify_model

        model, meta = load_checkpoint(parent.ckpt)
        sc = SparsifyConfig(edges=scfg["edges"], epochs=scfg["epochs"], batch_size=batch_size, seed=seed)
        res = sparsify_model(model, ctx.dataset_for(model.config), sc)
        save_checkpoint(
            ckpt,
            res.model,
            # its own metrics, not the dense parent's; the transform with its PE recomputation too
            {
                **meta,
                "metrics": checkpoint_metrics(res.report),
                "compression": res.report,
                "teddy": res.transform.to_dict(),
            },
        )
        return {"flops_kept": res.report["cost"]["flops_ratio"]}

    ctx.stage(f"sparsify:{parent.arch}", key, [ckpt], teddy)
    teddy_inputs = {"edges": scfg["edges"], "per_graph": True}
    return ModelArtifact(f"{parent.arch}-teddy", ckpt, key, parent.arch, "teddy", None, teddy_inputs)


def _prune(ctx: RunContext, parent: ModelArtifact, b: float, method: str) -> ModelArtifact:
    """GTSP (or the random baseline) at ``b`` of the FLOPs; raises ``BudgetError`` when ``b`` is out
    of the architecture's reach, before any training."""
    pcfg = ctx.config["prune"]
    name = f"{parent.arch}-{method}-{b}"
    ckpt = ctx.out / "models" / name
    seed, batch_size = ctx.config["train"]["seed"], ctx.config["train"]["batch_size"]
    key = stage_key(parent.key, pcfg, b, method, seed, batch_size)

    def prune() -> dict[str, Any]:
        from gtcompress.checkpoint import load_checkpoint, save_checkpoint
        from gtcompress.compress.prune import PruneConfig, prune_model, random_prune
        from gtcompress.compress.report import checkpoint_metrics

        model, meta = load_checkpoint(parent.ckpt)
        pc = PruneConfig(
            target_flops=b,
            axes=pcfg["axes"],
            # a ratio given is the tokens axis's, as gtc prune --token-keep: auto then prunes tokens too
            keep={} if pcfg["token_keep"] is None else {"tokens": pcfg["token_keep"]},
            epochs=pcfg["epochs"],
            finetune_epochs=pcfg["finetune_epochs"],
            lr=pcfg["lr"],
            # the run's batch size, which the dense-ft control trains with too: the report's deltas
            # against it compare models trained with one recipe
            batch_size=batch_size,
            seed=seed,
        )
        res = (prune_model if method == "gtsp" else random_prune)(model, ctx.dataset_for(model.config), pc)
        save_checkpoint(ckpt, res.model, {**meta, "metrics": checkpoint_metrics(res.report), "compression": res.report})
        return {"flops_kept": res.report["cost"]["flops_ratio"]}

    ctx.stage(f"prune:{parent.arch}:{method}:{b}", key, [ckpt], prune)
    return ModelArtifact(name, ckpt, key, parent.arch, method, b)
