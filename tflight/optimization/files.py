"""Writing what `optimize` found: the chosen model (re-verified from its file), the rest.

Files go to the output folder, each written atomically: `model.tflite` (only
when a candidate meets every budget), `pareto/<name>.tflite` for the Pareto
front, `data/{train,validation,test}.npz` (the exact splits) and, for a model given
as an object, `source_model.keras`, so that the commands in the report have
the files they read; `report.json` and `report.html`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from tflight.optimization.result import CandidateResult, OptimizeResult

__all__ = ["commands_for", "write_outputs"]


def _atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _save_npz(path: str, x: np.ndarray, y: np.ndarray) -> None:
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, x=x, y=y)
    os.replace(tmp, path)


def _save_source(model: Any, out: str, files: dict[str, str]) -> str:
    """Saves a model given as an object, so the reproducing commands have a file to read."""
    path = os.path.join(out, "source_model.keras")
    tmp = os.path.join(out, f".source_model.{os.getpid()}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    files["source model"] = path
    return path


def commands_for(c: CandidateResult, *, model: str, data: dict[str, str], device: str,
                 objective: str, max_drop: float, epochs: int, profile: str) -> list[str]:
    """The individual `tflight` commands that rebuild candidate `c`."""
    spec, p = c.spec, c.spec.get("params", {})
    train, val = data["train"], data["validation"]
    target = " -t edgetpu" if device == "edgetpu" else ""
    name = spec["name"]
    if spec["kind"] == "ptq" and spec["storage"] != "int4":
        return [f"tflight convert {model} -m {spec['storage']} -c {train}{target} "
                f"-o {name}.tflite"]
    if spec["kind"] == "ptq":
        return [f"python -c \"import numpy as np, tflight; x = np.load('{train}')['x'][:200]; "
                f"tflight.quantize_int4('{model}', calibration_data=x).save('{name}.tflite')\""]
    if spec["kind"] == "search":
        return [f"tflight quantize {model} --data {val} --calibration {train} --max-drop "
                f"{max_drop:g} --objective {objective} --profile {profile} -o {name}.tflite"]
    cmds = []
    source = model
    if p.get("keep") is not None:
        flag = f"--latency {p['keep']:g} --profile {profile}" if objective == "latency" else (
            f"--flops {p['keep']:g}")
        distill = " --distill" if p.get("distill") else ""
        cmds.append(f"tflight shrink {model} --method channels --sensitivity {val} {flag} "
                    f"--data {train} --epochs {epochs}{distill} -o {name}-shrunk.keras")
        source = f"{name}-shrunk.keras"
    elif p.get("depth") is not None:
        cmds.append(f"python -c \"import keras, numpy as np, tflight.shrink as s; "
                    f"d = np.load('{train}'); m = keras.saving.load_model('{model}'); "
                    f"names = [n for n, _ in s.rank_blocks(m, d['x'][:256])]; "
                    f"small = s.drop_blocks(m, names[:max(1, round({p['depth']:g} * len(names)))]); "
                    f"s.fine_tune(small, d['x'], d['y'], teacher=m, epochs={epochs}); "
                    f"small.save('{name}-shrunk.keras')\"")
        source = f"{name}-shrunk.keras"
    elif p.get("energy") is not None:
        cmds.append(f"tflight shrink {model} --method lowrank --energy {p['energy']:g} "
                    f"--data {train} --epochs {epochs} -o {name}-shrunk.keras")
        source = f"{name}-shrunk.keras"
    qat_epochs = max(2, epochs // 2)
    if p.get("clusters") is not None:
        technique = "pcqat" if p.get("sparsity") is not None else "cqat"
        cmds.append(f"tflight compress {model} --data {train} --validation {val} --technique "
                    f"{technique} --clusters {p['clusters']} --sparsity {p.get('sparsity', 0.5):g}"
                    f" --epochs {qat_epochs} --mode fp32 -o {name}-fp32.tflite")
        cmds.append(f"python -c \"import numpy as np, tflight; x = np.load('{train}')['x'][:200];"
                    f" tflight.quantize_int4('{name}-fp32.tflite', calibration_data=x)"
                    f".save('{name}.tflite')\"")
    elif spec["name"].startswith("qat") or p.get("qat"):
        cmds.append(f"tflight compress {source} --data {train} --validation {val} --technique qat "
                    f"--epochs {qat_epochs} --keep-unsupported-float --mode int8 -o {name}.tflite")
    elif spec["storage"] == "int4":
        cmds.append(f"python -c \"import numpy as np, tflight; x = np.load('{train}')['x'][:200];"
                    f" tflight.quantize_int4('{source}', calibration_data=x)"
                    f".save('{name}.tflite')\"")
    else:
        cmds.append(f"tflight convert {source} -m int8 -c {train}{target} -o {name}.tflite")
    return cmds


def _reverify(path: str, expected: CandidateResult, data: Any, say: Callable[[str], None]
              ) -> dict[str, Any]:
    """Re-reads the written file, runs it in LiteRT, compares with the search's figures and Keras."""
    import converters

    say(f"re-verifying {path} from the file ...")
    verified = converters.verify_tflite(path)
    out = converters.TFLiteModel(path).predict(data.x_val)
    out = out[0] if isinstance(out, list) else out
    top1 = np.argmax(np.asarray(out).reshape(len(data.x_val), -1), axis=-1)
    accuracy = float(np.mean(top1 == data.y_val))
    keras_top1 = np.argmax(np.asarray(data.model.predict(data.x_val, verbose=0)).reshape(
        len(data.x_val), -1), axis=-1)
    same = abs(accuracy - expected.validation.accuracy) < 1e-9
    return {"file": path, "bytes": len(verified.content), "validation_accuracy": accuracy,
            "matches_search": same,
            "top1_agreement_with_source_keras": float(np.mean(top1 == keras_top1)),
            "note": "the file re-read from disk and run in LiteRT on the validation split"}


