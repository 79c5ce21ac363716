"""Typed, frozen view of a composed config.

YAML (conf/) holds choices; this module holds their types. `to_spec(dict)` converts the
composed config right away and reports every unknown key and wrong type at once, each as a
`Problem` naming the setting to change (launcher.problems; the conversion itself is
launcher.config.convert).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from launcher.config.convert import build
from launcher.config.tracking import TrackingSpec
from launcher.contract import RELIABILITY
from launcher.flops import ModelDims, Tile, Trainable
from launcher.problems import ConfigError, Problem


@dataclass(frozen=True, slots=True, kw_only=True)
class MindSpeedModel:
    """Facts MindSpeed-MM's model.json and command line need beyond `dims` (engine=mindspeed)."""

    img_context_token_id: int = 92546
    vocab_size: int = 92553
    """text_decoder.vocab_size in model.json (the embedding rows)."""
    cli_vocab_size: int | None = None
    """--vocab-size on the command line; null: vocab_size (76B: 128258 vs 128265)."""
    rotary_base: int = 1000000
    max_position_embeddings: int = 4096
    vit_kind: Literal["internvit_300m", "internvit_6b"] = "internvit_300m"
    """Which InternViT block layout image_encoder.vision_encoder describes."""
    pad_id: int = 2
    """collate_param.pad_id in data.json (the tokenizer's pad token)."""
    template: str | None = None
    """data.json template_name; null: model.template."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    name: str
    engine: Literal["internvl_chat", "internvl_official", "xtuner", "mindspeed"]
    """Which node-side program trains it."""
    arch: Literal["internvl", "llava"] = "internvl"
    path: str | None = None
    """A full checkpoint (InternVL original or transformers-native layout): model_name_or_path."""
    vision_path: str | None = None
    """Separate vision encoder checkpoint (seed 000 composes InternViT-6B with internlm2-chat-20b)."""
    llm_path: str | None = None
    mlp_path: str | None = None
    make_tiny: Mapping[str, str] | None = None
    """When set, `path` is built on the first node by internvl_chat.tools.make_tiny with these options."""
    template: str = "internlm2-chat"
    llm_family: Literal[
        "internlm2", "qwen2", "llama", "phi3", "qwen3", "internlm3", "qwen3_moe", "gpt_oss"
    ] = "internlm2"
    """qwen2 also means Qwen2.5, internlm2 InternLM2.5; qwen3_moe and gpt_oss are refused."""
    force_image_size: int = 448
    patch_size: int = 14
    downsample_ratio: float = 0.5
    ps_version: Literal["v1", "v2"] = "v2"
    dynamic_image_size: bool = True
    use_thumbnail: bool = True
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 12
    select_layer: int = -1
    normalize_type: Literal["imagenet", "clip", "siglip"] = "imagenet"
    freeze_llm: bool = False
    freeze_mlp: bool = False
    freeze_backbone: bool = False
    unfreeze_vit_layers: int = 0
    use_llm_lora: int = 0
    use_backbone_lora: int = 0
    grad_checkpoint: bool = True
    drop_path_rate: float = 0.0
    weight_decay: float = 0.05
    warmup_ratio: float = 0.03
    seq_len: int = 4096
    lr: float = 2e-5
    per_device_batch_size: int = 1
    """Default when the command line leaves the batch under-determined."""
    global_batch_size: int | None = None
    packed: bool = False
    """The generation's recipe trains on packed rows (InternVL3.5); data.packed=true packs any."""
    max_packed_tokens: int | None = None
    """Tokens per packed row; null: seq_len."""
    num_images_expected: int | None = None
    """Tiles per packed row; null: the trainer's default (40)."""
    loss_reduction: Literal["token", "sample", "square"] | None = None
    """Per-sample loss weight: 1, 1/N or 1/sqrt(N) per supervised token (N: the sample's);
    null: the mean over the micro-batch's supervised tokens."""
    save_format: Literal["hf", "github"] | None = None
    """Checkpoint format our trainer saves; null: the one it loaded (github = original)."""
    xtuner_base: str | None = None
    """Base config under xtuner_cfgs/ (engine=xtuner)."""
    internvl_root: str | None = None
    """The user's checkout of OpenGVLab/InternVL (engine=internvl_official)."""
    internvl_revision: Literal["pin", "head"] = "pin"
    """The official code the checkpoint belongs to: pin = 764fdc9 (seed 000, InternVL 1.5),
    head = 2410d1d (InternVL2 and later). Picks the official argument set, the template's
    default system message and how edge-case samples are treated."""
    internvl_tree: Literal["internvl_chat", "internvl_chat_gpt_oss"] | None = None
    """The official tree at head (engine=internvl_official): internvl_chat/ (InternVL2-3) or
    internvl_chat_gpt_oss/ (InternVL3.5); null: the 3.5 tree for Qwen3/GPT-OSS LLMs at head."""
    system_message: str | None = None
    """None: the template's default at internvl_revision (internvl_chat/prompts.py)."""
    mindspeed_root: str | None = None
    """The MindSpeed-MM checkout on the nodes (engine=mindspeed): pretrain_internvl.py lives there."""
    mindspeed_mm_dir: str | None = None
    """Where mm-convert hf_to_mm writes the converted weights; null: RUN_DIR/mindspeed/mm-<split>."""
    mindspeed: MindSpeedModel = field(default_factory=MindSpeedModel)
    dims: ModelDims = field(default_factory=ModelDims)
    """Architecture numbers for FLOPs, MFU and memory estimates (launcher.flops)."""

    @property
    def max_tiles(self) -> int:
        """Most tiles one image can become: the grid plus a thumbnail (spec 5.3), or 1."""
        if not self.dynamic_image_size:
            return 1
        return self.max_dynamic_patch + (
            1 if self.use_thumbnail and self.max_dynamic_patch > 1 else 0
        )

    @property
    def num_image_token(self) -> int:
        grid = self.force_image_size // self.patch_size
        return int(grid * grid * self.downsample_ratio**2)

    @property
    def tile(self) -> Tile:
        """How one tile enters the model: ViT tokens (+ CLS) and the LLM tokens it becomes
        (LLaVA's projector keeps every patch; InternVL pixel-shuffles them)."""
        grid = self.force_image_size // self.patch_size
        llm = grid * grid if self.arch == "llava" else self.num_image_token
        return Tile(vit_tokens=grid * grid + 1, llm_tokens=llm)

    @property
    def flops_dims(self) -> ModelDims:
        """`dims` with the tile geometry: what FLOPs and memory estimates count with."""
        return dataclasses.replace(self.dims, tile=self.tile)

    @property
    def trainable(self) -> Trainable:
        """Which parts get weight gradients. A LoRA-wrapped part counts as frozen: its base
        weights get none, and the adapters' own FLOPs are small enough to leave out."""
        return Trainable(
            llm=not self.freeze_llm and not self.use_llm_lora,
            vit=not self.freeze_backbone and not self.use_backbone_lora,
            projector=not self.freeze_mlp,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetEntry:
    """One entry of an InternVL meta JSON (spec 5.1)."""

    root: str
    annotation: str
    data_augment: bool = False
    repeat_time: float = 1
    max_dynamic_patch: int | None = None
    length: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSpec:
    name: str
    format: Literal["internvl_meta", "llava_json"] = "internvl_meta"
    datasets: Mapping[str, DatasetEntry] = field(default_factory=dict)
    """Inline meta entries; the plan writes them to RUN_DIR/meta.json."""
    meta_file: str | None = None
    """A meta JSON of the user's; copied into the run dir after checking."""
    eval_meta_file: str | None = None
    json_path: str | None = None
    """LLaVA-format JSON array (format=llava_json)."""
    image_folder: str | None = None
    generate: Literal["synthetic", "synthetic_llava"] | None = None
    """Data built on the first node before training (bundled synthetic data)."""
    dir: str | None = None
    """Where generated data lives."""
    num_samples: int = 256
    group_by_length: bool = False
    packed: bool = False
    max_bad_sample_ratio: float = 0.05
    num_workers: int = 4
    max_sample_tokens: int | None = None
    """The data's longest sample in tokens (text + image), when known; the memory estimate
    budgets activations for it instead of seq_len. null: scanned when the data is readable."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ParallelismSpec:
    name: str
    zero_stage: Literal[0, 1, 2, 3]
    offload_optimizer: bool = False
    offload_param: bool = False
    tp: int = 1
    """Megatron-style engines (mindspeed): tensor, pipeline, virtual pipeline, context parallel."""
    pp: int = 1
    vpp: int | None = None
    cp: int = 1
    llm_pp_layers: Any = None
    """LLM layers per pipeline stage ([6,9,9,8]; with vpp, vpp lists of pp); null: computed."""
    vit_pp_layers: Any = None
    """ViT layers per pipeline stage ([24,0,0,0]); null: computed."""

    @property
    def model_parallel_size(self) -> int:
        return self.tp * self.pp * self.cp


@dataclass(frozen=True, slots=True, kw_only=True)
class HwSpec:
    name: str
    accelerator: Literal["cuda", "npu", "cpu"]
    devices_per_node: int
    gres: str | None = None
    """How this site asks Slurm for the devices (e.g. gpu:8, gpu:a800:8); null asks for none."""
    memory_gb: float
    peak_tflops: float
    """Dense bf16 peak per device, for MFU."""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    dist_backend: Literal["nccl", "hccl", "gloo"] = "nccl"
    cpus_per_node: int | None = None
    """CPU cores the job asks for on each node (--cpus-per-task of its one task); null: Slurm's default (1)."""
    node_mem_gb: float | None = None
    """Host memory the job asks for on each node (--mem); cluster.mem_gb overrides it."""
    env: Mapping[str, str] = field(default_factory=dict)
    network: Mapping[str, str | None] = field(default_factory=dict)
    """NCCL/HCCL network variables (interface, IB HCAs, ...); null ones are not exported."""

    @property
    def node_env(self) -> dict[str, str]:
        """What every node exports: `env` plus the network variables that are set."""
        return {**self.env, **{k: v for k, v in self.network.items() if v is not None}}


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSpec:
    name: str
    kind: Literal["slurm", "local", "wrapper"]
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int | None = None
    """Wall-clock limit in minutes (--time); null: the partition's limit."""
    mem_gb: float | None = None
    """Host memory per node (--mem), overriding hw.node_mem_gb; 0 asks for all of it."""
    mem_per_gpu_gb: float | None = None
    """Ask --mem-per-gpu instead of --mem (sites that allocate memory with the GPUs)."""
    exclusive: bool | None = None
    """--exclusive; null: yes when the job uses every device of its nodes (GPU/NPU hw)."""
    wckey: str | None = None
    exclude: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()
    """Shell lines run on the nodes before training (module load, conda activate, ...)."""
    sbatch_extra: Mapping[str, str] | None = None
    """Site-only sbatch options, e.g. {quotatype: reserved} (null in the YAML so a whole
    mapping can be given on the command line: cluster.sbatch_extra='{quotatype: reserved}')."""
    python: str | None = None
    """Python on the nodes; default: the one `setup` activates, else the launcher's own."""
    # the reliability settings: their defaults and meaning are launcher.contract.Reliability's
    max_requeues: int = RELIABILITY.max_requeues
    signal_delay_s: int = RELIABILITY.signal_delay_s
    collective_timeout_s: int = RELIABILITY.collective_timeout_s
    requeue_on_node_failure: bool = RELIABILITY.requeue_on_node_failure
    exclude_failed_nodes: bool = RELIABILITY.exclude_failed_nodes
    command: tuple[str, ...] = ()
    """wrapper: the site command; `{nodes}` is replaced, the payload is appended as one argument."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchmarkSpec:
    name: str = "none"
    seed: str | None = None
    locked: Mapping[str, Any] = field(default_factory=dict)
    """Setting path -> the only value allowed (seed rules)."""
    allowed: tuple[str, ...] = ()
    """Settings the rules leave free (shown when a locked one is overridden)."""
    max_global_batch_size: int | None = None
    target: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class PreflightSpec:
    """The node pre-flight (launcher/node/nodecheck.py): every node measured in the job's own
    allocation before training; `preflight=true|false` on the command line sets `enabled`."""

    enabled: bool | None = None
    """null: on for benchmark=* runs, off otherwise."""
    on_fail: Literal["stop", "exclude", "warn"] | None = None
    """A bad node: stop the run, requeue it without the node (--exclude), or train and warn;
    null: exclude for benchmark=* runs, warn otherwise."""
    matmul_vs_median: float = 0.9
    """A node whose matmul throughput is under this fraction of the median node's is bad."""
    matmul_vs_peak: float = 0.5
    """... or under this fraction of hw.peak_tflops (GPUs and NPUs; a CPU's peak is nominal)."""
    busbw_vs_median: float = 0.8
    """A node whose all-reduce bus bandwidth is under this fraction of the median link's is bad."""
    straggler_ratio: float = 1.15
    """During the run: a node whose median step compute time is over this many times the
    others' is named a straggler."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    model: ModelSpec
    data: DataSpec
    parallelism: ParallelismSpec
    hw: HwSpec
    cluster: ClusterSpec
    benchmark: BenchmarkSpec
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    """Experiment tracking (conf/tracking: tensorboard, wandb, mlflow, none)."""
    nodes: int = 1
    per_device_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    global_batch_size: int | None = None
    seq_len: int
    lr: float
    max_steps: int | None = None
    """Optimizer steps; null trains `epochs` epochs."""
    epochs: float = 1
    save_steps: int = 200
    save_total_limit: int = 1
    seed: int = 42
    dry_run: bool = False
    wait: bool | None = None
    """Block until the job ends; null: yes for cluster=local, no otherwise."""
    run_dir: str
    runs_root: str = "runs"
    """Where run dirs go when run_dir is not given (relative: to the current directory)."""
    models_root: str = "/mnt/models"
    """Where checkpoints live on the cluster's shared storage (model paths build on it)."""
    data_root: str = "/mnt/data"
    """Where datasets live on the cluster's shared storage (data paths build on it)."""
    cache_dir: str
    check_data: bool = True
    """Run the data pre-flight (every bad sample as file:line) before submitting, dry runs too."""
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    """Extra engine arguments passed through verbatim (checked by the engine)."""
    preflight: PreflightSpec = field(default_factory=PreflightSpec)
    """The node pre-flight and the straggler threshold (PreflightSpec)."""

    @property
    def world_size(self) -> int:
        return self.nodes * self.hw.devices_per_node

    @property
    def data_parallel_size(self) -> int:
        """World size over tp x pp x cp (the world size itself when that does not divide:
        the check reports it)."""
        mp = self.parallelism.model_parallel_size
        return self.world_size // mp if mp >= 1 and self.world_size % mp == 0 else self.world_size

    @property
    def should_wait(self) -> bool:
        return self.cluster.kind == "local" if self.wait is None else self.wait


def to_spec(data: Mapping[str, Any]) -> JobSpec:
    """Convert a resolved config mapping; raise ConfigError listing every problem."""
    problems: list[Problem] = []
    spec = build(JobSpec, data, "", problems)
    if problems:
        raise ConfigError(problems)
    return spec
