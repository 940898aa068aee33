"""Names and configs → objects: operators, solvers and priors from objects, registry names,
``conf/`` presets or config mappings (the same functions serve the CLI, the API and the config
test), and the description of a run's settings."""
from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Mapping
from pathlib import Path

from ..notices import did_you_mean, warn
from .errors import RunError
from .rundir import file_digest


def conf_dir() -> Path | None:
    """The Hydra config directory: ``conf/`` next to the package (a source checkout or an
    editable install) or ``ipsolve/conf`` inside an installed package."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "conf", here.parent / "conf"):
        if (cand / "config.yaml").is_file():
            return cand
    return None


def load_preset(group: str, name: str) -> dict | None:
    """The contents of ``conf/<group>/<name>.yaml`` as a dict, or None if there is none."""
    root = conf_dir()
    if root is None or "/" in name or not (root / group / f"{name}.yaml").is_file():
        return None
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(root / group / f"{name}.yaml"), resolve=False)
    data.pop("defaults", None)
    return data


def to_plain(value):
    """An OmegaConf node as plain Python (``???`` left in it → one line naming the setting); any
    other value as it is."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    if not OmegaConf.is_config(value):
        return value
    try:
        return OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise RunError(f"a required setting is missing: {err.full_key} (set it on the command line, "
                       f"e.g. {err.full_key}=...)") from None


def named_params(group: str, spec, registry: Mapping) -> tuple[str, dict]:
    """``(registry name, params)`` from a registry name (its defaults), a preset name
    (``conf/<group>/<name>.yaml``) or a mapping ``{name: <registry name>, **params}``."""
    if isinstance(spec, str):
        try:
            return _preset_or_registered(group, spec, {}, registry_first=False)
        except ValueError as err:
            raise RunError(str(err)) from None
    params = to_plain(spec)
    if not isinstance(params, Mapping):
        kind = {"operator": "Operator", "solver": "Solver", "prior": "Prior"}.get(group, group)
        raise RunError(f"{group} must be a name (a registry name or a conf/{group}/ preset), a mapping "
                       f"{{name: ..., <settings>}} or an ipsolve {kind}, got {type(spec).__name__} {spec!r}")
    params = dict(params)
    name = params.pop("name", None)
    if name is None:
        raise RunError(f"{group} settings need a 'name' (one of {', '.join(sorted(registry))}), got {params}")
    return name, params


def build_operator(spec):
    """An :class:`~ipsolve.operators.Operator` from an operator object, a registry / preset name,
    or a mapping ``{name: <registry name>, **params}`` (a ``conf/operator`` node)."""
    from ..operators import OPERATORS, Operator, make_operator

    if isinstance(spec, Operator):
        return spec
    name, params = named_params("operator", spec, OPERATORS)
    try:
        return make_operator(name, **params)
    except (TypeError, ValueError, FileNotFoundError) as err:
        raise RunError(f"cannot build operator {name!r}: {err}") from None


def build_solver(spec, progress: bool | None = None):
    """A :class:`~ipsolve.solvers.Solver` from a solver object, a registry name (paper defaults),
    a preset name (``conf/solver/<name>.yaml``, e.g. ``dmplug_cpu``) or a mapping
    ``{name: <registry name>, **params}``.  ``progress`` sets the solver's own progress bar."""
    from ..solvers import SOLVERS, Solver, make_solver

    if isinstance(spec, Solver):
        return spec
    name, params = named_params("solver", spec, SOLVERS)
    if progress is not None:
        params["progress"] = progress
    try:
        return make_solver(name, **params)
    except (TypeError, ValueError) as err:
        text = str(err)  # (make_solver names the solver already where it can)
        raise RunError(text if text.startswith(f"solver {name!r}") else f"cannot build solver {name!r}: {text}") from None


def presets(group: str) -> list[str]:
    """The names of ``conf/<group>/*.yaml`` that are presets rather than registry names
    (``dps_cpu``, ``dmplug_quick``, ``ct_sparse``, …)."""
    root, registry = conf_dir(), _registry(group) if group != "prior" else {}
    return sorted(p.stem for p in (root / group).glob("*.yaml") if p.stem not in registry) if root else []


def _registry(group: str) -> Mapping:
    from ..operators import OPERATORS
    from ..solvers import SOLVERS

    return {"operator": OPERATORS, "solver": SOLVERS}[group]


