"""launcher.config.settings: sweep point names and the settings that differ between runs."""

from __future__ import annotations

from launcher.config.settings import differing, label, point_name, short, varying_keys


def test_point_names_say_what_differs():
    varying = varying_keys(["-m", "per_device_batch_size=1,2", "gradient_accumulation_steps=16,32",
                            "nodes=2", "parallelism=zero1,zero3", "lr=1e-4,2e-4"])  # fmt: skip
    assert varying == ["per_device_batch_size", "gradient_accumulation_steps", "parallelism", "lr"]
    taken: set[str] = set()
    point = ["per_device_batch_size=2", "gradient_accumulation_steps=32", "nodes=2",
             "parallelism=zero3", "lr=0.0001"]  # fmt: skip
    assert point_name(point, varying, 5, taken) == "pdb2-ga32-zero3-lr0.0001"
    assert point_name(point, varying, 6, taken) == "pdb2-ga32-zero3-lr0.0001-6"  # never reused
    assert point_name(["nodes=2"], [], 7, taken) == "7"  # nothing differs: the number
    assert short("cluster.partition", "gpu a/b") == "partition_gpu_a_b"  # a safe folder name
    assert short("hw", "a800") == "a800"


def test_differing_settings_collapse_a_group_to_its_name():
    a = {"model.name": "tiny", "model.dims.llm": 1, "lr": 1e-4, "run_dir": "/r/a", "seed": 1}
    b = {"model.name": "big", "model.dims.llm": 9, "lr": 1e-4, "run_dir": "/r/b", "seed": 2}
    keys = differing([a, b])
    assert keys == ["model.name", "seed"]  # a model's dims follow its name; run_dir always differs
    assert label(b, keys) == "model=big seed=2"
    assert differing([a]) == [] and differing([a, dict(a)]) == []
