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
    with pytest.raises(ConfigError, match="--set takes KEY=VALUE"):
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


def _cli_error(capsys, *argv: str) -> str:
    """``rtseg ARGV`` through the command line's parser: exit 2 and exactly one error line on stderr, no usage."""
    from rtseg.cli.main import main

    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err and "usage:" not in err, err
    return lines[0]


@pytest.mark.parametrize("override, expected", [
    ("TRAINING.ITER_MXA=10", "rtseg train: error: --set TRAINING.ITER_MXA=10: unknown key; did you mean TRAINING.ITER_MAX?"),
    ("training.iter_max=10", "--set training.iter_max=10: unknown key; did you mean TRAINING.ITER_MAX?"),
    ("TRAINNG.ITER_MAX=10", "--set TRAINNG.ITER_MAX=10: unknown key; did you mean TRAINING.ITER_MAX?"),
    ("TRAINING.N_CLASSES=3", "--set TRAINING.N_CLASSES=3: unknown key; did you mean DATASET.N_CLASSES?"),
    ("TRAINING.ITER_MAX=many", "--set TRAINING.ITER_MAX=many: got 'many'"),
    ("MODEL.BASE_FILTERS.X=1", "--set MODEL.BASE_FILTERS.X=1: BASE_FILTERS is a value, not a section"),
    ("TRAINING.LOSS_FUNC={name: dice, reduce: sum}",
     "--set TRAINING.LOSS_FUNC={name: dice, reduce: sum}: TRAINING.LOSS_FUNC.reduce: unknown key; "
     "did you mean TRAINING.LOSS_FUNC.reduction?"),
])
def test_set_errors_name_the_set_and_suggest_the_key(tmp_path, capsys, override, expected):
    cfg = write(tmp_path, BASE)
    line = _cli_error(capsys, "train", "-c", str(cfg), "--set", "MODEL.BASE_FILTERS=4", "--set", override)
    assert expected in line and str(cfg) not in line, line  # the command line is the source, not the YAML file
    assert "MODEL.BASE_FILTERS=4" not in line  # the valid --set is not blamed


def test_unknown_yaml_key_names_the_file_and_suggests(tmp_path, capsys):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["TRAINING"]["ITER_MXA"] = 10
    data["MODEL"]["N_CLASSES"] = 6  # a key of another section
    cfg = write(tmp_path, data)
    line = _cli_error(capsys, "val", "-c", str(cfg), "--checkpoint", str(tmp_path / "best.pt"))
    assert f"{cfg}: TRAINING.ITER_MXA: unknown key; did you mean TRAINING.ITER_MAX?" in line, line
    assert f"{cfg}: MODEL.N_CLASSES: unknown key; did you mean DATASET.N_CLASSES?" in line, line
    data["TRAINING"] = {"QWERTY": 1}
    data["MODEL"].pop("N_CLASSES")
    line = _cli_error(capsys, "train", "-c", str(write(tmp_path, data)))
    assert "TRAINING.QWERTY: unknown key (misspelt?)" in line and "did you mean" not in line, line


@pytest.mark.parametrize("argv, hint", [
    (["--set", "TRAINING.ITER_MAX", "10"], "--set takes KEY=VALUE; did you mean --set TRAINING.ITER_MAX=10?"),
    (["--set", "TRAINING.ITER_MAX:", "10", "--set", "CUDA=false"], "did you mean --set TRAINING.ITER_MAX=10?"),
    (["--set", "TRAINING.ITER_MAX"], "--set takes KEY=VALUE, e.g. --set TRAINING.ITER_MAX=VALUE"),
])
def test_set_without_equals_gets_a_hint(tmp_path, capsys, argv, hint):
    line = _cli_error(capsys, "train", "-c", str(write(tmp_path, BASE)), *argv)
    assert line.startswith("rtseg train: error: ") and hint in line and "unrecognized arguments" not in line, line


def test_other_leftover_arguments_keep_argparse_message(tmp_path, capsys):
    from rtseg.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "-c", str(write(tmp_path, BASE)), "--set", "TRAINING.ITER_MAX=10", "10"])
    assert exc.value.code == 2 and "unrecognized arguments: 10" in capsys.readouterr().err
