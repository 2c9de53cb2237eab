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
from data_utils.files import compose_shards, config_data_files
from data_utils.loader import build_loader
from log_utils.log_utils import LogManager, build_id_name, setup_console
from log_utils.plot import plot_run
from metric_utils.metric_utils import Metrics, resolve_metric_weights
from models.architecture import analyze_model_architecture
from models.builders import create_model, load_config
from models.footprint import check_fits_in_memory
from models.perceptual import build_lpips
from train.losses import uses_perceptual
from train.optim import describe_lr
from train.trainer import TrainingDiverged, TrainVqVae

logger = logging.getLogger("vqvc")
RESOLVED_CONFIG = "config.json"  # in the run folder


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
    if args.scale_lr:  # as upstream Taming's main.py: base rate x batch size x processes x accumulated batches,
        # for both optimizers (upstream gives the discriminator the same rate)
        factor = config.data_args.batch_size * ctx.world_size * args.grad_accum_steps
        args = attrs.evolve(args, lr=args.lr * factor, disc_lr=args.disc_lr * factor)
        config = attrs.evolve(config, train_args=args)

    # Everything that can fail on input is checked before the model is built or data read.
    prepare_run_dir(config, create=ctx.is_main)
    train_files, valid_files = config_data_files(config)
    check_fits_in_memory(config, device)
    log_mgr = LogManager(config.run_dir, use_wandb=config.use_wandb, project_name=config.project_name,
                         config=config.to_dict(), resume=args.resume == "auto", id_name=build_id_name(config),
                         wandb_dir=args.wandb_dir, is_main=ctx.is_main, use_tensorboard=config.use_tensorboard,
                         start_wandb=False)  # the trainer starts it, with the run id of a resumed checkpoint
    log = log_mgr.logger
    log.info("config %s: model %s, device %s, run folder %s", config.source, config.model_type, device, config.run_dir)
    if ctx.is_main:  # what this run really uses: defaults filled in, --set applied
        config.save_resolved(os.path.join(config.run_dir, RESOLVED_CONFIG))
    use_fid, use_lpips = False, False
    if ctx.is_main and valid_files:
        use_fid, use_lpips = resolve_metric_weights(args, log)
    perceptual = None  # one frozen LPIPS network for the loss and the metrics
    if uses_perceptual(args) or use_lpips:
        perceptual = build_lpips(args.perceptual_backbone, args.vgg_weights, args.lpips_weights).to(device)

    model = create_model(config=config).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data_args = config.data_args

    part, parts = compose_shards(data_args.shard_id, data_args.num_shards, ctx.rank, ctx.world_size)
    training_loader = build_loader(train_files, data_args, config.use_images, shard_id=part, num_shards=parts,
                                   folder="data_process.train")
    validation_loader = None
    if ctx.is_main and valid_files:
        validation_loader = build_loader(valid_files, data_args, config.use_images, validation=True,
                                         folder="data_process.vaild")
    log.info("batch %d x %d frames of %s on %d process(es): effective batch %d clips, %s",
             data_args.batch_size, data_args.sequence_length, "x".join(map(str, data_args.frame_size)),
             ctx.world_size, data_args.batch_size * ctx.world_size, describe_lr(args))

    if metrics is None and validation_loader is not None:
        metrics = Metrics(device, model.vocab_sizes, use_fid=use_fid, lpips=perceptual if use_lpips else None,
                          fid_weights=args.fid_weights)
    forward_model = model
    if ctx.enabled:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        forward_model = torch.compile(forward_model, backend=args.compile_backend)
    trainer = TrainVqVae(config=config, model=model, training_loader=training_loader,
                         validation_loader=validation_loader, log_mgr=log_mgr, device=device, metrics=metrics,
                         perceptual=perceptual, forward_model=forward_model, is_main=ctx.is_main,
                         world_size=ctx.world_size)
    if ctx.is_main:  # after the trainer: a checkpoint's size includes the discriminator it built
        frame_shape = (data_args.sequence_length, 3, *data_args.frame_size)
        analyze_model_architecture(model, frame_shape, os.path.join(config.run_dir, "architecture.txt"), log,
                                   companions=[trainer.loss_calculator.discriminator])
    return trainer


def train_videos(device_override=None, config_path="param.json", overrides=(), resume: bool = False) -> dict:
    """Train the model ``config_path`` (with ``--set`` items ``overrides``) describes; returns the run summary."""
    config = load_config(config_path, overrides)
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


def add_override_option(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE ...``, the same on every training entry point."""
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config keys without editing the file, e.g. --set train_args.lr=1e-4 "
                             "data_args.batch_size=4 (values are JSON; other text is a string)")


def main(argv=None, prog=None) -> int:
    """Train; the exit status is one of ``core.exit_codes`` (0 finished, 2 bad input, 75 interrupted, ...)."""
    parser = argparse.ArgumentParser(prog=prog, description="Train a VQ-VAE video/image codec from a JSON config.")
    parser.add_argument("--config", default="param.json", help="config file (default: param.json)")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda:N (default: the config's train_args.device)")
    add_override_option(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest good checkpoint of the run folder (train_args.resume = auto)")
    args = parser.parse_args(argv)
    setup_console()
    try:
        summary = train_videos(device_override=args.device, config_path=args.config, overrides=args.overrides,
                               resume=args.resume)
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
