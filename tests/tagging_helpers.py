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


# ---- tiny captioners: the real transformers classes, small configs, random weights ------------

WORDS = "a an the cat dog sits on red blue green table picture of photo with and in grass".split()


def _randomise(model, std: float = 0.5) -> None:
    """Default initialisations make tiny models ignore the image (BLIP's vision tower starts at
    1e-10); wide random weights make each image get its own caption."""
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, std)


def tiny_blip(folder: Path) -> Path:
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + WORDS
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    tok.add_special_tokens({"bos_token": "[DEC]"})
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = BlipConfig(
        vision_config=dict(**small, image_size=32, patch_size=8),
        text_config=dict(**small, vocab_size=len(tok), encoder_hidden_size=16, bos_token_id=5, pad_token_id=0,
                         sep_token_id=3, eos_token_id=3, max_position_embeddings=64),
        projection_dim=16,
    )  # fmt: skip
    model = BlipForConditionalGeneration(config).eval()
    _randomise(model)
    model.save_pretrained(folder)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tok).save_pretrained(folder)
    return folder


def tiny_git(folder: Path) -> Path:
    from transformers import BertTokenizer, CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    config = GitConfig(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=64, bos_token_id=2, eos_token_id=3, pad_token_id=0,
    )  # fmt: skip
    model = GitForCausalLM(config).eval()
    _randomise(model)
    model.save_pretrained(folder)
    size = {"height": 32, "width": 32}
    GitProcessor(CLIPImageProcessor(size=size, crop_size=size), tok).save_pretrained(folder)
    return folder


def tiny_florence2(folder: Path) -> Path:
    import torch
    from transformers import (
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        RobertaTokenizer,
    )

    # byte-level BPE without merges: printable characters, a few words, the image token
    chars = ["Ġ"] + [chr(c) for c in range(33, 127)]
    vocab = {
        t: i
        for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + chars + ["Ġ" + w for w in WORDS])
    }
    vocab["<image>"] = len(vocab)
    tok = RobertaTokenizer(vocab=vocab, merges=[], extra_special_tokens={"image_token": "<image>"})
    config = Florence2Config(
        text_config=dict(model_type="bart", vocab_size=len(tok), max_position_embeddings=128, d_model=16,
                         encoder_layers=1, decoder_layers=1, encoder_ffn_dim=16, decoder_ffn_dim=16,
                         encoder_attention_heads=1, decoder_attention_heads=1, eos_token_id=2, bos_token_id=0,
                         pad_token_id=1, decoder_start_token_id=2, forced_bos_token_id=0),
        vision_config=dict(depths=[1], patch_size=[7], patch_stride=[4], patch_padding=[3], patch_prenorm=[False],
                           embed_dim=[16], num_heads=[1], num_groups=[1], window_size=4, projection_dim=16,
                           drop_path_rate=0.0),
        image_token_id=tok.image_token_id,
    )  # fmt: skip
    model = Florence2ForConditionalGeneration(config).eval()
    _randomise(model)
    image_processor = CLIPImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False)
    with torch.no_grad():
        image_processor.image_seq_length = model.get_image_features(
            torch.zeros(1, 3, 32, 32)
        ).pooler_output.shape[1]
    model.save_pretrained(folder)
    Florence2Processor(image_processor=image_processor, tokenizer=tok).save_pretrained(folder)
    return folder
