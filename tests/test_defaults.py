"""One source for defaults (issue 9 item 6): the dataclasses of launcher/config/spec.py.

conf/{model,data,cluster}/*.yaml start from base/<group> and conf/config.yaml from base/job,
which launcher/config/defaults.py builds from the dataclass defaults into Hydra's ConfigStore; there
is no YAML copy of them to drift. These tests compose every option and check that what it
does not set itself is exactly the dataclass default, and that config.yaml restates none.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from launcher.config.compose import compose
from launcher.config.defaults import BASES, GROUPS, YAML_OWN, base_config, field_default
from launcher.config.spec import JobSpec

CONF = Path(__file__).resolve().parent.parent / "conf"
OPTIONS = [(g, p.stem) for g in BASES for p in sorted((CONF / g).glob("*.yaml"))]


def test_there_is_no_second_copy_of_the_defaults():
    assert not (CONF / "base").exists(), "conf/base/ is back: defaults live in launcher/config/spec.py"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_each_option_starts_from_the_dataclass_defaults(group: str, option: str):
    # a real model names its data (launcher.config.data_select): here the generated set
    cfg, problems = compose([f"{group}={option}", *(["data=synthetic"] * (group == "model"))])
    assert problems == []
    composed = OmegaConf.to_container(cfg[group], resolve=False)
    own = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"), resolve=False)
    fields = {f.name: f for f in dataclasses.fields(BASES[group])}
    assert set(composed) == set(fields), "every setting, nothing else"
    for name, f in fields.items():
        if name in own:
            continue  # the option's own value
        want = YAML_OWN.get(group, {}).get(name, field_default(f))
        got = composed[name]
        assert got == want and isinstance(got, bool) == isinstance(want, bool), (name, got, want)


def test_top_level_settings_come_from_jobspec_and_config_yaml_restates_none():
    cfg, problems = compose([])
    assert problems == []
    own = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False)
    restated = {
        k: v
        for k, v in own.items()
        if k not in {"defaults", "hydra"} and not (isinstance(v, str) and "${" in v)
    }
    assert restated == {}, "set top-level defaults in JobSpec (launcher/config/spec.py), not config.yaml"
    top = OmegaConf.to_container(cfg, resolve=False)
    for f in dataclasses.fields(JobSpec):
        if f.name in GROUPS:
            continue
        want = own.get(f.name, field_default(f))
        assert top[f.name] == want, (f.name, top[f.name], want)


def test_a_required_setting_is_null_in_the_base_and_nested_ones_are_mappings():
    model = base_config("model")
    assert model["name"] is None and model["engine"] is None  # each option sets them
    assert model["dims"]["llm"]["vocab"] == 0 and model["mindspeed"]["pad_id"] == 2
    assert base_config("cluster")["setup"] == [] and base_config("cluster")["max_requeues"] == 3
    assert "model" not in base_config("job") and base_config("job")["save_steps"] == 200
