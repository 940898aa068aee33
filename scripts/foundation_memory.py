"""Estimate the accelerator memory each solver needs with SD 1.5, SD3-medium and FLUX.1-dev priors.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python scripts/foundation_memory.py [--size 512] [--out docs/foundation_memory.md]

No GPU and no weights are needed: the models are built from their published configs, parameters
are counted on the meta device, and activations are measured by running the models on fake
tensors (``torch._subclasses.FakeTensorMode``: CPU dispatch, bf16 shapes, no data, no FLOPs)
with ``saved_tensors_hooks`` summing what autograd keeps for backward.  A tiny copy of every
architecture is also run for real in bf16 on the CPU to show that fake and real runs save the
same bytes.  See the written markdown for the method and its limits.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import weakref
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

from ipsolve.priors.architectures import FLUX_DEV, SD3_MEDIUM, SD15_UNET, VAE_16, VAE_SD  # noqa: E402
from torch.autograd.graph import saved_tensors_hooks  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

torch.set_num_threads(1)
BF16 = torch.bfloat16
GIB = 2 ** 30
START = time.time()

# ---------------------------------------------------------------- published configurations
UNET, SD3, FLUX, VAE4, VAE16 = SD15_UNET, SD3_MEDIUM, FLUX_DEV, VAE_SD, VAE_16  # ipsolve.priors.architectures
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768,
              vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu")
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              projection_dim=1280, vocab_size=49408, max_position_embeddings=77, hidden_act="gelu")
T5XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
             feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)
# text encoders each family loads (transformers class, config); published sizes 123M, 695M, 4.76B
ENCODERS = {"SD 1.5": [("CLIP-L", "CLIPTextModel", CLIP_L)],
            "SD3-medium": [("CLIP-L", "CLIPTextModelWithProjection", CLIP_L),
                           ("OpenCLIP bigG", "CLIPTextModelWithProjection", CLIP_G),
                           ("T5-XXL encoder", "T5EncoderModel", T5XXL)],
            "FLUX.1-dev": [("CLIP-L", "CLIPTextModel", CLIP_L), ("T5-XXL encoder", "T5EncoderModel", T5XXL)]}
STEPS = 3  # DMPlug: 3 DDIM steps; FMPlug: 3 Euler steps (the FMPlug paper's SD3 setting, NFE 3 per iteration)


def log(msg: str) -> None:
    print(f"[{time.time() - START:6.1f} s] {msg}", flush=True)


def gib(b: float) -> str:
    return f"{b / GIB:.2f}"


def mib(b: float) -> str:
    return f"{b / 2 ** 20:.1f}"


# ---------------------------------------------------------------- measuring tools
class Saved:
    """Bytes of the tensors autograd saves for backward inside the ``with`` block (storages
    deduplicated, tensors kept alive so addresses cannot be reused, weights excluded)."""

    def __init__(self, exclude: set):
        self.exclude, self.keep = exclude, {}

    def add(self, t: torch.Tensor) -> None:
        s = t.untyped_storage()
        if s._cdata not in self.exclude and s._cdata not in self.keep:
            self.keep[s._cdata] = (s.nbytes(), t)

    def _pack(self, t):
        self.add(t)
        return t

    def __enter__(self):
        self._hooks = saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(n for n, _ in self.keep.values())


class Live(TorchDispatchMode):
    """Simulated allocator: bytes of the storages created inside the ``with`` block that are
    still referenced (from Python or from autograd), and their peak; storages are freed when
    their last tensor dies, as PyTorch's caching allocator frees blocks (no fragmentation)."""

    def __init__(self):
        super().__init__()
        self.refs, self.size, self.cur, self.peak = {}, {}, 0, 0

    def _drop(self, key):
        self.refs[key] -= 1
        if not self.refs[key]:
            self.cur -= self.size.pop(key)
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = None
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = t.untyped_storage()._cdata
            if key not in self.refs:
                if inputs is None:
                    inputs = {a.untyped_storage()._cdata for a in tree_flatten((args, kwargs))[0]
                              if isinstance(a, torch.Tensor)}
                if key in inputs:  # a view of a tensor made before the block (weights, inputs)
                    continue
                self.refs[key], self.size[key] = 0, t.untyped_storage().nbytes()
                self.cur += self.size[key]
                self.peak = max(self.peak, self.cur)
            self.refs[key] += 1
            weakref.finalize(t, self._drop, key)
        return out


