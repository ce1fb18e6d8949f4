"""The quickstart: an embedded tiny base model, a demo dataset, and a measurable concept score.

`shapes` draws the synthetic pictures, `score` reads colour and shape back from a picture,
`sample` draws pictures from a model, `demo` writes the demo dataset, `run` is
`lorakit quickstart`. The model file is made by scripts/pretrain_tiny.py (docs/tiny-model.md).
"""
