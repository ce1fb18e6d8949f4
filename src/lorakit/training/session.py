"""A training run's set-up, as the recipe uses it: the parts it trains with (model, data,
network, optimizer, plan, caches), where it starts (a resumed state or the beginning) and what
it writes (run.json, events, previews, TensorBoard, saved files).

Each is built once, before the loop, into a plain object the loop's parts take as one argument,
so the recipe in `recipe.py` reads as setup -> resume -> epochs -> finish.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import format_plan, make_plan
from ..runs import RunFolder, RunRecord
from ..utils import faults
from . import checkpointing as ckpt
from .config import TrainConfig, optimizer_args, to_toml
from .control import ControlPoller
from .events import EventLog
from .loss import LossOptions
from .metadata import new_session_id, training_metadata
from .noise import NoiseOptions, training_scheduler
from .optim import UpdateOptions, create_optimizer, create_scheduler, fuse_backward, is_schedule_free
from .options import NOT_IDENTITY
from .outputs import check_owner
from .plan import check_settings, estimate_memory_gb, format_steps, plan_steps
from .previews import PreviewOptions, Previews
from .saving import SaveOptions, Saver
from .setup import (
    Runtime,
    cache_images,
    caption_cache,
    load_base,
    merge_base_weights,
    release_vae,
    weight_dtype,
)
from .step import StepContext, TextOptions, ValidationOptions, untrained_loss, validation_loss
from .watch import CollapseGuard, Scalars


class Log:
    """Prints on the main process only (and through tqdm, so progress bars stay intact)."""

    def __init__(self, main: bool, quiet: bool = False):
        self.main, self.quiet = main, quiet

    def __call__(self, *lines: str) -> None:
        if self.main and not self.quiet:
            for line in lines:
                tqdm.write(line)


@dataclass
class Parts:
    """What a run trains with, made by `set_up`."""

    config: TrainConfig
    runtime: Runtime
    method: object  # methods.Method
    folder: RunFolder
    seed: int
    model: object
    group: object  # data.DatasetGroup
    validation: object | None
    network: torch.nn.Module
    plan: object  # plan.StepPlan
    optim: object  # optim.OptimizerInfo
    lr_scheduler: object
    ctx: StepContext
    checks: ValidationOptions
    update: UpdateOptions
    generator: torch.Generator
    identity: ckpt.RunIdentity
    guard: CollapseGuard = field(default_factory=CollapseGuard)

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]

    def validate(self) -> float | None:
        """The validation loss, with the network in eval mode and its own seeded noise, so
        training randomness is untouched."""
        self.network.eval()
        seed = self.config.validation_seed or self.seed
        value = validation_loss(self.ctx, self.validation, self.checks, seed, self.runtime)
        self.network.train()
        return value

    def untrained_loss(self) -> float | None:
        """The collapse guard's reference: the untrained loss of the first batch, in one batched
        U-Net call (step.untrained_loss), with the network in eval mode."""
        self.network.eval()
        value = untrained_loss(self.ctx, self.group, self.seed, self.runtime)
        self.network.train()
        return value


def set_up(
    config: TrainConfig, method, runtime: Runtime, folder: RunFolder, group, validation, facts, seed, log
):
    """Load the base model, make the network and optimizer, print the plan, fill the caches."""
    torch.manual_seed(seed)
    model = load_base(config, runtime.device, log)
    faults.point("setup")
    merge_base_weights(config, model, log)
    group, validation = method.prepare_data(model, group, validation, facts.resolution, seed, log)
    network = method.build(model, log).to(runtime.device)
    train_text = method.prepare(model, network)
    plan = plan_steps(
        group.steps_per_epoch, sum(len(i) for ds in group.datasets for i in ds.buckets.values()),
        config.train_batch_size, config.max_train_steps, config.max_train_epochs,
        config.gradient_accumulation_steps, runtime.num_processes,
    )  # fmt: skip
    optim = create_optimizer(
        config.optimizer_type, method.param_groups(network), config.learning_rate, optimizer_args(config)
    )
    update = UpdateOptions.from_config(config)
    if update.fused_backward_pass:
        fuse_backward(optim.optimizer, update.max_grad_norm)
    lr_scheduler = create_scheduler(optim, config, plan.total_steps)
    plan.warnings = check_settings(config, plan, model.family.is_xl, group.num_train_images, optim.notes)
    print_plan(config, log, model, group, method, network, plan, runtime)
    cache_images(config, model, group, validation, log)
    release_vae(config, model, method.name, log)
    text_cache = caption_cache(config, model, group, train_text, log)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    ctx = StepContext(
        model, training_scheduler(model, config.zero_terminal_snr), NoiseOptions.from_config(config),
        LossOptions.from_config(config), TextOptions.from_config(config), generator, train_text, text_cache,
        method.caption_transform(),
    )  # fmt: skip
    return Parts(
        config, runtime, method, folder, seed, model, group, validation, network, plan, optim, lr_scheduler,
        ctx, ValidationOptions.from_config(config), update, generator, run_identity(config, folder, seed, group),
    )  # fmt: skip


def start_position(parts: Parts, log) -> tuple[ckpt.Position, Path | None]:
    """Where the loop starts (a resumed state or step 0) and the state resumed from."""
    optim = parts.optim
    pos, resumed_from = resume(
        parts.config, parts.folder, parts.identity, parts.network, optim.optimizer, parts.lr_scheduler, parts.generator,
        parts.group, parts.guard, log,
    )  # fmt: skip
    if optim.relative_step is False and is_schedule_free(optim.name):
        optim.optimizer.train()
    return pos, resumed_from


@dataclass
class Outputs:
    """What the loop writes to: run.json, the event log, control requests, TensorBoard,
    previews and saved files."""

    record: RunRecord
    events: EventLog
    controls: ControlPoller
    tensorboard: Scalars
    previews: Previews
    saver: Saver
    started: float
    validation_steps: list[tuple[int, float]] = field(default_factory=list)


def open_outputs(
    parts: Parts, pos: ckpt.Position, resumed_from: Path | None, writes: bool, save_files: bool, log
):
    """Claim the folder (or continue in it), copy the config and start run.json and the events."""
    config, folder, plan, group, runtime = parts.config, parts.folder, parts.plan, parts.group, parts.runtime
    if writes:
        check_owner(folder, resuming=resumed_from is not None, overwrite=config.overwrite, log=log)
        folder.config_copy.write_text(to_toml(config))
    record = start_record(
        config, folder, parts.model, group, plan, resumed=resumed_from is not None, write=writes
    )
    events = EventLog(folder.events, enabled=writes)
    controls = ControlPoller(folder.root, enabled=writes and runtime.num_processes == 1)
    events.plan(
        plan.warnings, pos.step, total_steps=plan.total_steps, epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch, batch_size=config.train_batch_size,
        images=group.num_train_images, output_name=folder.name, resumed_from=resumed_from,
    )  # fmt: skip
    tensorboard = Scalars(
        Path(config.logging_dir or folder.logs) if config.log_with == "tensorboard" and writes else None
    )
    previews = Previews(
        PreviewOptions.from_config(config),
        parts.model,
        parts.network,
        folder,
        runtime,
        tensorboard,
        log,
        events,
    )
    session, started = new_session_id(), time.time()
    metadata = partial(
        training_metadata, config, parts.model, group, plan, session_id=session, started_at=started,
        model_hash=None, vae_hash=None,
    )  # fmt: skip
    saver = Saver(
        SaveOptions.from_config(config), folder, parts.network, parts.optim.optimizer, parts.lr_scheduler,
        parts.guard, group, record, runtime, lambda epoch, step: metadata(epoch=epoch, step=step), parts.identity,
        plan.total_steps, plan.epochs, events, enabled=save_files,
    )  # fmt: skip
    return Outputs(record, events, controls, tensorboard, previews, saver, started)


def announce_ignored(config: TrainConfig, log) -> None:
    if config.save_model_as in ("ckpt", "pt"):
        log(
            f"note: save_model_as = {config.save_model_as}: lorakit writes .safetensors (safe to load, read by every client)."
        )
    for key, why in config.ignored.items():
        log(f"note: '{key}' is ignored: {why}.")


def print_plan(config: TrainConfig, log, model, group, method, network, plan, runtime) -> None:
    """The step arithmetic, the network, precision, device and a memory figure, then warnings."""
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    memory = estimate_memory_gb(
        sum(model.parameter_counts().values()),
        weight_dtype(config).itemsize,
        trainable,
        config.train_batch_size,
        group.datasets[0].resolution[0],
        config.gradient_checkpointing,
    )
    world = runtime.num_processes
    log("", format_plan(make_plan(group)), "")
    log(*format_steps(plan))
    log(
        f"trains:           {method.describe(network)}",
        f"precision:        {config.mixed_precision} (base weights {weight_dtype(config)}, trained "
        f"{next(p for p in network.parameters() if p.requires_grad).dtype})",
        f"device:           {runtime.device}" + (f" x {world} processes" if world > 1 else ""),
        f"memory estimate:  about {memory:.1f} GB (rough)",
    )
    for warning in plan.warnings:
        log(f"warning: {warning}")


def run_identity(config: TrainConfig, folder: RunFolder, seed: int, group) -> ckpt.RunIdentity:
    options = {k: v for k, v in config.values.items() if k not in NOT_IDENTITY}
    return ckpt.RunIdentity(folder.name, seed, group.fingerprint(), options)


def resume(config, folder, identity, network, optimizer, lr_scheduler, generator, group, guard, log):
    """The position to start from: the beginning, or where the chosen state stopped (its
    network, optimizer, schedule and random generators restored). `resume = "auto"` takes only
    a state of this same run and says which others it passed over and why."""
    if not config.resume:
        return ckpt.Position(rng=ckpt.RngState.capture(generator)), None
    if config.resume == "auto":
        state_dir, skipped = ckpt.latest_state(folder, identity)
        for reason in skipped:
            log(f"resume: passed over {reason}")
        if state_dir is None:
            raise ckpt.StateError(
                f"resume = auto: no saved state of '{folder.name}' in {folder.root}"
                + (" that belongs to this run (see above)" if skipped else "")
                + ", so there is nothing to continue and nothing was trained. Start without --resume for a "
                "new run. To be able to resume later, set save_state = true: a state is then saved with "
                "each epoch file and when you press Ctrl-C."
            )
    else:
        state_dir = Path(config.resume)
        for difference in identity.differences(ckpt.read_info(state_dir).get("identity", {})):
            log(f"note: resuming {state_dir.name}, which was saved with {difference}")
    state, rng = ckpt.load_state(state_dir, network, optimizer, lr_scheduler)
    if state.data.get("fingerprint"):
        group.resume_position(state.data)  # refuses another dataset or seed
    rng.restore(generator)
    extra = state.extra
    pos = ckpt.Position(
        state.epoch, state.step, state.batches_done, list(extra.get("epoch_losses", [])),
        [tuple(x) for x in extra.get("losses", [])], rng,
    )  # fmt: skip
    guard.load_state_dict(extra.get("guard", {}))
    log(
        f"resumed from {state_dir}: epoch {pos.epoch}, step {pos.step}"
        + (f", batch {pos.done}" if pos.done else "")
    )
    return pos, state_dir


def end_record(record: RunRecord, status: str, pos: ckpt.Position, **extra) -> None:
    """The run's end in run.json, written even when the disk that failed it is full (then only
    in memory: the error message already says what happened)."""
    record.data.update(losses=pos.losses)
    try:
        record.finish(status, steps=pos.step, **extra)
    except OSError:
        pass


def start_record(
    config: TrainConfig, folder: RunFolder, model, group, plan, resumed: bool, write: bool
) -> RunRecord:
    """run.json for this run (continued when resuming). Without `write` it lives in memory only."""
    if not write:
        return InMemoryRecord(folder.root, {"epochs": [], "files": [], "losses": []})
    return RunRecord.start(
        folder.root,
        resumed=resumed,
        config=dict(config.values),
        dataset={
            "train_images": group.num_train_images,
            "reg_images": group.num_reg_images,
            "captions": group.caption_sources(),
            "buckets": {f"{w}x{h}": n for (w, h), n in group.bucket_histogram().items()},
        },
        plan={
            "steps_per_epoch": plan.steps_per_epoch,
            "epochs": plan.epochs,
            "total_steps": plan.total_steps,
            "batch_size": config.train_batch_size,
            "warnings": plan.warnings,
        },
        model={
            "path": str(config.pretrained_model_name_or_path),
            "family": model.family.name,
            "prediction_type": model.prediction_type,
            "resolution": model.resolution,
        },
        output_name=folder.name,
        base_model=str(Path(config.pretrained_model_name_or_path).resolve()),
        v_parameterization=model.prediction_type == "v_prediction",
        clip_skip=config.clip_skip,
        sample_prompts=str(Path(config.sample_prompts).resolve()) if config.sample_prompts else None,
        sample_sampler=config.sample_sampler,
    )


class InMemoryRecord(RunRecord):
    """The record of a run that writes no files (`save_files=False`: the learning-rate finder)."""

    def write(self) -> None:
        pass