def _preset_or_registered(group: str, name, params: dict, registry_first: bool = True) -> tuple[str, dict]:
    """``(registry name, params)`` for the Python API's ``make_*(name, **params)``: a registry name
    as given (the class's defaults), a preset name as its ``conf/<group>/<name>.yaml`` overridden by
    ``params``; an unknown name gets one line with the closest name and both lists.
    ``registry_first=False`` (the command line's and config mappings' reading): a registry name's own
    ``conf/<group>/<name>.yaml`` is read as well (the same values, or ``???`` where one must be given)."""
    registry = _registry(group)
    if registry_first and (not isinstance(name, str) or name in registry):
        return name, params
    preset = load_preset(group, name) if isinstance(name, str) else None
    if preset is None and (not isinstance(name, str) or name in registry):
        return name, params
    if preset is None:
        raise ValueError(f"unknown {group} {name!r}{did_you_mean(name, [*registry, *presets(group)])}; known "
                         f"{group}s: {', '.join(sorted(registry))}; presets (conf/{group}/): {', '.join(presets(group))}")
    if "name" not in preset:
        raise ValueError(f"conf/{group}/{name}.yaml needs a 'name' (one of {', '.join(sorted(registry))})")
    return preset.pop("name"), {**preset, **params}


def make_solver(name: str, **params):
    """:func:`ipsolve.solvers.make_solver`, also taking the command line's preset names
    (``conf/solver/<name>.yaml``: ``make_solver("dmplug_quick")`` is ``solver=dmplug_quick``), whose
    settings ``params`` override.  A registry name keeps the class's defaults, the papers' settings
    (the same values as its ``conf/solver/<name>.yaml``)."""
    from ..solvers import make_solver as make_registered

    name, params = _preset_or_registered("solver", name, params)
    return make_registered(name, **params)


def make_operator(name: str, **params):
    """:func:`ipsolve.operators.make_operator`, also taking the command line's preset names
    (``conf/operator/<name>.yaml``: ``make_operator("ct_sparse")`` is ``operator=ct_sparse``), whose
    settings ``params`` override."""
    from ..operators import make_operator as make_registered

    name, params = _preset_or_registered("operator", name, params)
    return make_registered(name, **params)


def _taking_solver_presets(registered):
    """``registered(y, operator, prior, solver, **kw)`` with ``solver`` also a preset name
    (:func:`make_solver`); its signature and docstring are ``registered``'s, so an argument is added
    in one place."""
    @functools.wraps(registered)
    def with_presets(y, operator, prior, solver, **kwargs):
        return registered(y, operator, prior, make_solver(solver) if isinstance(solver, str) else solver, **kwargs)

    with_presets.__module__, with_presets.__qualname__ = __name__, registered.__name__  # picklable as this module's
    with_presets.__doc__ = (f"{registered.__doc__}\n\n    ``solver`` may also be a preset name (conf/solver/): "
                            f"``ipsolve.{registered.__name__}(y, op, prior, \"dps_cpu\", sigma=0.05)``.")
    return with_presets


def __getattr__(name):  # solve, calibrate: wrapped on first use (the solvers are imported lazily)
    if name in ("solve", "calibrate"):
        from .. import solvers

        globals()[name] = _taking_solver_presets(getattr(solvers, name))
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_solver(obj) -> bool:
    from ..solvers import Solver

    return isinstance(obj, Solver)


def missing_source_message(preset: str, python: bool = False) -> str:
    """The error for a prior preset whose ``source`` must be given, with the preset's own
    explanation (its header comment) of where the file comes from; ``python``: phrased for
    :func:`load_prior` instead of the command line."""
    path = conf_dir() / "prior" / f"{preset}.yaml"
    comment = " ".join(line.lstrip("# ").strip() for line in path.read_text().splitlines()
                       if line.startswith("#") and not line.lstrip("# ").startswith("usage:"))
    lead = (f"load_prior({preset!r}) needs its file: load_prior({preset!r}, source=PATH)" if python else
            f"prior={preset} needs its source: ipsolve prior={preset} prior.source=PATH")
    return lead + (f" ({comment})" if comment else f" (see conf/prior/{preset}.yaml)")


