"""Every config file under conf/ composes with Hydra and instantiates through the registries
(``make_operator``, ``make_solver``, ``load_prior``, the data loader) — the same functions the
runner uses, so a broken yaml fails here (lightning-hydra-template style)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from ipsolve import OPERATORS
from ipsolve.runner import (RunError, build_operator, build_prior, build_solver, collect_items, conf_dir,
                            prior_source, resolve_data_path)
from ipsolve.solvers import SOLVERS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONF = conf_dir()
FILES = sorted(p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml"))
BUNDLED_PRIORS = Path(__file__).resolve().parent.parent / "ipsolve" / "priors" / "bundled"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def _compose(overrides=(), hydra=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def test_conf_found_and_groups_match_registries():
    assert CONF is not None and (CONF / "config.yaml").is_file()
    for group, registry in (("operator", OPERATORS), ("solver", SOLVERS)):  # presets name what they build
        files = {p.stem: OmegaConf.load(p) for p in (CONF / group).glob("*.yaml")}
        assert set(registry) <= set(files), f"every registry {group} has a config of the same name"
        for stem, cfg in files.items():
            assert cfg.name in registry, f"{group}/{stem}.yaml builds unknown {group} {cfg.name!r}"
            if stem in registry:
                assert cfg.name == stem


def test_python_make_solver_and_operator_take_the_command_lines_preset_names():
    """``ipsolve.make_solver("dps_cpu", steps=7)`` = ``solver=dps_cpu solver.steps=7``; registry names keep
    the class defaults; a misspelt name gets one line with the closest name and both lists."""
    import ipsolve

    for stem in (p.stem for p in (CONF / "solver").glob("*.yaml") if p.stem != "blind_dps"):  # (needs its kernel model's file)
        cli = build_solver(stem, progress=False)
        api = ipsolve.make_solver(stem, progress=False)
        assert type(api) is type(cli) and vars(api).keys() == vars(cli).keys()
        assert all(repr(vars(api)[k]) == repr(vars(cli)[k]) for k in vars(cli) if not k.startswith("_")), stem
    quick = ipsolve.make_solver("dps_cpu", steps=7)
    assert quick.steps == 7 and quick.zeta == OmegaConf.load(CONF / "solver" / "dps_cpu.yaml").get("zeta", quick.zeta)
    assert ipsolve.make_solver("dmplug").iterations == 5000  # the paper's budget, not a preset's
    with pytest.raises(ValueError, match=r"unknown solver 'dps_cpuu' \(did you mean 'dps_cpu'\?\); known .*presets .*dmplug_quick"):
        ipsolve.make_solver("dps_cpuu")
    mri = ipsolve.make_operator("mri_8x", seed=3)  # operators alike: operator=mri_8x operator.seed=3
    assert (mri.acceleration, mri.seed) == (OmegaConf.load(CONF / "operator" / "mri_8x.yaml").acceleration, 3)
    with pytest.raises(ValueError, match=r"unknown operator 'ct_spars' \(did you mean 'ct_sparse'\?\); known operators"):
        ipsolve.make_operator("ct_spars")
    with pytest.raises(TypeError, match="has no parameter 'stepz'; did you mean 'steps'"):
        ipsolve.make_solver("dps_cpu", stepz=3)
    import inspect

    from ipsolve import solvers

    for facade, registered in ((ipsolve.solve, solvers.solve), (ipsolve.calibrate, solvers.calibrate),
                               (ipsolve.make_solver, solvers.make_solver),
                               (ipsolve.make_operator, ipsolve.operators.make_operator),
                               (ipsolve.load_prior, ipsolve.priors.load_prior)):
        assert [(p.name, p.kind, p.default) for p in inspect.signature(facade).parameters.values()] == \
            [(p.name, p.kind, p.default) for p in inspect.signature(registered).parameters.values()]
    y = torch.zeros(1, 1, 8, 8)
    sr, gauss = ipsolve.make_operator("super_resolution", scale=4), ipsolve.load_prior("gaussian")
    with pytest.raises(ValueError, match="unknown solver 'nope'"):
        ipsolve.solve(y, sr, gauss, "nope")
    with pytest.raises(ValueError, match="unknown solver 'nope'"):
        ipsolve.calibrate(y, sr, gauss, "nope")


def test_python_load_prior_takes_the_command_lines_prior_presets(monkeypatch):
    """``ipsolve.load_prior("phantom_flow")`` = ``prior=phantom_flow``; a preset's settings come along
    (``sd3_medium``: its dtype, size, checkpointing) and the arguments given override them; a preset
    that needs a file says which; a misspelt one gets the closest name."""
    import ipsolve
    import ipsolve.priors

    by_preset, by_source = ipsolve.load_prior("phantom_flow"), ipsolve.load_prior("bundled:phantom-flow")
    assert by_preset.source == "bundled:phantom-flow"
    assert all(torch.equal(a, b) for a, b in zip(by_preset.state_dict().values(), by_source.state_dict().values()))
    seen = {}
    monkeypatch.setattr(ipsolve.priors, "load_prior", lambda source, **kw: seen.update(source=source, **kw))
    ipsolve.load_prior("sd3_medium", image_size=256)
    preset = OmegaConf.to_container(OmegaConf.load(CONF / "prior" / "sd3_medium.yaml"))
    assert seen == {**preset, "image_size": 256, "device": None}
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"load_prior\('ffhq_adm'\) needs its file: load_prior\('ffhq_adm', source=PATH\).*ffhq_10m.pt"):
        ipsolve.load_prior("ffhq_adm")
    with pytest.raises(ValueError, match=r"preset of conf/prior/ \(did you mean 'phantom_flow'\?\)"):
        ipsolve.load_prior("phantom_flw")


@pytest.mark.parametrize("rel", FILES)
def test_config_composes_and_instantiates(rel, tmp_path):
    if rel == "config.yaml":
        cfg = _compose()
        assert (cfg.prior.source, cfg.data.path, cfg.operator.name, cfg.solver.name) == \
            ("bundled:phantom-ddpm", "bundled:phantom", "super_resolution", "dmplug")
        assert cfg.sigma == 0.01 and cfg.seed == 0
        items = collect_items(cfg.data.path, cfg.data.max_images)
        op, solver = build_operator(cfg.operator), build_solver(cfg.solver, progress=False)
        prior = build_prior(cfg.prior)
        solver.check(op, prior)
        assert len(items) == 4  # the main job: the first 4 of the 8 demo phantoms (data.max_images)
        return
    group, name = rel[:-len(".yaml")].rsplit("/", 1)
    if group == "hydra/launcher":
        if not _importable("hydra_plugins.hydra_submitit_launcher"):
            pytest.skip("hydra-submitit-launcher is not installed (pip install 'ipsolve[slurm]')")
        cfg = _compose([f"hydra/launcher={name}"], hydra=True)
        assert "submitit" in cfg.hydra.launcher._target_
        return
    cfg = _compose([f"{group}={name}"])
    node = cfg[group]
    if group == "operator":
        if OmegaConf.is_missing(node, "kernel"):  # operator=blur: the kernel file is the user's
            with pytest.raises(RunError, match="operator.kernel"):
                build_operator(node)
            np.save(tmp_path / "k.npy", np.outer(np.hanning(5), np.hanning(5)))
            node.kernel = str(tmp_path / "k.npy")
        op = build_operator(node)
        assert type(op) is OPERATORS[node.name]
    elif group == "solver":
        if isinstance(node.get("kernel_prior"), DictConfig) and OmegaConf.is_missing(node.kernel_prior, "source"):
            with pytest.raises(RunError, match="kernel_prior.source"):  # BlindDPS's kernel checkpoint path
                build_solver(node, progress=False)
            node.kernel_prior.source = "kernel_checkpoint.pt"  # loaded at the first solve, not here
        solver = build_solver(node, progress=False)
        assert type(solver) is SOLVERS[node.name]
    elif group == "data" and node.get("format"):  # scans: read a bundled example through the same reader
        if not all(_importable(m) for m in ("pydicom", "nibabel", "h5py")):
            pytest.skip('the medical formats need pip install "ipsolve[medical]"')
        from ipsolve import datasets
        from ipsolve.io import read_fastmri
        from ipsolve.runner.volumes import read_volumes

        assert OmegaConf.is_missing(node, "path")
        if node.format == "fastmri":
            node.path = str(datasets.fastmri_phantom_file(tmp_path / "f.h5", datasets.heldout_volume(2, 32))[0])
            files, _ = read_fastmri(node.path)
            assert files[0].coils == 4 and node.mask == "auto"
        else:
            node.path = str(datasets.example_dicom_folder(tmp_path) if node.format == "dicom"
                            else datasets.example_nifti(tmp_path))
            volumes, _ = read_volumes(node)
            assert volumes and volumes[0].data.ndim == 3
        assert node.window == "auto" and node.z_coupling is None and node.batch_size >= 1
    elif group == "data":
        if OmegaConf.is_missing(node, "path"):  # data=folder: path required
            node.path = str(resolve_data_path("bundled:phantom"))
        items = collect_items(node.path, node.max_images)
        assert items and node.batch_size >= 1
    elif group == "prior":
        if OmegaConf.is_missing(node, "source"):
            with pytest.raises(RunError, match="source"):
                prior_source(node)
            pytest.skip(f"prior/{name}.yaml needs a checkpoint path (prior.source=...); composing is checked")
        source, _ = prior_source(node)
        if source.startswith("bundled:") and not (BUNDLED_PRIORS / source.split(":", 1)[1] / "model_index.json").is_file():
            pytest.skip(f"{source} is not trained yet (scripts/train_bundled.sh writes it)")
        try:
            prior = build_prior(node)
        except RunError as err:
            if source.startswith("bundled:"):
                raise
            pytest.skip(f"{source} needs a download that is not available offline: {err}")
        assert prior.image_size > 0 and prior.channels in (1, 3)
    else:  # pragma: no cover - a new group: at least it composed
        assert node is not None


@pytest.mark.parametrize("rel, key, value", [
    ("operator/super_resolution.yaml", "scale", 4), ("operator/super_resolution.yaml", "kernel", "bicubic"),
    ("operator/inpainting.yaml", "mask", "random"), ("operator/inpainting.yaml", "missing", 0.7),
    ("operator/gaussian_blur.yaml", "size", 61), ("operator/gaussian_blur.yaml", "std", 3.0),
    ("operator/motion_blur.yaml", "size", 61), ("operator/motion_blur.yaml", "intensity", 0.5),
    ("operator/nonlinear_blur.yaml", "model", "camera"), ("operator/blind_blur.yaml", "true_kernel", "motion"),
    ("solver/dps.yaml", "steps", 1000), ("solver/resample.yaml", "steps", 500),
    ("solver/dmplug.yaml", "iterations", 5000), ("solver/dmplug.yaml", "ddim_steps", 3),
    ("solver/fmplug.yaml", "iterations", 5000), ("solver/fmplug.yaml", "ode_steps", 3),
    ("solver/dps_cpu.yaml", "steps", 250), ("solver/dmplug_cpu.yaml", "iterations", 300),
    ("solver/dmplug_cpu.yaml", "warm_start", 0.25), ("solver/fmplug_cpu.yaml", "iterations", 300),
])
def test_paper_defaults(rel, key, value):
    assert OmegaConf.load(CONF / rel)[key] == value


def test_conf_readme_option_tables_match_the_configs():
    """conf/README.md's preset and setting tables are what scripts/conf_table.py generates from the
    config files (so a new preset or setting cannot be missing from them)."""
    import importlib.util

    path = CONF.parent / "scripts" / "conf_table.py"
    if not path.is_file():
        pytest.skip("scripts/ is not installed with the package")
    spec = importlib.util.spec_from_file_location("conf_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (CONF / "README.md").read_text()
    assert module.tables() in readme, "conf/README.md's tables are stale: run python scripts/conf_table.py --write"
    for group in module.GROUPS:
        for preset in (CONF / group).glob("*.yaml"):
            assert f"| `{group}` | `{preset.stem}` |" in readme
            # a whole first sentence (the first line alone stopped mid-sentence: audit 2026-12-07)
            said = module.header_line(preset)
            assert said.count("(") == said.count(")") or said.endswith(" …"), (preset.name, said)
            assert not said.endswith((" the", " a", " of", " with", " for", " by", " or")), said
    for key in OmegaConf.load(CONF / "config.yaml"):
        if key not in ("defaults", "hydra"):
            assert f"| `{key}` |" in readme, key


def test_blind_blur_dmplug_is_the_kernel_dmplug_blurs_with():
    """DMPlug's ``bid.py`` calls ``torch_seed(123)`` (numpy seed 123, L198) before each run and draws
    ``Kernel((64, 64), 0.5)`` first (L40): every image gets that kernel (BlindDPS's
    ``blind_deblur_demo.py`` seeds 123 once, L111, so its first image).  The preset's true kernel
    equals the one recorded from LeviBorodenko/motionblur with ``np.random.seed(123)``
    (tests/fixtures/motionblur_reference.npz, see test_operators.py)."""
    import numpy as np

    node = _compose(["operator=blind_blur_dmplug"]).operator
    assert (node.seed, node.size, node.intensity, node.padding) == (123, 64, 0.5, "zero")
    recorded = np.load(Path(__file__).parent / "fixtures" / "motionblur_reference.npz")["s123_n64_i0.5"]
    assert np.abs(build_operator(node).kernel.double().numpy() - recorded).max() <= 1e-6
