"""A1111's prompt grammar: the weights worked out by hand from A1111's rules (round x1.1, square
/1.1, (x:w) multiplies by w, nesting multiplies, unclosed openers apply to the end, escapes are
literal, equal neighbours merge, BREAK is a marker of weight -1)."""

import pytest

from lorakit.models.prompt_syntax import PromptError, check_single_prompt, parse_prompt_attention

R, S = 1.1, 1 / 1.1

TABLE = [
    ("", [("", 1.0)]),
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", R), (" word", 1.0)]),
    ("((a))", [("a", R * R)]),
    ("(((a)))", [("a", R * R * R)]),
    ("[a]", [("a", S)]),
    ("[[a]]", [("a", S * S)]),
    ("(a:1.5)", [("a", 1.5)]),
    ("(a:2)", [("a", 2.0)]),  # a number without decimals
    ("(a:.5)", [("a", 0.5)]),  # and without a leading digit
    ("(a: 0.8 )", [("a", 0.8)]),  # spaces around the number
    ("(a:-1)", [("a", -1.0)]),
    ("(a:0)", [("a", 0.0)]),
    ("((a:1.5))", [("a", 1.5 * R)]),  # the weight replaces the inner 1.1, the outer one stays
    ("([a]:1.2)", [("a", S * 1.2)]),
    ("((a) b:0.5)", [("a", R * 0.5), (" b", 0.5)]),
    ("(a [b] c)", [("a ", R), ("b", S * R), (" c", R)]),
    ("(unbalanced", [("unbalanced", R)]),  # never closed: applies to the end
    ("[a", [("a", S)]),
    ("x (a [b", [("x ", 1.0), ("a ", R), ("b", S * R)]),
    ("(a:1.2", [("a:1.2", R)]),  # no ')' after the number: the colon is text
    ("a) b", [("a) b", 1.0)]),  # a closer without opener is text
    ("a] b", [("a] b", 1.0)]),
    ("a:1.2) b", [("a:1.2) b", 1.0)]),
    ("a: b", [("a: b", 1.0)]),
    ("(a:1e2)", [("a:1e2", R)]),  # '1e2' is not A1111's number form: text, then ')' x1.1
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("\\(a:1.2\\)", [("(a:1.2)", 1.0)]),
    ("(\\(a\\))", [("(a)", R)]),  # escaped brackets inside real ones
    ("a \\\\ b", [("a \\ b", 1.0)]),  # an escaped backslash
    ("a\\b", [("ab", 1.0)]),  # a lone backslash is dropped
    ("(unnecessary)(parens)", [("unnecessaryparens", R)]),  # equal neighbours merge
    ("(a:1.2)(b:1.2)", [("ab", 1.2)]),
    ("(a:1.2) (b:1.2)", [("a", 1.2), (" ", 1.0), ("b", 1.2)]),
    ("(猫:1.3), 1girl", [("猫", 1.3), (", 1girl", 1.0)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.3 * R * R),
            (" ", R),
            ("on", S * R),
            (" a ", R),
            ("hill", 0.5 * R),
            (", sun, ", R),
            ("sky", R * R * R * R),
            (".", R),
        ],
    ),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),  # the spaces go with the marker
    ("BREAK", [("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    ("a,BREAK,b", [("a,", 1.0), ("BREAK", -1.0), (",b", 1.0)]),
    ("(a:1.2) BREAK b", [("a", 1.2), ("", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("a BREAKfast", [("a BREAKfast", 1.0)]),  # not a whole word
    ("a break b", [("a break b", 1.0)]),  # lower case is a word
    ("(a BREAK b)", [("a", R), ("BREAK", -1.0 * R), ("b", R)]),  # inside brackets: weighted text
]


@pytest.mark.parametrize("prompt, expected", TABLE, ids=[p or "empty" for p, _ in TABLE])
def test_weights_as_a1111_computes_them(prompt, expected):
    parsed = parse_prompt_attention(prompt)
    assert [text for text, _ in parsed] == [text for text, _ in expected]
    assert [w for _, w in parsed] == pytest.approx([w for _, w in expected], abs=1e-12)


def test_the_table_is_big_enough():
    assert len(TABLE) >= 30


def test_a_weight_that_is_no_number_is_an_error():
    with pytest.raises(PromptError, match=r"':1\.2\.3\)' .* is not a number"):
        parse_prompt_attention("(a:1.2.3)")


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("a [cat:dog:0.5] sitting", "prompt editing"),
        ("[cat:10]", "prompt editing"),
        ("[cat::5]", "prompt editing"),
        ("[(red:1.2) cat : dog : 0.25]", "prompt editing"),  # nested brackets are one part
        ("[cat|dog] sitting", "alternation"),
        ("([cat|dog|])", "alternation"),
        ("a cat AND a dog", "composable diffusion"),
    ],
)
def test_prompts_that_change_during_sampling_are_refused_by_name(prompt, message):
    with pytest.raises(PromptError, match=message) as e:
        check_single_prompt(prompt)
    assert "escape" in str(e.value) or "lower case" in str(e.value)


@pytest.mark.parametrize(
    "prompt",
    ["[cat]", "[cat:dog]", "[a:b:c:0.5]", "\\[cat:dog:0.5\\]", "(cat:0.5)", "cat and dog", "ANDROID"],
)
def test_other_brackets_are_emphasis(prompt):
    check_single_prompt(prompt)


def test_and_is_only_refused_in_the_positive_prompt():
    check_single_prompt("a AND b", negative=True)  # A1111 splits only the prompt at AND
