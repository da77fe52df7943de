"""A small Llama-style decoder: RMSNorm, rotary positions, SDPA attention, SwiGLU MLP, tied embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import ModelConfig
from trainer.packing import IGNORE_INDEX


def rope_tables(head_dim: int, seq_len: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, shape (seq_len, head_dim / 2)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the last dimension of x: (B, H, T, D), whose
    positions are start, start + 1, ..."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[start : start + x.shape[-2]], sin[start : start + x.shape[-2]]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """With ``cache`` (decoding): ``x`` holds the positions after the cached ones; their keys
        and values are appended to ``cache`` ([keys, values], each (B, H, T, D), empty at first)
        and ``mask`` must cover every cached position."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        start = 0 if not cache else cache[0].shape[2]
        q, k = apply_rope(q, cos, sin, start), apply_rope(k, cos, sin, start)
        if cache is not None:
            if cache:
                k = torch.cat([cache[0], k], dim=2)
                v = torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = 64 * math.ceil(8 * cfg.d_model / 3 / 64)
        self.gate = nn.Linear(cfg.d_model, hidden, bias=False)
        self.up = nn.Linear(cfg.d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.d_model)
        self.mlp = SwiGLU(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache)
        return x + self.mlp(self.mlp_norm(x))


class TraceLM(nn.Module):
    """Next-token model over CWM trace tokens."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.embed.weight  # tied
        cos, sin = rope_tables(cfg.d_model // cfg.n_head, cfg.seq_len, cfg.rope_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "down.weight")):  # residual outputs, GPT-2 style
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) and, given targets, the mean loss over non-ignored targets."""
        t = input_ids.shape[1]
        if t > self.cfg.seq_len:
            raise ValueError(f"sequence of {t} tokens is longer than seq_len {self.cfg.seq_len}")
        mask = None
        if doc_ids is not None:  # causal, and no attention across packed chunks
            causal = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()
            mask = (doc_ids[:, :, None] == doc_ids[:, None, :]) & causal
            mask = mask[:, None]
        x = self.embed(input_ids)
        cos, sin = self.cos, self.sin
        for block in self.blocks:
            x = block(x, cos, sin, mask)
        logits = self.head(self.norm(x))
        if targets is None:
            return logits, None
        n_targets = (targets != IGNORE_INDEX).sum().clamp(min=1)
        loss = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        return logits, loss / n_targets

    def _decode(self, ids: torch.Tensor, key_ok: torch.Tensor, caches: list[list[torch.Tensor]]) -> torch.Tensor:
        """Logits of the last position after feeding ``ids`` (B, T) behind the cached positions.

        ``key_ok`` (B, cached + T) marks the positions that may be attended to (not padding);
        attention is also causal within ``ids``.
        """
        t = ids.shape[1]
        total = key_ok.shape[1]
        causal = torch.ones(t, total, dtype=torch.bool, device=ids.device).tril(total - t)
        mask = (key_ok[:, None, :] & causal)[:, None]
        x = self.embed(ids)
        for block, cache in zip(self.blocks, caches):
            x = block(x, self.cos, self.sin, mask, cache)
        return self.head(self.norm(x[:, -1]))

    @torch.no_grad()
    def greedy(
        self, prompts: list[list[int]], stop_id: int, max_new_tokens: int, use_cache: bool = True
    ) -> list[list[int]]:
        """Greedy continuations of a batch of prompts, each up to and including `stop_id`.

        Prompts are left-padded; padding gets its own doc id so no real token attends to it, and
        with rotary positions the left shift does not change what a prompt sees. With
        ``use_cache`` the prompts are encoded once and each new token attends to cached keys and
        values (one position per step instead of the whole window); once the cached batch is
        ``seq_len`` positions long, every later step re-encodes each row's last ``seq_len`` tokens,
        exactly as without the cache.
        """
        device = self.embed.weight.device
        seqs = [list(p) for p in prompts]
        outs: list[list[int]] = [[] for _ in prompts]
        done = [False] * len(prompts)
        seq_len = self.cfg.seq_len
        caches: list[list[torch.Tensor]] | None = None
        key_ok = torch.zeros(0)
        for _ in range(max_new_tokens):
            if use_cache and caches is not None and key_ok.shape[1] < seq_len:
                # One new position per sequence, behind the cached ones.
                ids = torch.tensor([[s[-1]] for s in seqs], device=device)
                key_ok = torch.cat([key_ok, torch.ones(len(seqs), 1, dtype=torch.bool, device=device)], dim=1)
                last = self._decode(ids, key_ok, caches)
            else:
                windows = [s[-seq_len:] for s in seqs]
                width = max(len(w) for w in windows)
                ids = torch.tensor([[0] * (width - len(w)) + w for w in windows], device=device)
                if use_cache and width < seq_len:
                    key_ok = torch.tensor(
                        [[False] * (width - len(w)) + [True] * len(w) for w in windows], device=device
                    )
                    caches = [[] for _ in self.blocks]
                    last = self._decode(ids, key_ok, caches)
                else:
                    docs = torch.tensor([[-1] * (width - len(w)) + [0] * len(w) for w in windows], device=device)
                    logits, _ = self(ids, doc_ids=docs)
                    last = logits[:, -1]
                    caches = None
            for i, token in enumerate(last.argmax(-1).tolist()):
                if not done[i]:  # a finished row is fed its last token again; its output is ignored
                    outs[i].append(token)
                    seqs[i].append(token)
                    done[i] = token == stop_id
            if all(done):
                break
        return outs
