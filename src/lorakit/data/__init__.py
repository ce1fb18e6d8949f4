"""Datasets: sd-scripts folders and dataset configs, captions, buckets, caches, preparation tools.

For the training loop:

    config = load_config("dataset.toml", defaults=options)        # or config_from_folders(...)
    group = build_datasets(config, resolution=model.resolution, seed=seed,
                           prior_loss_weight=w, max_train_steps=n)  # raises DatasetError listing all problems
    print(format_plan(make_plan(group)))
    group.cache_latents(model.vae, sdxl=model.family.is_xl, to_disk=True)   # optional
    for epoch in range(first_epoch, last_epoch + 1):
        for batch in group.loader(epoch, start=first_batch):        # Batch objects
            ...
"""

from .build import build_datasets
from .check import format_plan, load_any, make_plan
from .config import DataConfig, DatasetConfig, SubsetConfig, config_from_dict, load_config, parse_resolution
from .dataset import Batch, BatchRef, Dataset, DatasetGroup, DataState
from .discover import config_from_folders
from .problems import Problem, Problems

__all__ = [
    "Batch",
    "BatchRef",
    "DataConfig",
    "DataState",
    "Dataset",
    "DatasetConfig",
    "DatasetGroup",
    "Problem",
    "Problems",
    "SubsetConfig",
    "build_datasets",
    "format_plan",
    "load_any",
    "make_plan",
    "config_from_dict",
    "config_from_folders",
    "load_config",
    "parse_resolution",
]
