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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..errors import LorakitError
from ..runs import RunFolder
from ..utils import faults
from . import checkpointing as ckpt
from .checkpointing import RngState
from .config import TrainConfig
from .control import StopRequested
from .interrupts import StopRequest
from .methods import method_for
from .optim import UpdateOptions, effective_lrs
from .outputs import lock_folder
from .saving import Saver
from .session import Log, Outputs, Parts, announce_ignored, end_record, open_outputs, set_up, start_position
from .setup import Runtime, build_data, preflight
from .step import ValidationOptions, step_loss
from .watch import TrainingCollapsed, plot_losses


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
        # -- setup, resume, and what the loop writes
        parts = set_up(config, method, runtime, folder, group, validation, facts, seed, log)
        pos, resumed_from = start_position(parts, log)
        out = open_outputs(parts, pos, resumed_from, writes, save_files, log)
        if parts.guard.reference is None:  # the untrained loss the collapse guard measures against
            parts.guard.reference = parts.validate(parts.group, ValidationOptions(max_validation_steps=2))
        group, network, plan, ctx, update = parts.group, parts.network, parts.plan, parts.ctx, parts.update
        params = parts.params

        # -- the loop
        log("", f"training: {plan.total_steps} steps, {plan.epochs} epochs. Output: {folder.root}")
        progress = tqdm(
            total=plan.total_steps, initial=pos.step, desc="steps", dynamic_ncols=True,
            disable=not runtime.is_main_process or quiet,
        )  # fmt: skip
        out.previews.at_start(pos.step)
        method.at_step(pos.step, ctx)
        network.train()
        accumulate = update.gradient_accumulation_steps
        with ending(parts, out, pos, progress, log), StopRequest() as stop:
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
                    optimizer_step(
                        params, parts.optim.optimizer, parts.lr_scheduler, network, update, runtime
                    )
                    pos.updating = False
                    method.at_step(pos.step + 1, ctx)
                    current = sum(pending) / len(pending)
                    pos.step, pos.done = pos.step + 1, index + 1
                    pos.epoch_losses += pending
                    pos.losses.append((pos.step, current))
                    pos.rng, pending = RngState.capture(parts.generator), []
                    parts.guard.check(current, pos.step)
                    after_step(parts, out, pos, current, progress, on_step)
                    if stop.requested:
                        raise KeyboardInterrupt
                    if pos.step >= plan.total_steps:
                        break
                finish_epoch(parts, out, pos, log)
                if stop.requested:
                    raise KeyboardInterrupt

        # -- finish
        parts.guard.finished()
        plot = (
            plot_losses(pos.losses, out.record.data["epochs"], folder.loss_plot, folder.name)
            if writes
            else None
        )
        final = folder.final_file
        end_record(
            out.record, "finished", pos, loss_plot=str(plot) if plot else None, final_file=str(final),
            seconds=round(time.time() - out.started, 1), last_good_file=parts.guard.good,
        )  # fmt: skip
        out.saver.update_record()
        out.events.end(
            "finished", step=pos.step, final_file=final if final.exists() else None, loss_plot=plot
        )
    log(f"done: {final}", f"loss plot: {plot}", f"run record: {out.record.path}")
    return TrainResult(
        folder.root, final if final.exists() else None, out.saver.epoch_files, pos.step, pos.epoch - 1,
        pos.losses, plan.total_steps, out.record.path, plot, samples=out.previews.files, network=network,
        model=parts.model,
    )  # fmt: skip


# -- the parts of the loop --------------------------------------------------------------------