def storages(*modules) -> set:
    return {t.untyped_storage()._cdata for m in modules for t in list(m.parameters()) + list(m.buffers())}


def saved_bytes(fn, modules, math_attention: bool = False) -> int:
    """Bytes autograd saves during one call of ``fn`` (weights of ``modules`` excluded)."""
    with Saved(storages(*modules)) as s:
        if math_attention:
            with sdpa_kernel(SDPBackend.MATH):
                fn()
        else:
            fn()
    return s.total


def checkpoint_units(fn, model, modules) -> tuple[int, int]:
    """Emulate diffusers' non-reentrant checkpointing: (bytes kept = outside-unit saves + unit
    inputs, largest single unit's saves = the recomputation peak)."""
    exclude = storages(*modules)
    stack, units = [], []

    def ckpt(module, *args):
        if len(stack) > 1:  # nested unit: counted inside its outer unit
            return module(*args)
        for a in args:
            if isinstance(a, torch.Tensor):
                stack[0].add(a)
        inner = Saved(exclude)
        stack.append(inner)
        with inner:
            out = module(*args)
        stack.pop()
        units.append(inner.total)
        return out

    model.enable_gradient_checkpointing(gradient_checkpointing_func=ckpt)
    outer = Saved(exclude)
    stack.append(outer)
    with outer:
        fn()
    model.disable_gradient_checkpointing()
    return outer.total, max(units, default=0)


def live_peak(fn) -> int:
    """Peak bytes allocated during ``fn`` beyond what existed before (simulated allocator)."""
    with Live() as tracker:
        fn()
    return tracker.peak


# ---------------------------------------------------------------- models and their calls
def param_count(cls_name: str, cfg: dict, lib: str = "diffusers") -> int:
    """Exact parameter count, built on the meta device."""
    import diffusers
    import transformers

    with torch.device("meta"):
        if lib == "diffusers":
            model = getattr(diffusers, cls_name)(**cfg)
        else:
            cfg_cls = transformers.T5Config if cls_name.startswith("T5") else transformers.CLIPTextConfig
            model = getattr(transformers, cls_name)(cfg_cls(**cfg))
    return sum(p.numel() for p in model.parameters())


def build(cls_name: str, cfg: dict):
    """A bf16 model with frozen weights (as ``load_prior`` leaves it), on fake or real tensors
    depending on the active mode."""
    import diffusers

    model = getattr(diffusers, cls_name)(**cfg).eval().requires_grad_(False)
    for m in model.modules():  # cast in place (fake tensors cannot be swapped by ``.to``)
        for name, p in m._parameters.items():
            if p is not None and p.is_floating_point():
                m._parameters[name] = torch.nn.Parameter(p.detach().to(BF16), requires_grad=False)
        for name, b in m._buffers.items():
            if b is not None and b.is_floating_point():
                m._buffers[name] = b.to(BF16)
    return model


