"""Training entry point: ``python train/train_custom_videos.py --config param.json --device cpu``.

Also the torchrun entry: ``torchrun --nproc_per_node N train/train_custom_videos.py --config CFG``
trains with DistributedDataParallel (NCCL on GPUs, Gloo on CPU).
"""
import argparse
import logging
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import attrs
import torch
import torch.distributed as dist

from core import exit_codes
from core.atomic_files import StorageError
from core.checkpoint import CheckpointError
from core.config import Config, ConfigError
from core.run_folder import prepare_run_dir
from core.runtime import seed_everything, select_device, set_deterministic
from data_utils.files import config_data_files
from data_utils.loader import build_loader
from log_utils.log_utils import LogManager, build_id_name
from log_utils.plot import plot_run
from metric_utils.metric_utils import Metrics, resolve_metric_weights
from models.architecture import analyze_model_architecture
from models.builders import create_model, load_config
from models.footprint import check_fits_in_memory
from models.perceptual import build_lpips
from train.train_utils import normalizers
from train.trainer import TrainingDiverged, TrainVqVae

logger = logging.getLogger("vqvc")


@attrs.frozen
class DistributedContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size)


def build_trainer(config: Config, device_override=None, metrics=None) -> TrainVqVae:
    """Everything ``train_videos`` wires together, without running it (tests use this)."""
    args = config.train_args
    device = select_device(device_override or args.device)
    ctx = init_distributed(device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    set_deterministic(args.deterministic)
    seed_everything(config.data_args.seed)
    if args.scale_lr:  # as upstream Taming's main.py: base learning rate x batch size x processes
        args = attrs.evolve(args, lr=args.lr * config.data_args.batch_size * ctx.world_size)
        config = attrs.evolve(config, train_args=args)

    # Everything that can fail on input is checked before the model is built or data read.
    prepare_run_dir(config, create=ctx.is_main)
    train_files, valid_files = config_data_files(config)
    check_fits_in_memory(config, device)
    log_mgr = LogManager(config.run_dir, use_wandb=config.use_wandb, project_name=config.project_name,
                         config=config.to_dict(), resume=args.resume == "auto", id_name=build_id_name(config),
                         wandb_dir=args.wandb_dir, is_main=ctx.is_main, start_wandb=False)  # the trainer starts it
    log = log_mgr.logger
    log.info("config %s: model %s, device %s, run folder %s", config.source, config.model_type, device, config.run_dir)
    use_fid, use_lpips = False, False
    if ctx.is_main and valid_files:
        use_fid, use_lpips = resolve_metric_weights(args, log)

    model = create_model(config=config).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data_args = config.data_args
    frame_shape = (data_args.sequence_length, 3, *data_args.frame_size)
    if ctx.is_main:
        analyze_model_architecture(model, frame_shape, os.path.join(config.run_dir, "architecture.txt"), log)

    shard_id = data_args.shard_id if data_args.shard_id is not None else ctx.rank
    num_shards = data_args.num_shards if data_args.num_shards is not None else ctx.world_size
    training_loader = build_loader(train_files, data_args, config.use_images, shard_id=shard_id,
                                   num_shards=num_shards, seed=data_args.seed + shard_id, folder="data_process.train")
    validation_loader = None
    if ctx.is_main and valid_files:
        validation_loader = build_loader(valid_files, data_args, config.use_images, validation=True,
                                         folder="data_process.vaild")
    log.info("batch %d x %d frames of %s on %d process(es): effective batch %d clips, lr %.2e",
             data_args.batch_size, data_args.sequence_length, "x".join(map(str, data_args.frame_size)),
             ctx.world_size, data_args.batch_size * ctx.world_size, args.lr)

    normalize, unnormalize = normalizers()
    if metrics is None and validation_loader is not None:
        lpips = build_lpips(args.perceptual_backbone, args.vgg_weights).to(device) if use_lpips else None
        metrics = Metrics(device, model.vocab_sizes, unnormalize, use_fid=use_fid, lpips=lpips,
                          fid_weights=args.fid_weights)
    forward_model = model
    if ctx.enabled:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        forward_model = torch.compile(forward_model)
    return TrainVqVae(model=model, training_loader=training_loader, validation_loader=validation_loader,
                      log_mgr=log_mgr, normalize=normalize, unnormalize=unnormalize, logger=log,
                      default_gpu=device, config=config, config_path=config.source, metrics=metrics,
                      forward_model=forward_model, is_main=ctx.is_main, world_size=ctx.world_size)


def train_videos(device_override=None, config_path="param.json", resume: bool = False) -> dict:
    """Train the model ``config_path`` describes; returns the run summary."""
    config = load_config(config_path)
    if resume:  # continue from the newest good checkpoint of the run folder (train_args.resume = "auto")
        config = attrs.evolve(config, train_args=attrs.evolve(config.train_args, resume="auto"))
    trainer = build_trainer(config, device_override)
    try:
        summary = trainer.train()
        if trainer.is_main and summary["steps"] > 0:
            for path in plot_run(config.run_dir):
                trainer.logger.info("plot: %s", path)
        return summary
    finally:
        trainer.log_mgr.close()
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def main(argv=None) -> int:
    """Train; the exit status is one of ``core.exit_codes`` (0 finished, 2 bad input, 75 interrupted, ...)."""
    parser = argparse.ArgumentParser(description="Train a VQ-VAE video/image codec from a JSON config.")
    parser.add_argument("--config", default="param.json", help="config file (default: param.json)")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda:N (default: the config's train_args.device)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest good checkpoint of the run folder (train_args.resume = auto)")
    args = parser.parse_args(argv)
    try:
        summary = train_videos(device_override=args.device, config_path=args.config, resume=args.resume)
    except (ConfigError, CheckpointError) as err:
        logger.error("%s", err)
        return exit_codes.BAD_INPUT
    except StorageError as err:
        logger.error("%s", err.strerror)
        return exit_codes.STORAGE
    except TrainingDiverged as err:
        logger.error("%s", err)
        return exit_codes.DIVERGED
    return {"finished": exit_codes.FINISHED, "interrupted": exit_codes.INTERRUPTED}.get(summary["status"],
                                                                                        exit_codes.FAILED)


if __name__ == "__main__":
    sys.exit(main())
