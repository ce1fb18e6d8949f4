"""New words trained as textual-inversion embeddings (alone, or with a LoRA: pivotal tuning).

Each word is registered in the model (`models.embeddings`: placeholder tokens, rows in the token
tables) and its vectors are a separate parameter per text encoder; a forward hook on each token
table puts them into its output (`substitute_rows`), so only they receive gradients and only
they are in the optimizer, while the vocabulary's 49,408 rows stay exactly as they were.
"""

from __future__ import annotations

import torch
from torch import nn

from ...models.embeddings import Embedding, substitute_rows, token_rows

DEFAULT_INIT = "*"  # A1111's default initialization text


class TrainableEmbeddings(nn.Module):
    def __init__(self, model, words: list[str], count: int, init_word: str | None):
        """`init_word`: the word each new word starts from (its tokens copied in turn into the
        `count` vectors, sd-scripts' rule); None: each word starts from its own tokens."""
        super().__init__()
        self.model = [model]  # not a submodule
        self.words = list(dict.fromkeys(words))
        self.count = count
        self.vectors = nn.ParameterDict()
        self.slots = {}
        for word in self.words:
            start = token_rows(model, init_word or word, count)
            slot = model.embeddings.add(model, Embedding(word, start))
            self.slots[word] = slot
            for i, rows in enumerate(start):
                self.vectors[self._key(word, i)] = nn.Parameter(rows.float().clone())
        self.init_word = init_word
        self._hooks = [
            encoder.get_input_embeddings().register_forward_hook(self._hook(i))
            for i, encoder in enumerate(model.text_encoders)
        ]

    @staticmethod
    def _key(word: str, encoder: int) -> str:
        return f"te{encoder}_{word}"

    def _hook(self, encoder: int):
        def substitute(module, args, output):
            for word, slot in self.slots.items():
                output = substitute_rows(
                    args[0], output, slot.first_id, self.vectors[self._key(word, encoder)]
                )
            return output

        return substitute

    def embeddings(self, step: int | None = None) -> list[Embedding]:
        """The trained words as they are now (detached copies)."""
        encoders = len(self.model[0].text_encoders)
        return [
            Embedding(
                word,
                [self.vectors[self._key(word, i)].detach().float().cpu().clone() for i in range(encoders)],
                step=step,
            )
            for word in self.words
        ]

    @torch.no_grad()
    def weight_problem(self, limit: float = 1e3) -> str | None:
        for name, param in self.vectors.items():
            if not torch.isfinite(param).all():
                return f"the embedding {name} holds NaN or infinite values"
            if param.abs().max().item() > limit:
                return f"the embedding {name} reaches {param.abs().max().item():.3g}"
        return None

    def remove(self) -> None:
        """Take the hooks out, leaving the trained vectors in the model's token tables."""
        model = self.model[0]
        for hook in self._hooks:
            hook.remove()
        for embedding in self.embeddings():
            model.embeddings.add(model, embedding)