def load_prior(source: str, /, *, device=None, dtype=None, **kwargs):
    """:func:`ipsolve.priors.load_prior`, also taking the command line's prior preset names
    (``conf/prior/<name>.yaml``: ``load_prior("phantom_flow")`` is ``prior=phantom_flow``, and
    ``load_prior("sd3_medium")`` brings that preset's dtype, size and checkpointing), whose settings
    ``kwargs`` override — ``source=`` included: ``load_prior("sd3_medium", source="DIR")`` is
    ``prior=sd3_medium prior.source=DIR``.  Without ``source=``, a file or folder of that name, or a hub
    id, is loaded as itself (a folder named like a preset — the README's ``--local-dir sd15`` — with a
    warning naming ``source=``)."""
    from ..priors import load_prior as load_source
    from ..operators.base import InputWarning

    if dtype is not None:
        kwargs["dtype"] = dtype
    override = kwargs.pop("source", None)
    name = isinstance(source, str) and "/" not in source and ":" not in source
    bare = name and (override is not None or not os.path.exists(source))  # with source=, the first argument is a preset
    if name and not bare and load_preset("prior", source) is not None:
        warn(f"{source!r} is a folder here and a preset of conf/prior/: the folder is loaded as itself, without the "
             f"preset's dtype, size and checkpointing; load_prior({source!r}, source={source!r}) loads it with them",
             InputWarning)
    preset = load_preset("prior", source) if bare else None
    if override is not None and preset is None:
        raise ValueError(f"source= replaces a preset's source (load_prior('sd3_medium', source=DIR)); {source!r} is "
                         f"not a preset of conf/prior/{did_you_mean(source, presets('prior'))}: "
                         f"{', '.join(presets('prior'))}")
    if preset is not None:
        if override is not None:
            preset["source"] = str(override)
        if preset.get("source") in (None, "???"):
            raise ValueError(missing_source_message(source, python=True))
        source = preset.pop("source")
        kwargs = {**preset, **kwargs}
    from ..priors.loading import HubUnavailable, check_device

    check_device(device)  # its own one line first: a missing GPU was followed by a guess at the prior's name
    try:
        return load_source(source, device=device, **kwargs)
    except HubUnavailable as err:
        raise FileNotFoundError(hub_preset_message(err, python=True) or str(err)) from None
    except ValueError as err:
        if not bare or preset is not None or source in ("gaussian", "gmm"):
            raise
        raise ValueError(f"{err}{prior_preset_hint(source)}") from None


