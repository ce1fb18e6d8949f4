"""The LoRA training recipe: one readable loop, assembled from the parts in this package.

    setup:  model -> datasets -> network -> optimizer -> plan -> caches
    resume: the newest state of this run, if asked
    loop:   epochs of steps; previews, validation and saves on their schedules
    finish: the loss plot and run.json

Each optimizer step: encode captions, noise the latents, predict, weight the loss, backward;
every N accumulated micro-batches, average gradients over processes, clip, step. The base model
stays frozen in its weight dtype; only the network's parameters train. Randomness comes from one
generator (noise, timesteps) plus the dataset's (seed, epoch, batch) streams, and both are saved
with a state, so a resumed run continues exactly like an uninterrupted one.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..data import format_plan, make_plan
from ..errors import LorakitError
from ..runs import RunFolder, RunRecord
from ..utils import faults
from . import checkpointing as ckpt
from .checkpointing import RngState
from .config import TrainConfig, optimizer_args, to_toml
from .control import ControlPoller, StopRequested
from .events import EventLog
from .interrupts import StopRequest
from .loss import LossOptions
from .metadata import new_session_id, training_metadata
from .methods import method_for
from .noise import NoiseOptions, training_scheduler
from .optim import (
    UpdateOptions,
    create_optimizer,
    create_scheduler,
    effective_lrs,
    fuse_backward,
    is_schedule_free,
)
from .options import NOT_IDENTITY
from .outputs import check_owner, lock_folder
from .plan import check_settings, estimate_memory_gb, format_steps, plan_steps
from .previews import PreviewOptions, Previews
from .saving import SaveOptions, Saver
from .setup import (
    Runtime,
    build_data,
    cache_images,
    caption_cache,
    load_base,
    merge_base_weights,
    preflight,
    release_vae,
    weight_dtype,
)
from .step import StepContext, TextOptions, ValidationOptions, step_loss, untrained_loss, validation_loss
from .watch import CollapseGuard, Scalars, TrainingCollapsed, plot_losses


@dataclass
class TrainResult:
    output_dir: Path
    final_file: Path | None
    epoch_files: list[Path]
    steps: int
    epochs: int
    losses: list[tuple[int, float]]
    planned_steps: int
    record: Path
    loss_plot: Path | None = None
    samples: list[Path] = field(default_factory=list)
    network: torch.nn.Module | None = None  # the trained network, still applied to `model`
    model: object | None = None


class Log:
    """Prints on the main process only (and through tqdm, so progress bars stay intact)."""

    def __init__(self, main: bool, quiet: bool = False):
        self.main, self.quiet = main, quiet

    def __call__(self, *lines: str) -> None:
        if self.main and not self.quiet:
            for line in lines:
                tqdm.write(line)


def train(config: TrainConfig, quiet: bool = False, on_step=None, save_files: bool = True) -> TrainResult:
    """Run the recipe. `on_step(step, loss, effective_lrs)` is called after every optimizer step
    (the learning-rate finder uses it); `save_files=False` writes nothing at all."""
    runtime = Runtime.from_config(config)
    log = Log(runtime.is_main_process, quiet)
    seed = config.seed if config.seed is not None else 42
    method = method_for(config)  # what trains: a LoRA, the whole model, a word, a hypernetwork
    folder = RunFolder(Path(config.output_dir), config.output_name, method.file_ext)
    writes = save_files and runtime.is_main_process
    announce_ignored(config, log)

    # -- what can be checked before the model loads: values, files, the dataset
    facts = preflight(config)
    method.preflight(facts)
    group, validation = build_data(config, facts.resolution, seed, log)
    for problem in group.problems.warnings:
        log(str(problem))
    with lock_folder(folder, log) if writes else nullcontext():
        # -- setup
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
        checks, update = ValidationOptions.from_config(config), UpdateOptions.from_config(config)
        if update.fused_backward_pass:
            fuse_backward(optim.optimizer, update.max_grad_norm)
        lr_scheduler = create_scheduler(optim, config, plan.total_steps)
        plan.warnings = check_settings(config, plan, model.family.is_xl, group.num_train_images, optim.notes)
        print_plan(config, log, model, group, method, network, plan, runtime)
        cache_images(config, model, group, validation, log)
        release_vae(config, model, method.name, log)
        text_cache = caption_cache(config, model, group, train_text, log)

        # -- resume: the newest state of this same run, if asked
        generator = torch.Generator(device="cpu").manual_seed(seed)
        guard = CollapseGuard()
        identity = run_identity(config, folder, seed, group)
        pos, resumed_from = resume(
            config, folder, identity, network, optim.optimizer, lr_scheduler, generator, group, guard, log
        )
        if optim.relative_step is False and is_schedule_free(optim.name):
            optim.optimizer.train()

        # -- what the loop writes
        if writes:
            check_owner(folder, resuming=resumed_from is not None, overwrite=config.overwrite, log=log)
            folder.config_copy.write_text(to_toml(config))
        record = start_record(
            config, folder, model, group, plan, resumed=resumed_from is not None, write=writes
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
            PreviewOptions.from_config(config), model, network, folder, runtime, tensorboard, log, events
        )
        session, started = new_session_id(), time.time()
        metadata = partial(
            training_metadata, config, model, group, plan, session_id=session, started_at=started,
            model_hash=None, vae_hash=None,
        )  # fmt: skip
        saver = Saver(
            SaveOptions.from_config(config), folder, network, optim.optimizer, lr_scheduler, guard, group, record,
            runtime, lambda epoch, step: metadata(epoch=epoch, step=step), identity, plan.total_steps, plan.epochs,
            events, enabled=save_files,
        )  # fmt: skip
        ctx = StepContext(
            model, training_scheduler(model, config.zero_terminal_snr), NoiseOptions.from_config(config),
            LossOptions.from_config(config), TextOptions.from_config(config), generator, train_text, text_cache,
            method.caption_transform(),
        )  # fmt: skip
        params = [p for p in network.parameters() if p.requires_grad]

        def validate() -> float | None:
            network.eval()
            value = validation_loss(ctx, validation, checks, config.validation_seed or seed, runtime)
            network.train()
            return value

        if guard.reference is None:  # the untrained loss the collapse guard measures against
            network.eval()
            guard.reference = untrained_loss(ctx, group, seed, runtime)
            network.train()

        # -- the loop
        log("", f"training: {plan.total_steps} steps, {plan.epochs} epochs. Output: {folder.root}")
        progress = tqdm(
            total=plan.total_steps, initial=pos.step, desc="steps", dynamic_ncols=True,
            disable=not runtime.is_main_process or quiet,
        )  # fmt: skip
        previews.at_start(pos.step)
        method.at_step(pos.step, ctx)
        network.train()
        accumulate = update.gradient_accumulation_steps
        validation_steps: list[tuple[int, float]] = []
        try:
            with StopRequest() as stop:
                while pos.step < plan.total_steps and pos.epoch <= plan.epochs:
                    batches_in_epoch = len(group.epoch_refs(pos.epoch, shard=runtime.shard))
                    batches = group.loader(
                        pos.epoch, pos.done, config.max_data_loader_n_workers, shard=runtime.shard,
                        first_step=pos.step, accumulation=accumulate,
                    )  # fmt: skip
                    pending: list[float] = []  # losses of the micro-batches since the last step
                    for index, batch in enumerate(batches, start=pos.done):
                        faults.point("step")
                        with runtime.autocast():
                            loss = step_loss(ctx, batch)
                        (loss / accumulate).backward()
                        pending.append(loss.item())
                        if len(pending) < accumulate and index + 1 < batches_in_epoch:
                            continue
                        pos.updating = True  # a hard stop now would leave a half-applied step: no state then
                        optimizer_step(params, optim.optimizer, lr_scheduler, network, update, runtime)
                        pos.updating = False
                        method.at_step(pos.step + 1, ctx)
                        current = sum(pending) / len(pending)
                        pos.step, pos.done = pos.step + 1, index + 1
                        pos.epoch_losses += pending
                        pos.losses.append((pos.step, current))
                        pos.rng, pending = RngState.capture(generator), []
                        guard.check(current, pos.step)
                        lrs = effective_lrs(optim.optimizer)
                        events.step(pos.step, plan.total_steps, pos.epoch, current, lrs)
                        progress.update(1)
                        progress.set_postfix(epoch=pos.epoch, loss=f"{current:.4f}", lr=f"{lrs[0]:.2e}")
                        tensorboard.log(
                            step_scalars(current, pos.epoch_losses, optim.optimizer, lrs), pos.step
                        )
                        if on_step is not None:
                            on_step(pos.step, current, lrs)
                        previews.after_step(pos.step)
                        if validation is not None and checks.at_step(pos.step):
                            value = validate()
                            tensorboard.log({"loss/validation/step_current": value}, pos.step)
                            events.emit(
                                "validation", step=pos.step, epoch=pos.epoch, loss=value, every="step"
                            )
                            validation_steps.append((pos.step, value))
                        saver.after_step(pos)
                        controls.serve(
                            sample=lambda: previews.draw(f"{pos.step:06d}", pos.step),
                            save=lambda: saver.now(pos),
                        )
                        if stop.requested:
                            raise KeyboardInterrupt
                        if pos.step >= plan.total_steps:
                            break

                    # end of the epoch
                    epoch_loss = (
                        sum(pos.epoch_losses) / len(pos.epoch_losses) if pos.epoch_losses else float("nan")
                    )
                    val = validate() if checks.at_epoch(pos.epoch) else None
                    scalars = {"loss/epoch_average": epoch_loss}
                    if val is not None:
                        scalars["loss/validation/epoch_average"] = val
                    tensorboard.log(scalars, pos.epoch)
                    last = pos.step >= plan.total_steps or pos.epoch >= plan.epochs
                    file = saver.after_epoch(pos, last)
                    previews.after_epoch(pos.epoch, pos.step, last)
                    if val is not None:
                        events.emit("validation", step=pos.step, epoch=pos.epoch, loss=val, every="epoch")
                    events.emit(
                        "epoch",
                        epoch=pos.epoch,
                        step=pos.step,
                        loss=epoch_loss,
                        validation_loss=val,
                        file=file,
                    )
                    record.data.update(losses=pos.losses, validation_steps=validation_steps)
                    record.add_epoch(pos.epoch, pos.step, epoch_loss, val, file.name if file else None)
                    saver.update_record()
                    log(
                        f"epoch {pos.epoch}/{plan.epochs}: loss {epoch_loss:.4f}"
                        + (f", validation loss {val:.4f}" if val is not None else "")
                        + (f", saved {file}" if file else "")
                    )
                    pos.epoch, pos.done, pos.epoch_losses = pos.epoch + 1, 0, []
                    if stop.requested:
                        raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            status = "stopped" if isinstance(interrupt, StopRequested) else "interrupted"
            state = None if pos.updating else saver.interrupted(pos)
            end_record(record, status, pos)
            events.end(status, step=pos.step, state=state)
            log(stopped_message(state, pos, saver))
            raise
        except TrainingCollapsed as error:
            end_record(record, "collapsed", pos, error=str(error), last_good_file=guard.good)
            events.emit("collapse", step=pos.step, message=str(error), last_good_file=guard.good)
            events.end("collapsed", step=pos.step, error=str(error))
            raise
        except (LorakitError, OSError) as error:
            end_record(record, "failed", pos, error=str(error))
            events.end("failed", step=pos.step, error=str(error))
            raise
        except BaseException as error:
            events.end("failed", step=pos.step, error=f"{type(error).__name__}: {error}")
            raise
        finally:
            progress.close()
            tensorboard.close()

        # -- finish
        guard.finished()
        plot = plot_losses(pos.losses, record.data["epochs"], folder.loss_plot, folder.name) if writes else None
        final = folder.final_file
        end_record(
            record, "finished", pos, loss_plot=str(plot) if plot else None, final_file=str(final),
            seconds=round(time.time() - started, 1), last_good_file=guard.good,
        )  # fmt: skip
        saver.update_record()
        events.end("finished", step=pos.step, final_file=final if final.exists() else None, loss_plot=plot)
    log(f"done: {final}", f"loss plot: {plot}", f"run record: {record.path}")
    return TrainResult(
        folder.root, final if final.exists() else None, saver.epoch_files, pos.step, pos.epoch - 1,
        pos.losses, plan.total_steps, record.path, plot, samples=previews.files, network=network, model=model,
    )  # fmt: skip


# -- the parts of the loop --------------------------------------------------------------------


def optimizer_step(params, optimizer, lr_scheduler, network, update: UpdateOptions, runtime) -> None:
    """Accumulated gradients -> one step: averaged over processes, clipped, applied, the
    learning rate advanced, and (scale_weight_norms) each module's norm capped. With
    fused_backward_pass the weights were updated in the backward pass: only the schedule moves."""
    if update.fused_backward_pass:
        lr_scheduler.step()
        return
    average_gradients(params, runtime.num_processes)
    if update.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, update.max_grad_norm)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if update.scale_weight_norms:
        network.max_norm_(update.scale_weight_norms)


def average_gradients(parameters, processes: int) -> None:
    """Mean of the gradients over processes (the network is not wrapped in DDP because it is
    called through hooks inside the U-Net, never through its own forward)."""
    if processes == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= processes
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def step_scalars(current: float, epoch_losses: list[float], optimizer, lrs: list[float]) -> dict[str, float]:
    """TensorBoard scalars under sd-scripts' names."""
    scalars = {"loss/current": current, "loss/average": sum(epoch_losses) / len(epoch_losses)}
    for group_info, lr in zip(optimizer.param_groups, lrs):
        scalars[f"lr/{group_info.get('name', 'group')}"] = lr
    return scalars


# -- setup and resume -------------------------------------------------------------------------


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


def stopped_message(state: Path | None, pos: ckpt.Position, saver: Saver) -> str:
    if state is not None:
        return f"stopped at step {pos.step}: state saved in {state}; continue with --resume auto."
    if pos.updating:
        return "stopped in the middle of an optimizer step: no state was saved now; --resume auto continues from the last saved one."
    if not saver.writes:
        return "stopped."
    return "stopped before the first step: nothing to resume."


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