def network_call(kind: str, model, latent: int, text: int, ctx_dim: int, pooled: int):
    """``f(z, t)`` calling the network as ipsolve's foundation wrappers do (batch 1, no CFG)."""
    from diffusers import FluxPipeline

    emb = torch.randn(1, text, ctx_dim, dtype=BF16)
    pool = torch.randn(1, pooled, dtype=BF16) if pooled else None
    if kind == "unet":
        return lambda z, t: model(z, t, encoder_hidden_states=emb, return_dict=False)[0]
    if kind == "sd3":
        return lambda z, t: model(hidden_states=z, timestep=t * 1000, encoder_hidden_states=emb,
                                  pooled_projections=pool, return_dict=False)[0]
    txt_ids = torch.zeros(text, 3, dtype=BF16)
    img_ids = FluxPipeline._prepare_latent_image_ids(1, latent // 2, latent // 2, "cpu", BF16)
    guidance = torch.full((1,), 3.5, dtype=torch.float32)

    def flux(z, t):
        b, c, h, w = z.shape
        out = model(hidden_states=FluxPipeline._pack_latents(z, b, c, h, w), timestep=t, guidance=guidance,
                    pooled_projections=pool, encoder_hidden_states=emb, txt_ids=txt_ids, img_ids=img_ids,
                    return_dict=False)[0]
        return FluxPipeline._unpack_latents(out, h, w, 1)
    return flux


def latent_input(kind: str, channels: int, latent: int):
    """A latent requiring grad and the timestep the solver passes (flow: σ, learnable in FMPlug)."""
    z = torch.randn(1, channels, latent, latent, dtype=BF16, requires_grad=True)
    t = torch.tensor([500]) if kind == "unet" else torch.tensor([0.5], requires_grad=True)
    return z, t


FAMILIES = {  # name: (network class, config, kind, latent channels, VAE config, text tokens, text dim, pooled)
    "SD 1.5": ("UNet2DConditionModel", UNET, "unet", 4, VAE4, 77, 768, 0),
    "SD3-medium": ("SD3Transformer2DModel", SD3, "sd3", 16, VAE16, 77 + 256, 4096, 2048),
    "FLUX.1-dev": ("FluxTransformer2DModel", FLUX, "flux", 16, VAE16, 512, 4096, 768),
}
SOLVERS = {"SD 1.5": ("DPS", "ReSample", "DMPlug", "DAPS", "sampling"),
           "SD3-medium": ("FMPlug", "sampling"), "FLUX.1-dev": ("FMPlug", "sampling")}


# ---------------------------------------------------------------- measurements
def network_saved(fam: str, cfg: dict, size: int, fake) -> dict:
    """Saved bytes of one forward of the network ``cfg`` at ``size`` px: checkpointing off, on
    (real diffusers checkpointing), the emulated checkpoint split and the largest unit."""
    cls, _, kind, ch, _, text, dim, pooled = FAMILIES[fam]
    latent = size // 8
    with fake:
        model = build(cls, cfg)
        f = network_call(kind, model, latent, text, dim, pooled)
        z, t = latent_input(kind, ch, latent)
        out = {"off": saved_bytes(lambda: f(z, t), [model])}
        model.enable_gradient_checkpointing()
        out["on"] = saved_bytes(lambda: f(z, t), [model])
        model.disable_gradient_checkpointing()
        out["on_emulated"], out["unit"] = checkpoint_units(lambda: f(z, t), model, [model])
    return out


def decoder_saved(vae_cfg: dict, size: int, fake) -> dict:
    """Saved bytes of ``vae.decode`` with gradient at ``size`` px, checkpointing off / on."""
    with fake:
        vae = build("AutoencoderKL", vae_cfg)
        z = torch.randn(1, vae_cfg["latent_channels"], size // 8, size // 8, dtype=BF16, requires_grad=True)
        f = lambda: vae.decode(z).sample  # noqa: E731
        out = {"off": saved_bytes(f, [vae])}
        vae.enable_gradient_checkpointing()
        out["on"] = saved_bytes(f, [vae])
        vae.disable_gradient_checkpointing()
        out["on_emulated"], out["unit"] = checkpoint_units(f, vae, [vae])
    return out


def replay(fam: str, size: int, fake) -> dict:
    """Full-depth fake models: forward-saved bytes (checks the extrapolation), math-attention
    bytes, no-grad transients, and a simulated-allocator replay of each solver's gradient step."""
    cls, cfg, kind, ch, vae_cfg, text, dim, pooled = FAMILIES[fam]
    latent = size // 8
    res = {}
    with fake:
        net = build(cls, cfg)
        vae = build("AutoencoderKL", vae_cfg)
        f = network_call(kind, net, latent, text, dim, pooled)
        z, t = latent_input(kind, ch, latent)
        res["full_off"] = saved_bytes(lambda: f(z, t), [net])
        res["math_off"] = saved_bytes(lambda: f(z, t), [net], math_attention=True)
        zd = torch.randn(1, ch, latent, latent, dtype=BF16, requires_grad=True)
        res["dec_math_off"] = saved_bytes(lambda: vae.decode(zd).sample, [vae], math_attention=True)
        with torch.no_grad():
            res["T_net"] = live_peak(lambda: f(z, t))
            res["T_dec"] = live_peak(lambda: vae.decode(z).sample)
            x = torch.randn(1, 3, size, size, dtype=BF16)
            res["T_enc"] = live_peak(lambda: vae.encode(x).latent_dist.mode())
        y = torch.randn(1, 3, size, size)

        def loss(img):
            return (y - img.float()).flatten(1).norm(dim=1).sum()

        def dps():  # ε/v with gradient → x̂0 → decoder → ‖y − A(D(x̂0))‖ → ∇z
            zz = z.detach().requires_grad_()
            x0 = zz - 0.5 * f(zz, t)
            torch.autograd.grad(loss(vae.decode(x0).sample), zz)

        def latent_fit():  # ReSample's latent fit / DAPS's data gradient: through the decoder only
            v = z.detach().requires_grad_()
            torch.autograd.grad(loss(vae.decode(v).sample), v)

        def plug():  # DMPlug / FMPlug: 3 network calls kept for backward, then the decoder
            zz = z.detach().requires_grad_()
            tt = t.detach().requires_grad_() if t.is_floating_point() else t
            xk = zz
            for _ in range(STEPS):
                xk = xk + (1.0 / STEPS) * f(xk, tt)
            torch.autograd.grad(loss(vae.decode(xk).sample), [zz] + ([tt] if tt.requires_grad else []))

        def resample():
            dps()
            latent_fit()

        def daps():
            with torch.no_grad():
                f(z, t)
            latent_fit()

        def sample():
            with torch.no_grad():
                vae.decode(z - f(z, t)).sample

        steps = {"DPS": dps, "ReSample": resample, "DMPlug": plug, "FMPlug": plug, "DAPS": daps, "sampling": sample}
        for ckpt in (False, True):
            for m in (net, vae):
                (m.enable_gradient_checkpointing if ckpt else m.disable_gradient_checkpointing)()
            for solver in SOLVERS[fam]:
                res[("replay", solver, ckpt)] = live_peak(steps[solver])
    return res


def self_check(fake) -> list[tuple[str, int, int]]:
    """Tiny copies of each architecture, saved bytes real (bf16 CPU) vs fake: must be equal."""
    tiny = {
        "UNet2DConditionModel": (dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                      layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
                                      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")), "unet", 4, 8, 32, 0),
        "SD3Transformer2DModel": (dict(sample_size=16, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=16,
                                       num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=32,
                                       pooled_projection_dim=32, out_channels=4, pos_embed_max_size=16),
                                  "sd3", 4, 8, 32, 32),
        "FluxTransformer2DModel": (dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                        pooled_projection_dim=16, guidance_embeds=True, axes_dims_rope=(4, 6, 6)),
                                   "flux", 4, 8, 32, 16),
    }
    rows = []
    for cls, (cfg, kind, ch, text, dim, pooled) in tiny.items():
        for ckpt in (False, True):
            got = []
            for mode in (None, fake):
                torch.manual_seed(0)
                with (mode or torch.device("cpu")):
                    model = build(cls, cfg)
                    if ckpt:
                        model.enable_gradient_checkpointing()
                    f = network_call(kind, model, 16, text, dim, pooled)
                    z, t = latent_input(kind, ch, 16)
                    got.append(saved_bytes(lambda: f(z, t), [model]))
            rows.append((f"{cls}{' + checkpointing' if ckpt else ''}", *got))
    vae_cfg = dict(block_out_channels=(32, 64), layers_per_block=1, latent_channels=4,
                   down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    for ckpt in (False, True):
        got = []
        for mode in (None, fake):
            with (mode or torch.device("cpu")):
                vae = build("AutoencoderKL", vae_cfg)
                if ckpt:
                    vae.enable_gradient_checkpointing()
                z = torch.randn(1, 4, 16, 16, dtype=BF16, requires_grad=True)
                got.append(saved_bytes(lambda: vae.decode(z).sample, [vae]))
        rows.append((f"AutoencoderKL.decode{' + checkpointing' if ckpt else ''}", *got))
    return rows


# ---------------------------------------------------------------- estimates and report
def estimate(solver: str, n: dict, d: dict, tr: dict, ckpt: bool) -> int:
    """Activation bytes of one solver step (see the markdown for the formulas)."""
    na, da = (n["on"], d["on"]) if ckpt else (n["off"], d["off"])
    recompute = max(n["unit"], d["unit"]) if ckpt else 0
    dec = da + (d["unit"] if ckpt else 0)
    if solver in ("DPS", "ReSample"):
        return max(na + da + recompute, dec, tr["T_enc"])
    if solver in ("DMPlug", "FMPlug"):
        return STEPS * na + da + recompute
    if solver == "DAPS":
        return max(tr["T_net"], dec, tr["T_enc"])
    return max(tr["T_net"], tr["T_dec"])  # sampling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="image size in pixels (multiple of 16)")
    ap.add_argument("--out", default="docs/foundation_memory.md", help="markdown file to write")
    args = ap.parse_args()
    size = args.size
    if size % 16:
        sys.exit("--size must be a multiple of 16")
    from torch._subclasses.fake_tensor import FakeTensorMode

    import diffusers
    import transformers
    fake = FakeTensorMode(allow_non_fake_inputs=True)

    log("self-check: tiny models, saved bytes real bf16 CPU vs fake tensors")
    checks = self_check(fake)
    for name, real, fk in checks:
        log(f"  {name}: real {real} B, fake {fk} B {'OK' if real == fk else 'MISMATCH'}")

    log("parameter counts (meta device)")
    params = {}
    for fam, (cls, cfg, _, _, vae_cfg, *_) in FAMILIES.items():
        params[fam] = {"net": param_count(cls, cfg), "vae": param_count("AutoencoderKL", vae_cfg),
                       "enc": [(n, param_count(c, k, "transformers")) for n, c, k in ENCODERS[fam]]}
        log(f"  {fam}: network {params[fam]['net']:,}, VAE {params[fam]['vae']:,}, "
            + ", ".join(f"{n} {c:,}" for n, c in params[fam]["enc"]))

    log(f"reduced-depth transformers at {size} px (real width and token counts)")
    blocks = {}
    for depth in (1, 2):
        blocks[("SD3-medium", depth)] = network_saved("SD3-medium", dict(SD3, num_layers=depth), size, fake)
        log(f"  SD3 {depth} joint block(s): {blocks[('SD3-medium', depth)]}")
    for dd, ss in ((1, 1), (2, 1), (1, 2)):
        blocks[("FLUX.1-dev", dd, ss)] = network_saved("FLUX.1-dev", dict(FLUX, num_layers=dd, num_single_layers=ss),
                                                       size, fake)
        log(f"  FLUX {dd} double + {ss} single: {blocks[('FLUX.1-dev', dd, ss)]}")
    keys = ("off", "on", "on_emulated", "unit")
    net, per_block = {}, {}
    s1, s2 = blocks[("SD3-medium", 1)], blocks[("SD3-medium", 2)]
    per_block["SD3 joint block"] = {k: s2[k] - s1[k] for k in keys[:3]}
    per_block["SD3 base (embeddings, last pre-only block, output)"] = {k: s1[k] for k in keys[:3]}
    net["SD3-medium"] = {k: s1[k] + (SD3["num_layers"] - 1) * (s2[k] - s1[k]) for k in keys[:3]}
    net["SD3-medium"]["unit"] = max(s1["unit"], s2["unit"])
    f11, f21, f12 = (blocks[("FLUX.1-dev",) + k] for k in ((1, 1), (2, 1), (1, 2)))
    per_block["FLUX double block"] = {k: f21[k] - f11[k] for k in keys[:3]}
    per_block["FLUX single block"] = {k: f12[k] - f11[k] for k in keys[:3]}
    per_block["FLUX base (1 double + 1 single, embeddings, output)"] = {k: f11[k] for k in keys[:3]}
    net["FLUX.1-dev"] = {k: f11[k] + (FLUX["num_layers"] - 1) * (f21[k] - f11[k])
                         + (FLUX["num_single_layers"] - 1) * (f12[k] - f11[k]) for k in keys[:3]}
    net["FLUX.1-dev"]["unit"] = max(f11["unit"], f21["unit"], f12["unit"])

    log(f"full SD 1.5 UNet at {size} px and {size // 2} px")
    net["SD 1.5"] = network_saved("SD 1.5", UNET, size, fake)
    unet_half = network_saved("SD 1.5", UNET, size // 2, fake)
    log(f"  {size} px: {net['SD 1.5']}; {size // 2} px: {unet_half}")

    log(f"VAE decoders with gradient at {size // 2} px and {size} px")
    dec, dec_half = {}, {}
    for fam in FAMILIES:
        vcfg = FAMILIES[fam][4]
        dec[fam] = decoder_saved(vcfg, size, fake)
        dec_half[fam] = decoder_saved(vcfg, size // 2, fake)
        log(f"  {fam} decoder: {size} px {dec[fam]}; {size // 2} px {dec_half[fam]}")

    log("full-depth fake models: extrapolation check, no-grad transients, solver-step replays")
    rep = {}
    for fam in FAMILIES:
        rep[fam] = replay(fam, size, fake)
        log(f"  {fam}: full-depth saved {rep[fam]['full_off']} B (extrapolated {net[fam]['off']} B), "
            f"no-grad net {rep[fam]['T_net']} B, dec {rep[fam]['T_dec']} B, enc {rep[fam]['T_enc']} B")

    runtime = time.time() - START
    log(f"writing {args.out}")
    write_report(Path(args.out), size, params, checks, per_block, net, unet_half, dec, dec_half, rep, runtime,
                 versions=(torch.__version__, diffusers.__version__, transformers.__version__))
    log("done")


MEASURED_MARK = "**GPU measurements"


def measured_section(path) -> str:
    """The GPU-measurement block of an existing page (from its ``**GPU measurements`` paragraph to
    the estimates' first line), or "" — a rerun on a CPU keeps what a GPU measured."""
    path = Path(path)
    if not path.is_file():
        return ""
    text = path.read_text()
    start = text.find(MEASURED_MARK)
    if start < 0:
        return ""
    ends = [i for i in (text.find("**The rest of this page", start), text.find("**These are estimates", start)) if i >= 0]
    return text[start:min(ends)].rstrip() + "\n" if ends else ""


def write_report(path, size, params, checks, per_block, net, unet_half, dec, dec_half, rep, runtime, versions):
    """The markdown report: command, method, tables, limits."""
    L = []
    add = L.append
    add(f"# Accelerator memory of the solvers with foundation priors ({size} × {size} px)\n")
    measured = measured_section(path)  # the GPU measurements added to the page by hand are kept, not overwritten
    if measured:
        add(measured)
    add(("**The rest of this page: estimates computed on a CPU, not GPU measurements.** " if measured else
         "**These are estimates computed on a CPU — no GPU was available — not GPU measurements.** ") +
        "They come from exact parameter counts and from the bytes autograd saves for backward, measured "
        "on fake (data-less) tensors with PyTorch's CPU dispatch.  A GPU run can differ; see *Limits*.\n")
    add("Produced by\n\n```bash\nOMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python scripts/foundation_memory.py"
        f"{'' if size == 512 else f' --size {size}'} --out {path}\n```\n")
    add(f"(torch {versions[0]}, diffusers {versions[1]}, transformers {versions[2]}; {runtime:.0f} s on one CPU "
        "thread).  Batch 1, bf16 weights and activations, weights frozen as `load_prior` leaves them, "
        "no classifier-free guidance (guidance > 1 on SD / SD3 doubles the network's activations), "
        "gradient checkpointing = `prior.gradient_checkpointing=true` (diffusers' own, in the network and "
        "the VAE).  GiB = 2³⁰ bytes.\n")

    add("## Peak per solver\n")
    add("`weights` = network + whole VAE in bf16; `activations` = the step's saved tensors from the "
        "formulas below; `+20 %` = allocator / workspace allowance on weights + activations, kept "
        "separate; `estimate` = the sum.  `replay` is an independent check: the whole solver step "
        "(forward, decoder, loss, backward) run on the full-depth fake models under a simulated "
        "allocator that frees a tensor when its last reference dies — weights + its peak; it includes "
        "gradient buffers and checkpoint recomputation but no fragmentation or workspaces.\n")
    add("| prior | solver | checkpointing | weights | activations | +20 % | **estimate** | replay |")
    add("|---|---|---|---:|---:|---:|---:|---:|")
    for fam, solvers in SOLVERS.items():
        w = 2 * (params[fam]["net"] + params[fam]["vae"])
        for solver in solvers:
            for ckpt in ((False,) if solver == "sampling" else (False, True)):
                a = estimate(solver, net[fam], dec[fam], rep[fam], ckpt)
                over = 0.2 * (w + a)
                label = "sampling / no gradient" if solver == "sampling" else solver
                mode = "–" if solver == "sampling" else "on" if ckpt else "off"
                sim = w + rep[fam][("replay", solver, ckpt)]
                add(f"| {fam} | {label} | {mode} | {gib(w)} | {gib(a)} | {gib(over)} | **{gib(w + a + over)}** | "
                    f"{gib(sim)} |")
    add("")
    add("Solvers per family (memory measured or estimated for these): SD 1.5 (a diffusion prior) runs DPS, "
        "ReSample, DMPlug and DAPS (also RED-diff); SD3 and FLUX (flow priors) run FMPlug (also PnP-Flow, D-Flow, "
        "FlowDPS).  Checkpointing changes nothing for sampling (no gradient).\n")

    add("### Loading: text encoders resident\n")
    add("The prompt is embedded once and the encoders are released before solving.  `all resident` is a "
        "pipeline with every component on the accelerator at once (e.g. `pipe.to('cuda')`); ipsolve's "
        "loader moves only the text encoders to the device, encodes, releases them and only then moves "
        "the network and VAE there, so its load peak is `encoders only` (plus a small encoding "
        "transient, not counted).\n")
    add("| prior | text encoders (parameters) | encoders only | all resident (encoders + network + VAE) | +20 % |")
    add("|---|---|---:|---:|---:|")
    for fam in FAMILIES:
        enc = sum(c for _, c in params[fam]["enc"])
        total = 2 * (enc + params[fam]["net"] + params[fam]["vae"])
        names = ", ".join(f"{n} {c / 1e6:,.0f} M" for n, c in params[fam]["enc"])
        add(f"| {fam} | {names} | {gib(2 * enc)} | {gib(total)} | {gib(0.2 * total)} |")
    add("")

    add("## Parameters (exact, meta device)\n")
    add("| prior | network | VAE (encoder + decoder) | text encoders |")
    add("|---|---:|---:|---:|")
    for fam in FAMILIES:
        p = params[fam]
        add(f"| {fam} | {p['net']:,} | {p['vae']:,} | {sum(c for _, c in p['enc']):,} |")
    add("")

    add(f"## Activations (saved for backward, one forward at {size} px)\n")
    add("Per block, from reduced-depth copies at the real width and real token counts (SD3: 1 and 2 "
        "joint blocks — the last block of SD3 is a context-pre-only block, so the 1-block model is the base; "
        "FLUX: 1/1, 2/1 and 1/2 double/single blocks), extrapolated linearly to 24 (SD3) and 19 + 38 (FLUX) "
        "blocks.  With checkpointing the saved tensors are only each block's inputs.\n")
    add("| part | checkpointing off (MiB) | checkpointing on (MiB) |")
    add("|---|---:|---:|")
    for name, v in per_block.items():
        add(f"| {name} | {mib(v['off'])} | {mib(v['on'])} |")
    add("")
    add("| network | off | on (kept) | largest recomputed unit | full-depth fake run, off | "
        "off, if attention fell back to the math kernel |")
    add("|---|---:|---:|---:|---:|---:|")
    for fam in FAMILIES:
        n = net[fam]
        how = "measured directly" if fam == "SD 1.5" else "extrapolated"
        add(f"| {fam} ({how}) | {gib(n['off'])} GiB | {gib(n['on'])} GiB | {mib(n['unit'])} MiB | "
            f"{gib(rep[fam]['full_off'])} GiB | {gib(rep[fam]['math_off'])} GiB |")
    add("")
    same_ckpt = all(x["on"] == x["on_emulated"] for x in [*net.values(), *dec.values()])
    add(f"The SD 1.5 UNet was measured whole at {size} px (fake tensors need no memory), so no ×4 "
        f"scaling from {size // 2} px was needed; for reference, {size // 2} px × 4 = "
        f"{gib(4 * unet_half['off'])} GiB (off) against {gib(net['SD 1.5']['off'])} GiB measured.  "
        "The extrapolated transformer figures equal the full-depth fake runs (column 5) "
        f"{'exactly' if all(net[f]['off'] == rep[f]['full_off'] for f in FAMILIES) else 'only approximately'}.  "
        "The emulated checkpoint split (units run under their own counters) reproduces the real "
        f"checkpointed totals {'exactly' if same_ckpt else 'approximately'}.\n")
    add(f"Decoders were also measured whole at {size} px; the {size // 2} px × 4 column is the scaling check.\n")
    add("| VAE decoder with gradient | off | on (kept) | largest recomputed unit | "
        f"{size // 2} px × 4, off | off, math attention |")
    add("|---|---:|---:|---:|---:|---:|")
    for fam, label in (("SD 1.5", "SD 1.5 (4 latent channels)"), ("SD3-medium", "SD3 / FLUX (16 latent channels)")):
        d = dec[fam]
        add(f"| {label} | {gib(d['off'])} GiB | {gib(d['on'])} GiB | {mib(d['unit'])} MiB | "
            f"{gib(4 * dec_half[fam]['off'])} GiB | {gib(rep[fam]['dec_math_off'])} GiB |")
    add("")
    add("No-gradient transients (simulated allocator, peak beyond the weights): "
        + "; ".join(f"{fam}: network {gib(rep[fam]['T_net'])}, decode {gib(rep[fam]['T_dec'])}, "
                    f"encode {gib(rep[fam]['T_enc'])} GiB" for fam in FAMILIES) + ".\n")

    add("## Method\n")
    add("Weights: each model is instantiated from its published config on the meta device and its "
        "parameters counted (2 bytes each in bf16).  Activations: each model is built from the same "
        "config on `FakeTensorMode` tensors, which carry shapes, dtypes, strides and storage aliasing and "
        "go through PyTorch's CPU dispatch (the CPU flash-attention kernel is chosen, as on a real CPU "
        "run) without data or arithmetic — on the 2-core machine it was written on a real bf16 matmul ran at "
        "≈ 0.4 GFLOP/s, which rules out real runs at full width.  During one forward with the latent "
        "(and, for the flow models, the time) requiring grad, `torch.autograd.graph.saved_tensors_hooks` "
        "sums the bytes of every tensor saved for backward, one count per storage, weights excluded.  "
        "The weights are frozen, as in every solver here, so autograd does not keep the inputs of "
        "convolutions and linear layers for weight gradients: the figures are far below training "
        "memory.  The fake/real equivalence is checked at the start of every run on tiny copies of "
        "each architecture run for real in bf16 on the CPU (table below).  Gradient checkpointing is "
        "diffusers' non-reentrant `torch.utils.checkpoint`: the hooks then see only each unit's inputs; "
        "the largest unit's own saves — what is rebuilt during its backward — come from running each "
        "unit under its own counter.  Per solver step (activations):\n")
    add("* DPS: one network forward + decoder, `N + D`; with checkpointing `Nc + Dc + max(unit)`.")
    add("* ReSample: its DPS step as DPS; its latent fits hold only the decoder (`D`), its pixel fits "
        "re-encode without gradient — both below the DPS step.")
    add(f"* DMPlug ({STEPS} DDIM steps) and FMPlug ({STEPS} Euler steps): `{STEPS}·N + D`; with checkpointing "
        f"`{STEPS}·Nc + Dc + max(unit)`.")
    add("* DAPS: no gradient through the network (its peak transient), but its latent data gradient "
        "goes through the decoder: `max(T_net, D)`.")
    add("* Sampling: `max(T_net, T_decode)`.\n")
    add("`T` (no-gradient transients) and the `replay` column come from a `TorchDispatchMode` that "
        "follows every storage created and frees it when its last tensor — in Python or held by "
        "autograd — dies.\n")
    add("Self-check, bytes saved for backward by tiny copies (real bf16 CPU run / fake tensors):\n")
    add("| tiny model | real (B) | fake (B) | equal |")
    add("|---|---:|---:|---|")
    for name, real, fk in checks:
        add(f"| {name} | {real:,} | {fk:,} | {'yes' if real == fk else '**no**'} |")
    add("")

    add("## Limits\n")
    add("* **CPU, not GPU.** Nothing here ran on an accelerator.  The byte counts follow the CPU kernels' "
        "choices: CPU SDPA uses a flash-attention kernel that saves q, k, v, the output and a float32 "
        "log-sum-exp, as PyTorch's flash and memory-efficient kernels do on a GPU (plus an RNG state).  "
        "Where a GPU run ends up in the math kernel (no fused kernel accepts the inputs, or a non-SDPA "
        "attention processor such as diffusers' `AttnProcessor`) the L × L attention probabilities are "
        "saved: see the *math attention* columns.")
    add("* **Workspaces and the allocator** are not modelled: cuDNN convolution workspaces (can be "
        "hundreds of MiB for the VAE decoder's 512-px convolutions), cuBLAS workspaces, the CUDA context "
        "(≈ 0.3–0.6 GiB, outside PyTorch's allocator), fragmentation and cached blocks.  The +20 % column "
        "is an allowance for them, not a measurement.")
    add("* **Backward transients**: the estimate counts saved tensors; gradient buffers alive during "
        "backward are not in it — compare with `replay`, which includes them (and checkpoint "
        "recomputation) for the real solver-step structure.")
    add("* **Random weights, published configs**: memory depends only on shapes, so random weights are "
        "enough, but a checkpoint whose config differs (e.g. SD3.5's qk-norm and dual-attention blocks) "
        "needs a rerun with its config.  Batch 1 only; activations scale about linearly with batch and "
        "with CFG's doubled batch.")
    add("* **Linear extrapolation** over blocks is exact when blocks are identical in shape (checked "
        "against full-depth fake runs above); the UNet and the decoders were measured whole.")
    add("* **VAE tiling / slicing** (`prior.vae_tiling`, `prior.vae_slicing`) are not modelled; the "
        "decoder's block-level checkpointing still rebuilds a whole up-block at full resolution (the "
        "largest recomputed unit above), so it saves less than the network's.")
    add("* **Optimiser state** (Adam on a 16 × 64 × 64 latent) and the measurement/operator tensors are "
        "a few MiB and are ignored; the BKSE kernel network and LPIPS are not included.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    from ipsolve.runner.errors import script_main

    script_main(main)