def after_step(parts: Parts, out: Outputs, pos: ckpt.Position, current: float, progress, on_step) -> None:
    """Everything that follows an optimizer step: the progress bar, events and TensorBoard, the
    caller's hook, previews, validation and saves on their schedules, then control requests."""
    lrs = effective_lrs(parts.optim.optimizer)
    out.events.step(pos.step, parts.plan.total_steps, pos.epoch, current, lrs)
    progress.update(1)
    progress.set_postfix(epoch=pos.epoch, loss=f"{current:.4f}", lr=f"{lrs[0]:.2e}")
    out.tensorboard.log(step_scalars(current, pos.epoch_losses, parts.optim.optimizer, lrs), pos.step)
    if on_step is not None:
        on_step(pos.step, current, lrs)
    out.previews.after_step(pos.step)
    if parts.validation is not None and parts.checks.at_step(pos.step):
        value = parts.validate()
        out.tensorboard.log({"loss/validation/step_current": value}, pos.step)
        out.events.emit("validation", step=pos.step, epoch=pos.epoch, loss=value, every="step")
        out.validation_steps.append((pos.step, value))
    out.saver.after_step(pos)
    out.controls.serve(
        sample=lambda: out.previews.draw(f"{pos.step:06d}", pos.step, f"at step {pos.step} (asked for)"),
        save=lambda: out.saver.now(pos),
    )


def finish_epoch(parts: Parts, out: Outputs, pos: ckpt.Position, log) -> None:
    """The end of an epoch: its mean loss, validation, the epoch file and previews on their
    schedules, run.json and the log line; then the position moves to the next epoch."""
    epoch_loss = sum(pos.epoch_losses) / len(pos.epoch_losses) if pos.epoch_losses else float("nan")
    val = parts.validate() if parts.checks.at_epoch(pos.epoch) else None
    scalars = {"loss/epoch_average": epoch_loss}
    if val is not None:
        scalars["loss/validation/epoch_average"] = val
    out.tensorboard.log(scalars, pos.epoch)
    last = pos.step >= parts.plan.total_steps or pos.epoch >= parts.plan.epochs
    file = out.saver.after_epoch(pos, last)
    out.previews.after_epoch(pos.epoch, pos.step, last)
    if val is not None:
        out.events.emit("validation", step=pos.step, epoch=pos.epoch, loss=val, every="epoch")
    out.events.emit("epoch", epoch=pos.epoch, step=pos.step, loss=epoch_loss, validation_loss=val, file=file)
    out.record.data.update(losses=pos.losses, validation_steps=out.validation_steps)
    out.record.add_epoch(pos.epoch, pos.step, epoch_loss, val, file.name if file else None)
    out.saver.update_record()
    log(
        f"epoch {pos.epoch}/{parts.plan.epochs}: loss {epoch_loss:.4f}"
        + (f", validation loss {val:.4f}" if val is not None else "")
        + (f", saved {file}" if file else "")
    )
    pos.epoch, pos.done, pos.epoch_losses = pos.epoch + 1, 0, []


@contextmanager
def ending(parts: Parts, out: Outputs, pos: ckpt.Position, progress, log):
    """How a run that does not finish ends: stopped or interrupted (a state saved when the
    weights are whole), collapsed (the last good file named), or failed; each recorded in
    run.json and the event log before the error goes on to the caller."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        status = "stopped" if isinstance(interrupt, StopRequested) else "interrupted"
        state = None if pos.updating else out.saver.interrupted(pos)
        end_record(out.record, status, pos)
        out.events.end(status, step=pos.step, state=state)
        log(stopped_message(state, pos, out.saver))
        raise
    except TrainingCollapsed as error:
        good = parts.guard.good
        end_record(out.record, "collapsed", pos, error=str(error), last_good_file=good)
        out.events.emit("collapse", step=pos.step, message=str(error), last_good_file=good)
        out.events.end("collapsed", step=pos.step, error=str(error))
        raise
    except (LorakitError, OSError) as error:
        end_record(out.record, "failed", pos, error=str(error))
        out.events.end("failed", step=pos.step, error=str(error))
        raise
    except BaseException as error:
        out.events.end("failed", step=pos.step, error=f"{type(error).__name__}: {error}")
        raise
    finally:
        progress.close()
        out.tensorboard.close()


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


def stopped_message(state: Path | None, pos: ckpt.Position, saver: Saver) -> str:
    if state is not None:
        return f"stopped at step {pos.step}: state saved in {state}; continue with --resume auto."
    if pos.updating:
        return "stopped in the middle of an optimizer step: no state was saved now; --resume auto continues from the last saved one."
    if not saver.writes:
        return "stopped."
    return "stopped before the first step: nothing to resume."
