"""`lorakit merge`, `resize` and `extract` as a user runs them: output, files, plain errors."""

import torch
from network_helpers import read_file, tiny
from tools_helpers import file_deltas, make_lora

from lorakit.cli.main import main


def test_help_explains_the_sqrt_ratio_subtlety(capsys):
    try:
        main(["merge", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "0.5 x 0.5 = 0.25" in out and "sqrt(WEIGHT)" in out and "cross terms" in out
    assert "--same-to-strength" in out and "--concat" in out and "--new-rank" in out


def test_merge_resize_extract_from_the_command_line(tiny_checkpoints, tmp_path, capsys):
    model = tiny("sd1")
    a = make_lora(model, tmp_path / "a.safetensors", "lora", dim=4, seed=1)
    b = make_lora(model, tmp_path / "b.safetensors", "lora", dim=4, seed=2)
    merged = tmp_path / "merged.safetensors"
    assert (
        main(["merge", "--model", str(tiny_checkpoints["sd1"]), "--lora", f"{a}:0.5", "--out", str(merged)])
        == 0
    )
    out = capsys.readouterr().out
    assert "merged a:0.5: " in out and "streamed tensor by tensor" in out and merged.exists()
    # inspect says what a merged file was made from
    assert read_file(merged)[1]["modelspec.merged_from"] == "tiny-sd1, a:0.5"
    assert main(["inspect", str(merged)]) == 0
    assert "merged from: tiny-sd1, a:0.5 (modelspec.merged_from)" in capsys.readouterr().out.splitlines()

    ab = tmp_path / "ab.safetensors"
    args = ["merge", "--lora", f"{a}:0.6", "--lora", f"{b}:0.4", "--new-rank", "8", "--out", str(ab)]
    assert main(args) == 0
    assert "svd merge of 2 LoRAs" in capsys.readouterr().out
    assert main(["inspect", str(ab)]) == 0
    assert (
        f"merged from: {read_file(ab)[1]['modelspec.merged_from']} (modelspec.merged_from)"
        in capsys.readouterr().out
    )
    da, db, dab = file_deltas(a), file_deltas(b), file_deltas(ab)
    assert all(torch.allclose(dab[n], 0.6 * da[n] + 0.4 * db[n], atol=1e-4) for n in da)

    small = tmp_path / "small.safetensors"
    assert main(["resize", str(ab), "--new-rank", "2", "--out", str(small)]) == 0
    out = capsys.readouterr().out
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in out
    assert "8 -> 2" in out and "Frobenius norm kept: mean" in out
    assert read_file(small)[1]["ss_network_dim"] == "2"

    lora = tmp_path / "x.safetensors"
    args = [
        "extract",
        "--base",
        str(tiny_checkpoints["sd1"]),
        "--tuned",
        str(merged),
        "--dim",
        "4",
        "--out",
        str(lora),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "text encoder changed" in out and "wrote" in out and lora.exists()


def test_errors_are_plain_lines(tiny_checkpoints, tmp_path, capsys):
    xl = make_lora(tiny("sdxl"), tmp_path / "xl.safetensors", "lora")
    out = tmp_path / "m.safetensors"
    assert main(["merge", "--model", str(tiny_checkpoints["sd1"]), "--lora", str(xl), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "trained for SDXL" in err and "Traceback" not in err
    assert (
        main(
            [
                "merge",
                "--model",
                str(tiny_checkpoints["sd1"]),
                "--lora",
                str(xl),
                "--concat",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "leave out --model" in capsys.readouterr().err
    assert main(["merge", "--lora", str(tmp_path / "missing.safetensors:0.5"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["resize", str(xl), "--new-rank", "2", "--dynamic", "sv_fro", "--out", str(out)]) == 2
    assert "needs --dynamic-param" in capsys.readouterr().err
