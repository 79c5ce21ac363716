"""`.venv-xtuner/bin/python xtuner_cfgs/check_config.py RUN_DIR/xtuner_config.py`

Loads a rendered config the way `xtuner train` does (mmengine Config.fromfile) and prints the
effective nested values the run depends on, as one JSON object, so tests can compare them with
what the launcher meant to set.
"""

import json
import sys

from mmengine.config import Config


def effective(cfg) -> dict:
    dl, ds = cfg.train_dataloader, cfg.train_dataloader.dataset
    hooks = cfg.custom_hooks
    tp = next(
        h
        for h in hooks
        if getattr(h["type"], "__name__", str(h["type"])).endswith("ThroughputHook")
    )
    out = {
        "batch_size": dl.batch_size,
        "num_workers": dl.num_workers,
        "accumulative_counts": cfg.optim_wrapper.accumulative_counts,
        "lr": cfg.optim_wrapper.optimizer.lr,
        "max_length": ds.max_length,
        "train_cfg": {k: v for k, v in cfg.train_cfg.items() if k != "type"},
        "param_scheduler": [
            {k: s[k] for k in ("by_epoch", "begin", "end", "convert_to_iter_based")}
            for s in cfg.param_scheduler
        ],
        "checkpoint_interval": cfg.default_hooks.checkpoint.interval,
        "max_keep_ckpts": cfg.default_hooks.checkpoint.max_keep_ckpts,
        "log_interval": cfg.default_hooks.logger.interval,
        "dist_backend": cfg.env_cfg.dist_cfg.backend,
        "seed": cfg.randomness.seed,
        "freeze_llm": cfg.model.freeze_llm,
        "freeze_visual_encoder": cfg.model.freeze_visual_encoder,
        "throughput": {k: tp[k] for k in ("hidden_size", "num_layers", "vocab_size", "mlp_ratio")},
    }
    if "llm" in cfg.model:
        out |= {
            "llm_path": cfg.model.llm.pretrained_model_name_or_path,
            "tokenizer_paths": sorted(
                {
                    ds.tokenizer.pretrained_model_name_or_path,
                    hooks[0]["tokenizer"]["pretrained_model_name_or_path"],
                }
            ),
            "visual_encoder_path": cfg.model.visual_encoder.pretrained_model_name_or_path,
            "image_processor_path": ds.image_processor.pretrained_model_name_or_path,
            "data_path": ds.data_path,
            "image_folder": ds.image_folder,
        }
    else:
        out |= {
            "model_path": cfg.model.model_path,
            "dataset_model_path": ds.model_path,
            "data_paths": list(ds.data_paths),
            "image_folders": list(ds.image_folders),
            "sampler_group_size": dl.sampler.per_device_batch_size,
        }
    return out


if __name__ == "__main__":
    print(json.dumps(effective(Config.fromfile(sys.argv[1])), sort_keys=True))