def write_outputs(result: OptimizeResult, data: Any, contents: dict[str, bytes],
                  base_content: bytes, say: Callable[[str], None]) -> None:
    """Writes every output file of `result` into `result.output_dir`, and records their paths."""
    from tflight.optimization.html import write_report_html

    out = result.output_dir
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    files: dict[str, str] = {}
    splits = {"train": (data.x_train, data.y_train), "validation": (data.x_val, data.y_val),
              "test": (data.x_test, data.y_test)}
    for role, (x, y) in splits.items():
        path = os.path.join(out, "data", f"{role}.npz")
        _save_npz(path, x, y)
        files[f"{role} split"] = path
    front = [c for c in result.candidates if c.pareto and c.name in contents]
    if front:
        os.makedirs(os.path.join(out, "pareto"), exist_ok=True)
    for c in front:
        path = os.path.join(out, "pareto", f"{c.name}.tflite")
        _atomic(path, contents[c.name])
        c.file = path
    if result.winner is not None:
        path = os.path.join(out, "model.tflite")
        _atomic(path, contents[result.winner.name])
        result.winner.file = path
        files["chosen model"] = path
        result.reverified = _reverify(path, result.winner, data, say)
    chosen = result.chosen
    if chosen is not None:
        model_path = data.paths.get("model") or _save_source(data.model, out, files)
        rel = {k: os.path.join(out, "data", f"{k}.npz") for k in splits}
        from tflight.optimization.inputs import DEVICES

        result.commands = commands_for(
            chosen, model=model_path, data=rel, device=result.device,
            objective=result.objective, max_drop=result.max_drop_pt,
            epochs=result.epochs, profile=DEVICES[result.device].profile)
    files["report.json"] = os.path.join(out, "report.json")
    files["report.html"] = os.path.join(out, "report.html")
    result.files = files
    _atomic(files["report.json"], result.to_json().encode())
    write_report_html(result, files["report.html"])