def download_command(preset: str) -> str | None:
    """The ``hf download ...`` line in ``conf/prior/<preset>.yaml``'s header, or None."""
    path = conf_dir() / "prior" / f"{preset}.yaml"
    lines = [line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    return next((line for line in lines if line.startswith("hf download")), None)


def download_hint(preset: str) -> str:
    """``; download with: hf download ...`` for ``preset``, or ""."""
    command = download_command(preset)
    return f"; download with: {command}" if command else ""


def hub_preset_message(err, python: bool = False) -> str | None:
    """For a preset's hub id that cannot be had here (:class:`~ipsolve.priors.loading.HubUnavailable`):
    the preset's own download command (its ``--include``/``--exclude`` keep out the single-file
    weights) and how to run the preset on the downloaded folder; None for a hub id no preset names."""
    import shlex

    preset = next((name for name in presets("prior") if (load_preset("prior", name) or {}).get("source") == err.repo_id),
                  None)
    if preset is None:
        return None
    command = download_command(preset) or f"hf download {err.repo_id} --local-dir DIR"
    words = shlex.split(command)
    folder = words[words.index("--local-dir") + 1] if "--local-dir" in words[:-1] else "DIR"
    use = f"load_prior({preset!r}, source={folder!r})" if python else f"ipsolve prior={preset} prior.source={folder}"
    return f"{err.why}. On a machine with internet run `{command}`, copy the folder {folder} here and use it: {use}"


def prior_preset_hint(source: str) -> str:
    """``; or a preset of conf/prior/ (did you mean 'x'?): ...`` for a bare name that loaded nothing."""
    return (f"; or a preset of conf/prior/{did_you_mean(source, presets('prior'))}: "
            f"{', '.join(presets('prior'))}")


def prior_source(spec) -> tuple[str, dict]:
    """``(source, kwargs)`` for :func:`ipsolve.load_prior` from a source string, a preset name
    (``conf/prior/<name>.yaml``) or a mapping ``{source: ..., **kwargs}``."""
    if isinstance(spec, str):
        preset = load_preset("prior", spec)
        if preset is None:
            return spec, {}
        if preset.get("source") == "???":
            raise RunError(missing_source_message(spec))
        spec = preset
    params = dict(to_plain(spec))
    if "source" not in params or params["source"] in (None, "???"):
        raise RunError("prior settings need a 'source' (bundled:<name>, a diffusers directory or hub id, "
                       "an ADM .pt file, gaussian or gmm)")
    source = str(params.pop("source"))
    if "device" in params:  # (load_prior's own device= argument: a TypeError before)
        raise RunError(f"prior.device is not a prior setting: the run's device is the top-level device= "
                       f"(ipsolve device={params['device']}), which places the prior, the operator and the solve")
    return source, params


def build_prior(spec, device=None):
    """A :class:`~ipsolve.priors.Prior` from a prior object or anything :func:`prior_source` takes."""
    from ..priors import Prior, load_prior

    if isinstance(spec, Prior):
        return spec.to(device) if device is not None else spec
    from ..priors.loading import HubUnavailable

    source, kwargs = prior_source(spec)
    try:
        with logged_warnings() as said:
            prior = load_prior(source, device=device, **kwargs)
        prior.load_warnings = said  # (fp16, SD3 without T5, ...: summary.json keeps them with the run's warnings)
        return prior
    except HubUnavailable as err:
        raise RunError(hub_preset_message(err) or str(err)) from None
    except (FileNotFoundError, ValueError) as err:
        said = repr(source) in str(err) or str(source) in str(err)  # the message names it already
        bare = "/" not in source and ":" not in source and not os.path.exists(source) \
            and source not in ("gaussian", "gmm")  # a misspelt preset (prior=phantom-ddpm)
        if bare and source in presets("prior"):  # prior.source=sd15: the README's download folder, not here
            raise RunError(f"prior.source={source}: no folder {source!r} in {Path.cwd()} (prior.source is the folder "
                           f"the weights were downloaded to, relative to where ipsolve runs, or an absolute path; "
                           f"{source!r} is also the preset's name, which is not a source){download_hint(source)}") from None
        hint = prior_preset_hint(source) if bare else ""
        raise RunError((str(err) if said else f"cannot load prior {source!r}: {err}") + hint) from None


def registry_name(obj, registry: Mapping) -> str:
    for name, cls in registry.items():
        if type(obj) is cls:
            return name
    return type(obj).__name__


def matching_presets(spec: dict) -> list[str]:
    """The ``conf/operator`` presets whose settings all equal those of the operator description
    ``spec`` (``{"name": ..., **params}``), the ones that set the most of them (several when
    presets are the same, e.g. ``mri`` and ``mri_4x``); [] when none."""
    import json

    root = conf_dir()
    if root is None or not isinstance(spec, dict):
        return []
    norm = json.loads(json.dumps(spec, default=str))
    best, best_keys = [], -1
    for path in sorted((root / "operator").glob("*.yaml")):
        preset = json.loads(json.dumps(load_preset("operator", path.stem) or {}, default=str))
        if preset.get("name") != norm.get("name") or not all(norm.get(k) == v for k, v in preset.items() if k in norm):
            continue
        if len(preset) > best_keys:
            best, best_keys = [path.stem], len(preset)
        elif len(preset) == best_keys:
            best.append(path.stem)
    return best


def prior_kind_of_preset(name: str) -> str | None:
    """The prior kind (``diffusion``, ``flow``, ``latent-diffusion``, ``latent-flow``) of a
    ``conf/prior`` preset whose source is bundled, read from its ``model_index.json`` without
    loading it; None for other presets."""
    import json

    from ..priors.loading import BUNDLED_DIR

    preset = load_preset("prior", name) or {}
    source = str(preset.get("source", ""))
    if not source.startswith("bundled:"):
        return None
    folder = BUNDLED_DIR / source.split(":", 1)[1]
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return None
    flow = "FlowMatch" in str(index.get("scheduler", ""))
    inner = "flow" if flow or index.get("_class_name") == "FlowMatchingPipeline" else "diffusion"
    latent = any(k in index for k in ("vqvae", "vae"))
    return f"latent-{inner}" if latent else inner


def describe_operator(operator) -> dict:
    """The operator's registry name and settings (as recorded in ``summary.json``)."""
    from ..operators import OPERATORS

    params = dict(getattr(operator, "params", {}))
    for key, value in list(params.items()):  # a file setting (operator.mask=FILE): its contents count, not its name
        if f"{key}_sha256" in params:  # the operator gave its digest itself (an in-memory kernel)
            continue
        if isinstance(value, (str, Path)) and Path(str(value)).is_file():
            params[f"{key}_sha256"] = file_digest(value)
    return {"name": registry_name(operator, OPERATORS), **params}


def describe(operator, solver, prior) -> dict:
    """What defines the results of a run (also its resume fingerprint)."""
    from ..solvers import SOLVERS
    from ..solvers.base import prior_key

    sp = {k: v for k, v in solver.params().items() if k not in ("progress",)}
    params = list(prior.parameters())
    weights = {"parameters": sum(p.numel() for p in params),  # which weights made the results
               "checksum": f"{float(sum(p.detach().double().sum() for p in params)) if params else 0.0:.12g}"}
    return {"operator": describe_operator(operator),
            "solver": {"name": registry_name(solver, SOLVERS), **sp},
            "prior": {"source": getattr(prior, "source", type(prior).__name__), "kind": prior_key(prior),
                      "dtype": str(params[0].dtype).removeprefix("torch.") if params else None,
                      "image_size": prior.image_size, "channels": prior.channels, "weights": weights,
                      **({"conditioning": prior.conditioning} if getattr(prior, "conditioning", None) else {})}}


def build_models(operator, solver, prior, *, state, device, progress: bool):
    """``(operator, solver, prior, load_warnings)`` of a run: the operator and prior on ``device``, as
    objects, and the warnings logged while :func:`build_prior` loaded the prior (fp16 weights, SD3
    without T5, tiling that does not engage; a volume run's prior, loaded before, keeps them too),
    which summary.json keeps with the run's other warnings."""
    # the first process of each machine first: a download or cache fill happens once per machine
    with state.local_main_process_first():
        prior = build_prior(prior, device)
    load_warnings = list(getattr(prior, "load_warnings", None) or [])
    operator = build_operator(operator).to(device)
    solver = build_solver(solver, progress=(progress and state.process_index == 0) if not is_solver(solver) else None)
    return operator, solver, prior, load_warnings


@contextlib.contextmanager
def logged_warnings():
    """The messages the ``ipsolve`` logger warns with while the block runs (still logged as usual)."""
    import logging

    found: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            found.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logger = logging.getLogger("ipsolve")
    logger.addHandler(handler)
    try:
        yield found
    finally:
        logger.removeHandler(handler)


def check_fits(solver, operator, prior) -> None:
    """Raise :class:`RunError` (naming the solvers that fit) unless ``solver`` takes ``operator`` and ``prior``."""
    try:
        solver.check(operator, prior)
    except ValueError as err:
        from ..solvers import SOLVERS
        from ..solvers.base import prior_key

        if prior_key(prior) not in getattr(solver, "accepts", (prior_key(prior),)):  # the prior is the reason
            fits = [n for n, cls in SOLVERS.items() if prior_key(prior) in cls.accepts]
            root = conf_dir()
            presets = sorted(p.stem for p in (root / "prior").glob("*.yaml")) if root is not None else []
            priors = [p for p in presets if prior_kind_of_preset(p) in getattr(solver, "accepts", ())]
            raise RunError(solver.prior_mismatch(prior)
                           + (f"; the bundled prior that fits: {' or '.join(f'prior={p}' for p in priors)}"
                              if priors else "")
                           + (f"; or keep this prior with one of its solvers: {', '.join(fits)} (or their *_cpu "
                              f"presets)" if fits else "")) from None
        if _takes(type(solver), operator, prior):  # its settings are the reason (solver.zeta=-1): the message says so
            raise RunError(str(err)) from None
        # the operator is the reason: name the solvers that take this operator with this prior
        takes = [n for n, cls in SOLVERS.items() if prior_key(prior) in cls.accepts and _takes(cls, operator, prior)]
        raise RunError(f"{err}" + (f"; solvers that take this operator and prior: {', '.join(takes)} (or their *_cpu "
                                   f"presets)" if takes else "")) from None


def _takes(cls, operator, prior) -> bool:
    """Whether a default ``cls`` solver accepts ``operator`` with ``prior`` (its ``check``; a solver that
    cannot be built bare — BlindDPS needs its kernel prior — by its ``takes``)."""
    if callable(getattr(cls, "takes", None)):
        return bool(cls.takes(operator, prior))
    try:
        cls().check(operator, prior)
    except Exception:  # noqa: BLE001 - any refusal (or a solver that cannot be built bare) means no
        return False
    return True


def run_settings(operator, solver, prior, *, sigma: float, noise: str, seed: int, measurements: bool) -> dict:
    """What defines the results of a run: :func:`describe` plus the noise, the seed and the kind of input."""
    return {**describe(operator, solver, prior), "sigma": sigma, "noise": noise, "seed": int(seed),
            "measurements": bool(measurements)}
