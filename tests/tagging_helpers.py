"""Tiny ONNX taggers with the real WD14 signature, built with onnx.helper (nothing downloaded).

Three kinds: `constant_tagger` gives the scores the test chooses, whatever the image (for
thresholds, categories and ordering on known numbers); `pixel_tagger` gives back its input
pixels as scores (to see exactly what lorakit feeds the model); `conv_tagger` has a few
convolutions whose scores depend on every pixel (for batching).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CSV_CODES = {"rating": "9", "general": "0", "character": "4"}


def write_labels(folder: Path, labels: list[tuple[str, str]], json_layout: bool = False) -> Path:
    """selected_tags.csv (SmilingWolf) or tag_mapping.json for (name, category) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    if json_layout:
        mapping = {str(i): {"tag": n, "category": c.capitalize()} for i, (n, c) in enumerate(labels)}
        path = folder / "tag_mapping.json"
        path.write_text(json.dumps(mapping), encoding="utf-8")
        return path
    path = folder / "selected_tags.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tag_id", "name", "category", "count"])
        for i, (n, c) in enumerate(labels):
            w.writerow([1000 + i, n, CSV_CODES[c], 10])
    return path


def _input(size: int, batch, channels_first: bool):
    dims = [batch, 3, size, size] if channels_first else [batch, size, size, 3]
    return helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, dims)


def _save(folder: Path, nodes, inputs, outputs, inits, name="model.onnx") -> Path:
    graph = helper.make_graph(nodes, "tiny_tagger", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / name
    onnx.save(model, path)
    return path


def constant_tagger(
    folder: Path,
    labels: list[tuple[str, str, float]],
    size: int = 16,
    batch="N",
    json_layout: bool = False,
) -> Path:
    """Scores = the third item of each label, for every image. The tag_mapping.json layout gets
    logits (its outputs go through a sigmoid), NCHW, the other probabilities, NHWC."""
    write_labels(folder, [(n, c) for n, c, _ in labels], json_layout)
    p = np.array([s for *_, s in labels], dtype=np.float64)
    bias = np.log(p / (1 - p)) if json_layout else p
    inits = [
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1, 1], np.int64), "shape"),
        numpy_helper.from_array(bias.astype(np.float32)[None, :], "bias"),
    ]
    nodes = [
        helper.make_node("Mul", ["input_1:0", "zero"], ["z"]),
        helper.make_node("ReduceSum", ["z", "axes"], ["s"], keepdims=1),
        helper.make_node("Reshape", ["s", "shape"], ["col"]),
        helper.make_node("Add", ["col", "bias"], ["predictions_sigmoid"]),
    ]
    out = helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, len(labels)])
    name = "model_optimized.onnx" if json_layout else "model.onnx"
    return _save(folder, nodes, [_input(size, batch, json_layout)], [out], inits, name)


def pixel_tagger(folder: Path, size: int = 8, json_layout: bool = False) -> Path:
    """Scores = the input tensor flattened (one "general" label per input number)."""
    n = size * size * 3
    write_labels(folder, [(f"p{i}", "general") for i in range(n)], json_layout)
    inits = [numpy_helper.from_array(np.array([-1, n], np.int64), "shape")]
    nodes = [helper.make_node("Reshape", ["input_1:0", "shape"], ["predictions_sigmoid"])]
    out = helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["N", n])
    return _save(folder, nodes, [_input(size, "N", json_layout)], [out], inits)


def conv_tagger(folder: Path, n_labels: int = 6, size: int = 16, batch="N", seed: int = 0) -> Path:
    """NHWC 0-255 -> [-1, 1] -> NCHW -> conv, relu, conv, global average pool -> gemm -> sigmoid."""
    rng = np.random.default_rng(seed)
    names = [("general", "rating"), ("sensitive", "rating")] + [
        (f"tag{i}", "general") for i in range(n_labels - 2)
    ]
    write_labels(folder, [(t, c) for t, c in names])
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 1, (8, n_labels)).astype(np.float32), "w3"),
        numpy_helper.from_array(rng.normal(0, 0.1, (n_labels,)).astype(np.float32), "b3"),
        numpy_helper.from_array(np.array([-1, 8], np.int64), "shape"),
        numpy_helper.from_array(np.array(127.5, np.float32), "mid"),
    ]
    nodes = [
        helper.make_node("Sub", ["input_1:0", "mid"], ["centred"]),
        helper.make_node("Div", ["centred", "mid"], ["unit"]),
        helper.make_node("Transpose", ["unit"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Reshape", ["g", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    out = helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, n_labels])
    return _save(folder, nodes, [_input(size, batch, False)], [out], inits)
