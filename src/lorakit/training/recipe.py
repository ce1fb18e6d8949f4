"""The LoRA training recipe: one readable loop, assembled from the parts in this package.

    model -> datasets -> network -> optimizer -> plan -> (resume) -> epochs of steps -> files

Each optimizer step: encode captions, noise the latents, predict, weight the loss, backward;
every N accumulated micro-batches, average gradients over processes, clip, step. The base model
stays frozen in its weight dtype; only the network's parameters (fp32) train. Randomness comes
from one generator (noise, timesteps) plus the dataset's (seed, epoch, batch) streams, and both
are saved with a state, so a resumed run continues exactly like an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..errors import LorakitError
from . import checkpointing as ckpt
from . import control as run_control  # [ui] sample now / save now / stop between steps
from .config import TrainConfig, optimizer_args, to_toml
from .events import EVENTS_FILE, EventLog  # [ui] events.jsonl for the web UI
from .loss import LossOptions
from .noise import NoiseOptions, training_scheduler
from .optim import create_optimizer, create_scheduler, effective_lrs, is_schedule_free
from .plan import check_settings, estimate_memory_gb, format_steps, plan_steps
from .previews import load_preview_prompts, make_previews
from .setup import build_data, build_network, load_base, make_accelerator, merge_base_weights, weight_dtype
from .step import TextCache, step_loss, validation_loss
from .watch import CollapseGuard, RunRecord, Scalars, plot_losses


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


class _Log:
    """Prints on the main process only (and through tqdm, so progress bars stay intact)."""

    def __init__(self, main: bool, quiet: bool = False):
        self.main, self.quiet = main, quiet

    def __call__(self, *lines: str) -> None:
        if self.main and not self.quiet:
            for line in lines:
                tqdm.write(line)


def _average_gradients(parameters, accelerator) -> None:
    """Mean of the gradients over processes (the network is not wrapped in DDP because it is
    called through hooks inside the U-Net, never through its own forward)."""
    if accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= accelerator.num_processes
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _max_norm(network, max_norm: float) -> tuple[int, float]:
    """sd-scripts' scale_weight_norms: shrink any module whose delta norm exceeds `max_norm`.
    Returns (modules scaled, largest norm seen)."""
    scaled, largest = 0, 0.0
    with torch.no_grad():
        for _, module in network.named_network_modules():
            norm = module.delta().norm().item()
            largest = max(largest, norm)
            if norm > max_norm:
                ratio = max_norm / norm
                first = next(p for n, p in module.named_parameters() if n in _FIRST_FACTORS)
                first.mul_(ratio)
                scaled += 1
    return scaled, largest


_FIRST_FACTORS = ("lora_up.weight", "hada_w1_a", "lokr_w1", "lokr_w1_a")


# -- the run ----------------------------------------------------------------------------------


def train(config: TrainConfig, quiet: bool = False, on_step=None, save_files: bool = True) -> TrainResult:
    """Run the recipe. `on_step(step, loss, effective_lrs)` is called after every optimizer step
    (the learning-rate finder uses it); `save_files=False` writes no LoRA files or states."""
    accelerator = make_accelerator(config)
    log = _Log(accelerator.is_main_process, quiet)
    seed = config.seed if config.seed is not None else 42
    torch.manual_seed(seed)
    output_dir = Path(config.output_dir)
    name = config.output_name
    ext = config.save_model_as if config.save_model_as in ("safetensors", "ckpt", "pt") else "safetensors"
    if ext != "safetensors":
        log(f"note: save_model_as = {ext}: lorakit writes .safetensors (safe to load, read by every client).")
        ext = "safetensors"
    for key, why in config.ignored.items():
        log(f"note: '{key}' is ignored: {why}.")

    model = load_base(config, accelerator.device, log)
    merge_base_weights(config, model, log)
    group, validation = build_data(config, model, seed, log)
    network = build_network(config, model, log).to(accelerator.device)
    if config.full_fp16 or config.full_bf16:
        network.to(torch.float16 if config.full_fp16 else torch.bfloat16)
    train_text = any(layer.part != "unet" for layer in network.layers.values())
    if config.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        if train_text:
            for encoder in model.text_encoders:
                encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if train_text:
        for encoder in model.text_encoders:
            encoder.train()  # dropout is 0 in CLIP; train mode only matters for checkpointing

    # plan
    world = accelerator.num_processes
    batches = group.steps_per_epoch
    samples = sum(len(items) for ds in group.datasets for items in ds.buckets.values())
    plan = plan_steps(
        batches,
        samples,
        config.train_batch_size,
        config.max_train_steps,
        config.max_train_epochs,
        config.gradient_accumulation_steps,
        world,
    )
    groups = network.param_groups(config.unet_lr, config.text_encoder_lr, config.learning_rate)
    setup = create_optimizer(config.optimizer_type, groups, config.learning_rate, optimizer_args(config))
    scheduler_lr = create_scheduler(setup, config, plan.total_steps)
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    base_params = sum(model.parameter_counts().values())
    plan.warnings = check_settings(config, plan, model.family.is_xl, group.num_train_images, setup.notes)

    from ..data.check import format_plan, make_plan

    log("", format_plan(make_plan(group)), "")
    log(*format_steps(plan))
    memory = estimate_memory_gb(
        base_params,
        weight_dtype(config).itemsize,
        trainable,
        config.train_batch_size,
        group.datasets[0].resolution[0],
        config.gradient_checkpointing,
    )
    log(
        f"network:          {network.options.label}, {trainable:,} trainable parameters "
        + ", ".join(f"{n} {part}" for part, n in network.counts().items()),
        f"precision:        {config.mixed_precision} (base weights {weight_dtype(config)}, LoRA {next(network.parameters()).dtype})",
        f"device:           {accelerator.device}" + (f" x {world} processes" if world > 1 else ""),
        f"memory estimate:  about {memory:.1f} GB (rough)",
    )
    for warning in plan.warnings:
        log(f"warning: {warning}")

    # caches
    if config.cache_latents or config.cache_latents_to_disk:
        stats = group.cache_latents(
            model.vae,
            sdxl=model.family.is_xl,
            to_disk=config.cache_latents_to_disk,
            batch_size=config.vae_batch_size,
        )
        log(f"latents: {stats.encoded} encoded, {stats.reused} reused from disk")
        if validation is not None:
            validation.cache_latents(model.vae, sdxl=model.family.is_xl, to_disk=config.cache_latents_to_disk)

    # resume
    generator = torch.Generator(device="cpu").manual_seed(seed)
    guard = CollapseGuard()
    losses: list[tuple[int, float]] = []
    epoch, step, done = 1, 0, 0
    resume_dir = None
    if config.resume:
        resume_dir = (
            ckpt.find_latest_state(output_dir, name) if config.resume == "auto" else Path(config.resume)
        )
        if resume_dir is None:
            log(f"resume = auto: no saved state in {output_dir}; starting from the beginning.")
    if resume_dir is not None:
        state = ckpt.load_state(resume_dir, network, setup.optimizer, scheduler_lr, generator)
        if state.data.get("fingerprint") and state.data["fingerprint"] != group.fingerprint():
            raise LorakitError(
                f"{resume_dir}: the dataset changed since this state was saved (images, repeats, buckets or "
                "batch size). Resuming would not continue the same run; start a new run instead."
            )
        epoch, step, done = state.epoch, state.step, state.batches_done
        losses = [tuple(x) for x in state.extra.get("losses", [])]
        guard.load_state_dict(state.extra.get("guard", {}))
        log(f"resumed from {resume_dir}: epoch {epoch}, step {step}")
    if setup.relative_step is False and is_schedule_free(setup.name):
        setup.optimizer.train()

    output_dir.mkdir(parents=True, exist_ok=True)
    record = RunRecord.start(
        output_dir,
        config={k: v for k, v in config.values.items()},
        dataset={
            "train_images": group.num_train_images,
            "reg_images": group.num_reg_images,
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
        output_name=name,
        base_model=str(Path(config.pretrained_model_name_or_path).resolve()),
        v_parameterization=model.prediction_type == "v_prediction",
        clip_skip=config.clip_skip,
        sample_prompts=str(Path(config.sample_prompts).resolve()) if config.sample_prompts else None,
        sample_sampler=config.sample_sampler,
    )
    if accelerator.is_main_process:
        (output_dir / f"{name}-config.toml").write_text(to_toml(config))
    events = EventLog(output_dir / EVENTS_FILE, enabled=accelerator.is_main_process and save_files)  # [ui]
    controls = run_control.ControlPoller(output_dir, enabled=events.enabled and world == 1)  # [ui]
    events.plan(  # [ui]
        plan.warnings,
        step,
        total_steps=plan.total_steps,
        epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        batch_size=config.train_batch_size,
        images=group.num_train_images,
        output_name=name,
        resumed_from=resume_dir,
    )
    tensorboard = Scalars(
        Path(config.logging_dir or output_dir / "logs")
        if config.log_with == "tensorboard" and accelerator.is_main_process
        else None
    )

    prompts = load_preview_prompts(config.sample_prompts) if config.sample_prompts else []
    validation_steps: list[tuple[int, float]] = []
    samples: list[Path] = []

    def previews(label: str, at_step: int) -> None:
        if prompts and accelerator.is_main_process:
            files, warnings = make_previews(
                model, network, prompts, config, output_dir / "sample", name, label
            )
            samples.extend(files)
            events.emit("sample", step=at_step, label=label, files=files)  # [ui]
            for warning in warnings:
                log(warning)
                events.warning(warning)  # [ui]
            tensorboard.image("samples", np.asarray(Image.open(files[-1]).convert("RGB")), at_step)
        accelerator.wait_for_everyone()

    from .metadata import new_session_id, training_metadata

    session, started = new_session_id(), time.time()
    scheduler = training_scheduler(model, config.zero_terminal_snr)
    noise_options, loss_options = NoiseOptions.from_config(config), LossOptions.from_config(config)
    unet_dtype = model.unet.dtype
    params = [p for p in network.parameters() if p.requires_grad]
    text_cache = None if train_text else TextCache()
    last_saved: Path | None = None
    epoch_files: list[Path] = []

    def save_network(path: Path, at_epoch: int) -> Path:
        nonlocal last_saved
        if not accelerator.is_main_process or not save_files:
            return path
        meta = training_metadata(
            config,
            model,
            group,
            plan,
            session_id=session,
            started_at=started,
            epoch=at_epoch,
            step=step,
            model_hash=None,
            vae_hash=None,
        )
        spec = {
            k: v
            for k, v in {
                "title": config.metadata_title,
                "author": config.metadata_author,
                "description": config.metadata_description,
                "license": config.metadata_license,
                "tags": config.metadata_tags,
                "trigger_phrase": config.metadata_trigger_phrase,
            }.items()
            if v
        }
        precision = {"float": "float", "fp16": "fp16", "bf16": "bf16"}.get(config.save_precision or "", None)
        network.save(
            path,
            metadata=meta,
            precision=precision,
            modelspec={"title": config.metadata_title or name, **spec},
        )
        last_saved = path
        record.add_file(str(path))
        events.emit("saved", step=step, epoch=at_epoch, what="lora", path=path)  # [ui]
        return path

    def save_training_state(folder: Path, at_epoch: int, batches_done: int) -> None:
        if accelerator.is_main_process and save_files:
            state = ckpt.TrainState(
                at_epoch,
                step,
                batches_done,
                group.state(at_epoch, batches_done).to_dict(),
                {"losses": losses, "guard": guard.state_dict()},
            )
            ckpt.save_state(folder, network, setup.optimizer, scheduler_lr, generator, state)
            events.emit("saved", step=step, epoch=at_epoch, what="state", path=folder)  # [ui]
        accelerator.wait_for_everyone()

    def sample_now() -> None:  # [ui] "sample now" (lorakit.training.control)
        if prompts:
            previews(f"{step:06d}", step)
        else:
            events.warning("sample now: this run has no sample_prompts")

    def save_now() -> None:  # [ui] "save now": the LoRA and the state at this step
        save_network(ckpt.step_file(output_dir, name, step, ext), epoch)
        save_training_state(ckpt.step_state_dir(output_dir, name, step), epoch, done)

    # the loop
    log("", f"training: {plan.total_steps} steps, {plan.epochs} epochs. Output: {output_dir}")
    progress = tqdm(
        total=plan.total_steps,
        initial=step,
        desc="steps",
        disable=not accelerator.is_main_process or quiet,
        dynamic_ncols=True,
    )
    save_every = config.save_every_n_epochs or (
        max(1, plan.epochs // config.save_n_epoch_ratio) if config.save_n_epoch_ratio else None
    )

    def validate() -> float:
        network.eval()
        value = validation_loss(
            model, validation, scheduler, config, loss_options, config.validation_seed or seed, accelerator
        )
        network.train()
        return value

    if config.sample_at_first and step == 0:
        previews("e000000", 0)
    network.train()
    status = "finished"
    accumulate = config.gradient_accumulation_steps
    try:
        while step < plan.total_steps and epoch <= plan.epochs:
            refs = group.epoch_batches(epoch)[accelerator.process_index :: world]
            epoch_losses: list[float] = []
            micro = 0
            batches = _batches(group, refs, done, step, accumulate, config.max_data_loader_n_workers)
            for index, batch in zip(range(done, len(refs)), batches):
                with accelerator.autocast():
                    loss = step_loss(
                        model,
                        network,
                        batch,
                        scheduler,
                        noise_options,
                        loss_options,
                        config,
                        generator,
                        train_text,
                        unet_dtype,
                        text_cache,
                    )
                (loss / accumulate).backward()
                micro += 1
                epoch_losses.append(loss.item())
                if micro % accumulate and index + 1 < len(refs):
                    continue
                _average_gradients(params, accelerator)
                if config.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                setup.optimizer.step()
                scheduler_lr.step()
                setup.optimizer.zero_grad(set_to_none=True)
                if config.scale_weight_norms:
                    _max_norm(network, config.scale_weight_norms)
                step += 1
                done = index + 1
                current = sum(epoch_losses[-micro:]) / micro
                micro = 0
                losses.append((step, current))
                warning = guard.check(current, step, str(last_saved) if last_saved else None)
                if warning:
                    log(warning)
                    events.warning(warning)  # [ui]
                lrs = effective_lrs(setup.optimizer)
                events.step(step, plan.total_steps, epoch, current, lrs)  # [ui]
                progress.update(1)
                progress.set_postfix(epoch=epoch, loss=f"{current:.4f}", lr=f"{lrs[0]:.2e}")
                scalars = {"loss/current": current, "loss/average": sum(epoch_losses) / len(epoch_losses)}
                for group_info, lr in zip(setup.optimizer.param_groups, lrs):
                    scalars[f"lr/{group_info.get('name', 'group')}"] = lr
                tensorboard.log(scalars, step)
                if on_step is not None:
                    on_step(step, current, lrs)
                if (
                    config.sample_every_n_steps
                    and not config.sample_every_n_epochs
                    and step % config.sample_every_n_steps == 0
                ):
                    previews(f"{step:06d}", step)
                if (
                    validation is not None
                    and config.validate_every_n_steps
                    and step % config.validate_every_n_steps == 0
                ):
                    val_step = validate()
                    tensorboard.log({"loss/validation/step_current": val_step}, step)
                    events.emit("validation", step=step, epoch=epoch, loss=val_step, every="step")  # [ui]
                    validation_steps.append((step, val_step))
                if (
                    config.save_every_n_steps
                    and step % config.save_every_n_steps == 0
                    and step < plan.total_steps
                ):
                    save_network(ckpt.step_file(output_dir, name, step, ext), epoch)
                    ckpt.prune(
                        output_dir,
                        rf"{name}-step\d{{8}}\.{ext}",
                        _steps_to_files(config.save_last_n_steps, config.save_every_n_steps),
                    )
                    if config.save_state:
                        save_training_state(ckpt.step_state_dir(output_dir, name, step), epoch, done)
                        ckpt.prune(
                            output_dir,
                            rf"{name}-step\d{{8}}-state",
                            _steps_to_files(config.save_last_n_steps_state, config.save_every_n_steps),
                        )
                controls.serve(sample=sample_now, save=save_now)  # [ui] requests between steps
                if step >= plan.total_steps:
                    break

            # end of epoch
            epoch_loss = sum(epoch_losses) / len(epoch_losses) if epoch_losses else float("nan")
            val = validate() if _validate_now(config, epoch) else None
            tensorboard.log(
                {
                    "loss/epoch_average": epoch_loss,
                    **({"loss/validation/epoch_average": val} if val is not None else {}),
                },
                epoch,
            )
            last_epoch = step >= plan.total_steps or epoch >= plan.epochs
            file = None
            if not last_epoch and save_every and epoch % save_every == 0:
                file = save_network(ckpt.epoch_file(output_dir, name, epoch, ext), epoch)
                epoch_files.append(file)
                ckpt.prune(output_dir, rf"{name}-\d{{6}}\.{ext}", config.save_last_n_epochs)
                if config.save_state:
                    save_training_state(ckpt.epoch_state_dir(output_dir, name, epoch), epoch + 1, 0)
                    ckpt.prune(output_dir, rf"{name}-\d{{6}}-state", config.save_last_n_epochs_state)
            if last_epoch:
                file = save_network(ckpt.final_file(output_dir, name, ext), epoch)
                if config.save_state or config.save_state_on_train_end:
                    save_training_state(ckpt.final_state_dir(output_dir, name), epoch + 1, 0)
            sampling = config.sample_every_n_epochs or config.sample_every_n_steps
            if sampling and (
                (config.sample_every_n_epochs and epoch % config.sample_every_n_epochs == 0) or last_epoch
            ):
                previews(f"e{epoch:06d}", step)
            if val is not None:  # [ui]
                events.emit("validation", step=step, epoch=epoch, loss=val, every="epoch")  # [ui]
            events.emit(  # [ui]
                "epoch", epoch=epoch, step=step, loss=epoch_loss, validation_loss=val, file=file
            )
            if accelerator.is_main_process:
                record.data["losses"] = losses
                record.data["validation_steps"] = validation_steps
                record.add_epoch(epoch, step, epoch_loss, val, file.name if file else None)
            log(
                f"epoch {epoch}/{plan.epochs}: loss {epoch_loss:.4f}"
                + (f", validation loss {val:.4f}" if val is not None else "")
                + (f", saved {file}" if file else "")
            )
            epoch += 1
            done = 0
    except KeyboardInterrupt as stop:
        status = "stopped" if isinstance(stop, run_control.StopRequested) else "interrupted"  # [ui]
        if step > 0:
            save_training_state(ckpt.final_state_dir(output_dir, name), epoch, done)
            log(
                f'interrupted: state saved in {ckpt.final_state_dir(output_dir, name)}; continue with resume = "auto".'
            )
        events.end(status, step=step, state=ckpt.final_state_dir(output_dir, name) if step else None)  # [ui]
        raise
    except LorakitError as error:
        status = "collapsed" if "loss became" in str(error) else "failed"
        record.finish(status, error=str(error))
        if status == "collapsed":  # [ui]
            events.emit("collapse", step=step, message=str(error))  # [ui]
        events.end(status, step=step, error=str(error))  # [ui]
        raise
    except BaseException as error:  # [ui] anything else still ends the event log
        events.end("failed", step=step, error=f"{type(error).__name__}: {error}")  # [ui]
        raise
    finally:
        progress.close()
        tensorboard.close()

    plot = (
        plot_losses(losses, record.data["epochs"], output_dir / f"{name}-loss.png")
        if accelerator.is_main_process
        else None
    )
    final = ckpt.final_file(output_dir, name, ext)
    record.finish(
        status,
        steps=step,
        loss_plot=str(plot) if plot else None,
        final_file=str(final),
        seconds=round(time.time() - started, 1),
    )
    events.end(status, step=step, final_file=final if final.exists() else None, loss_plot=plot)  # [ui]
    log(f"done: {final}", f"loss plot: {plot}", f"run record: {record.path}")
    return TrainResult(
        output_dir,
        final if final.exists() else None,
        epoch_files,
        step,
        epoch - 1,
        losses,
        plan.total_steps,
        record.path,
        plot,
        samples=samples,
        network=network,
        model=model,
    )


class _RefBatches(torch.utils.data.Dataset):
    def __init__(self, group, refs, steps):
        self.group, self.refs, self.steps = group, refs, steps

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        return self.group.load_batch(self.refs[i], step=self.steps[i])


def _batches(group, refs, start: int, step: int, accumulate: int, workers: int):
    """The batches of this process from `start`; with workers, images load in parallel. Each batch
    knows the optimizer step it belongs to (token warm-up depends on it)."""
    todo = refs[start:]
    steps = [step + i // accumulate for i in range(len(todo))]
    if not workers:
        return (group.load_batch(ref, step=s) for ref, s in zip(todo, steps))
    return iter(
        torch.utils.data.DataLoader(
            _RefBatches(group, todo, steps), batch_size=None, num_workers=workers, collate_fn=lambda x: x
        )
    )


def _validate_now(config: TrainConfig, epoch: int) -> bool:
    return bool(config.validate_every_n_epochs) and epoch % config.validate_every_n_epochs == 0


def _steps_to_files(last_n_steps: int | None, every: int | None) -> int | None:
    """save_last_n_steps counts steps; keep the files saved within that many steps."""
    if not last_n_steps or not every:
        return None
    return max(1, math.ceil(last_n_steps / every))
