from pathlib import Path

import pytest
import yaml

from rtseg.config import load_config
from rtseg.config.loader import parse_override
from rtseg.errors import ConfigError

BASE = {
    "MODEL": {"NAME": "ResUnet_3D", "BASE_FILTERS": 8},
    "DATASET": {"NAME": "prostateCT_vol", "PATH": "/tmp/x", "N_CLASSES": 6},
    "TRAINING": {"ITER_MAX": 10},
}


def write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "cfg.yml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_seed_configs_load_unchanged(seed_configs):
    assert len(seed_configs) == 3
    for path in seed_configs:
        cfg = load_config(path)
        assert cfg.MODEL.NAME in ("ResUnet_3D", "Deeper_ResUnet_3D")
        assert cfg.DATASET.N_CLASSES == 6 and cfg.DATASET.NORMALIZE == "none"
        assert cfg.TRAINING.LR_SCHEDULER.name == "poly_lr"
        assert cfg.TRAINING.LR_SCHEDULER.kwargs()["max_iter"] == cfg.TRAINING.ITER_MAX
        assert cfg.TRAINING.OPTIM.name == "adam" and "lr" in cfg.TRAINING.OPTIM.kwargs()
        assert len(cfg.DATASET.colors()) == 5
        assert cfg.DATASET.class_names()[1] == "prostate"


def test_overrides_apply_and_are_typed(seed_configs):
    cfg = load_config(seed_configs[0], ["TRAINING.ITER_MAX=200", "MODEL.BASE_FILTERS=16", "CUDA=false", "DATASET.PATCH_SIZE=[32,32,16]"])
    assert cfg.TRAINING.ITER_MAX == 200 and cfg.MODEL.BASE_FILTERS == 16 and cfg.CUDA is False
    assert cfg.DATASET.PATCH_SIZE == (32, 32, 16)


def test_seed_normalize_bool_maps_to_l2(tmp_path):
    data = {**BASE, "DATASET": {**BASE["DATASET"], "NORMALIZE": True}}
    assert load_config(write(tmp_path, data)).DATASET.NORMALIZE == "l2"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["MODEL"].update(BASE_FILTRES=8), "MODEL.BASE_FILTRES: unknown key"),
        (lambda d: d["TRAINING"].update(ITER_MAX="many"), "TRAINING.ITER_MAX: got 'many'"),
        (lambda d: d["TRAINING"].update(BATCH_SIZE=0), "TRAINING.BATCH_SIZE: got 0"),
        (lambda d: d["DATASET"].update(NORMALIZE="minmax"), "DATASET.NORMALIZE: got 'minmax'"),
        (lambda d: d["DATASET"].pop("N_CLASSES"), "DATASET.N_CLASSES: required key is missing"),
        (lambda d: d["DATASET"].update(COLOR_MAP=[[1, 2, 3]]), "COLOR_MAP has 1 colours; expected N_CLASSES-1 = 5"),
        (lambda d: d["DATASET"].update(COLOR_MAP=[[1, 2, 300]] * 5), "RGB values must be in 0..255"),
        (lambda d: d["DATASET"].update(HU_WINDOW=[500, -500]), "lower bound must be below upper bound"),
        (lambda d: d["TRAINING"].update(LOSS_FUNC={"name": "hinge"}), "TRAINING.LOSS_FUNC.name: got 'hinge'"),
        (lambda d: d.update(EXTRA={}), "EXTRA: unknown key"),
    ],
)
def test_bad_config_messages_name_file_and_key(tmp_path, mutate, expected):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert expected in msg and str(path) in msg


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        parse_override("TRAINING.ITER_MAX")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yml")
    with pytest.raises(ConfigError, match="TRAINING.ITER_MAX: unknown key|is a value, not a section"):
        load_config(write(tmp_path, BASE), ["TRAINING.ITER_MAX.X=1"])
    bad = tmp_path / "bad.yml"
    bad.write_text("MODEL: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_shipped_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.glob("*.yml")):
        cfg = load_config(path)
        assert len(cfg.DATASET.class_names()) == cfg.DATASET.N_CLASSES


def test_valid_names_come_from_the_registries(tmp_path):
    """Optimizer, scheduler, loss and model names are checked against the tables training builds from."""
    from rtseg.config.names import LOSSES, OPTIMIZERS, SCHEDULERS
    from rtseg.models.registry import _REGISTRY, register_model

    for key, section, table in (("OPTIM", "TRAINING", OPTIMIZERS), ("LR_SCHEDULER", "TRAINING", SCHEDULERS),
                                ("LOSS_FUNC", "TRAINING", LOSSES)):
        data = yaml.safe_load(yaml.safe_dump(BASE))
        data[section][key] = {"name": "nonesuch"}
        with pytest.raises(ConfigError) as exc:
            load_config(write(tmp_path, data))
        assert f"{section}.{key}.name: got 'nonesuch'" in str(exc.value)
        assert "valid names: " + ", ".join(sorted(table)) in str(exc.value)
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["ADVERSARIAL"] = {"D_OPTIM": "adamw"}  # any registered optimizer, not a second list
    assert load_config(write(tmp_path, data)).ADVERSARIAL.D_OPTIM == "adamw"
    data["ADVERSARIAL"] = {"D_OPTIM": "lbfgs2"}
    with pytest.raises(ConfigError, match="ADVERSARIAL.D_OPTIM: got 'lbfgs2'"):
        load_config(write(tmp_path, data))
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["MODEL"]["NAME"] = "Plugin_Net"
    with pytest.raises(ConfigError, match="MODEL.NAME: got 'Plugin_Net'; unknown model 'Plugin_Net'; valid names: .*ResUnet_3D"):
        load_config(write(tmp_path, data))
    register_model("Plugin_Net")(lambda **kw: None)  # a model registered elsewhere is valid at once
    try:
        assert load_config(write(tmp_path, data)).MODEL.NAME == "Plugin_Net"
    finally:
        del _REGISTRY["Plugin_Net"]


def test_poly_lr_max_iter_defaults_to_iter_max(tmp_path):
    import torch

    from rtseg.training.optim import build_optimizer, build_scheduler

    def lr_after(cfg, steps: int) -> float:
        opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg.TRAINING.OPTIM)
        sch = build_scheduler(opt, cfg.TRAINING.LR_SCHEDULER, cfg.TRAINING.ITER_MAX)
        for _ in range(steps):
            opt.step()
            sch.step()
        return opt.param_groups[0]["lr"]

    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["TRAINING"] = {"ITER_MAX": 100, "OPTIM": {"name": "sgd", "lr": 1.0}, "LR_SCHEDULER": {"name": "poly_lr"}}
    cfg = load_config(write(tmp_path, data))
    assert lr_after(cfg, 50) == pytest.approx(0.5**0.9) and lr_after(cfg, 100) == 0.0  # (1 - it/ITER_MAX)^0.9
    data["TRAINING"]["LR_SCHEDULER"]["max_iter"] = 200  # an explicit value wins
    assert lr_after(load_config(write(tmp_path, data)), 100) == pytest.approx(0.5**0.9)
