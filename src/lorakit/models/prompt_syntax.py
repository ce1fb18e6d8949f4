"""A1111's prompt grammar: which words get which emphasis weight, and where BREAK starts a chunk.

The rules are A1111's `parse_prompt_attention`, so a prompt gives here the weights it gives there:

- `(text)` multiplies the weight of `text` by 1.1, `[text]` divides it by 1.1, `(text:1.5)`
  multiplies it by 1.5 (instead of 1.1); brackets nest and their factors multiply.
- `\\(` `\\)` `\\[` `\\]` `\\\\` are the literal characters; a lone backslash is dropped.
- A `)` or `]` with no opener is literal text; an opener never closed applies its factor to
  everything after it.
- `BREAK` (upper case, a whole word) is a break marker `("BREAK", -1)`; inside brackets its
  marker weight is multiplied too, so there (as in A1111) it is the word "break" again.
- Neighbouring pieces of equal weight are merged; an empty prompt is `[("", 1.0)]`.

A1111 reads two more bracket forms before emphasis, that change the prompt during sampling:
prompt editing `[from:to:when]` / `[to:when]` and alternation `[a|b]`, plus composable
diffusion `a AND b`. lorakit draws a picture with one prompt, so `check_single_prompt` finds
those and refuses them by name rather than drawing something A1111 would not.
"""

from __future__ import annotations

import re

from ..errors import LorakitError

ROUND = 1.1
SQUARE = 1 / 1.1
BREAK = "BREAK"
BREAK_WEIGHT = -1.0


class PromptError(LorakitError):
    """A prompt, prompt file or `<lora:...>` tag lorakit cannot use."""


# One lexical item each: an escape, a bracket, a ":weight)" closer, a run of text, a lone ":".
_ITEM = re.compile(
    r"""\\[()\[\]\\]          # escaped bracket or backslash: the character itself
      | \\                    # a lone backslash: dropped, as A1111 does
      | [(\[]                 # openers
      | :\s*(?P<weight>[+-]?[.\d]+)\s*\)   # ':1.2)' closes a round bracket with a weight
      | [)\]]                 # closers
      | [^\\()\[\]:]+         # text
      | :                     # a colon that is not a weight
    """,
    re.VERBOSE,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """(piece of text, weight) in order; BREAK markers as ("BREAK", -1.0). See the module doc."""
    pieces: list[list] = []  # [text, weight]; weights multiplied in place as brackets close
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for m in _ITEM.finditer(text):
        item, weight = m[0], m["weight"]
        if item.startswith("\\"):
            pieces.append([item[1:], 1.0])
        elif item == "(":
            round_open.append(len(pieces))
        elif item == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            scale(round_open.pop(), _number(weight, text))
        elif item == ")" and round_open:
            scale(round_open.pop(), ROUND)
        elif item == "]" and square_open:
            scale(square_open.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK_SPLIT.split(item)):
                if i:
                    pieces.append([BREAK, BREAK_WEIGHT])
                pieces.append([part, 1.0])
    for start in round_open:
        scale(start, ROUND)
    for start in square_open:
        scale(start, SQUARE)
    return _merged(pieces) if pieces else [("", 1.0)]


def _merged(pieces: list[list]) -> list[tuple[str, float]]:
    out: list[list] = [pieces[0]]
    for text, weight in pieces[1:]:
        if weight == out[-1][1]:
            out[-1][0] += text
        else:
            out.append([text, weight])
    return [(text, weight) for text, weight in out]


def _number(value: str, prompt: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise PromptError(
            f"the emphasis weight ':{value})' in prompt {prompt!r} is not a number. Write it like "
            "(word:1.2), or escape the brackets (\\( \\)) to keep them as text."
        ) from None


def is_break(piece: tuple[str, float]) -> bool:
    return piece[0] == BREAK and piece[1] == BREAK_WEIGHT


# ---- what lorakit refuses: prompts that change during sampling ------------------------------

_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_AND = re.compile(r"\bAND\b")


def check_single_prompt(text: str, negative: bool = False) -> None:
    """Raise PromptError for A1111 forms that change the prompt during sampling (prompt editing,
    alternation) or mix several prompts (AND, positive prompt only, as in A1111)."""
    for start, end in _square_groups(text):
        inner = text[start + 1 : end]
        parts = _top_level_split(inner, ":")
        snippet = text[start : end + 1]
        if len(_top_level_split(inner, "|")) > 1:
            raise PromptError(
                f"'{snippet}' in prompt {text!r} is A1111's alternation (the prompt switches every "
                "step), which lorakit does not draw. Choose one of the words, or escape the "
                "brackets (\\[ \\]) to keep them as text."
            )
        if len(parts) in (2, 3) and _NUMBER.fullmatch(parts[-1]):
            raise PromptError(
                f"'{snippet}' in prompt {text!r} is A1111's prompt editing ([from:to:when] changes "
                "the prompt part-way through sampling), which lorakit does not draw. Write the words "
                "you want in the whole picture, or escape the brackets (\\[ \\]) to keep them as text."
            )
    if not negative and _AND.search(text):
        raise PromptError(
            f"'AND' in prompt {text!r} is A1111's composable diffusion (several prompts mixed), which "
            "lorakit does not draw. Write 'and' in lower case to keep it as a word."
        )


def _square_groups(text: str) -> list[tuple[int, int]]:
    """(start, end) of each balanced `[...]`, escapes skipped, innermost first."""
    groups, stack, i = [], [], 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            stack.append(i)
        elif char == "]" and stack:
            groups.append((stack.pop(), i))
        i += 1
    return groups


def _top_level_split(text: str, separator: str) -> list[str]:
    """`text` split at `separator`s outside any nested bracket (escapes skipped)."""
    parts, depth, current, i = [], 0, "", 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            current += text[i : i + 2]
            i += 2
            continue
        if char in "([":
            depth += 1
        elif char in ")]" and depth:
            depth -= 1
        if char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
        i += 1
    parts.append(current)
    return parts
