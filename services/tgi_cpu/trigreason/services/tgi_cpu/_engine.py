"""One llama.cpp model and context, generating one request at a time with per-token log-probabilities.

Built on llama-cpp-python's C bindings (batch, decode, logits, memory) rather than ``Llama.generate`` so
that each step reads the last logits row once, in place, and the K/V cache is managed here: a request
whose prompt extends what was evaluated before (the next step of a reasoning session) only evaluates the
new suffix.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._errors import EngineError, GenerationCancelled, InputValidationError
from ._sampling import Logits, choose_token, log_normalizer, top_candidates

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = [
    "FinishReason",
    "Generation",
    "LlamaEngine",
    "PrefillToken",
    "SamplingParams",
    "StreamToken",
    "TokenInfo",
]

FinishReason = Literal["length", "eos_token", "stop_sequence"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SamplingParams:
    """TGI's generation parameters, as far as this engine implements them.

    Sampling is on when ``do_sample`` is set or any warper is (temperature != 1, top_p < 1, top_k > 0),
    as in TGI; ``temperature == 0`` always means greedy.
    """

    max_new_tokens: int = 100
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_n_tokens: int = 0
    decoder_input_details: bool = False

    @property
    def sampling(self) -> bool:
        if self.temperature == 0.0:
            return False
        return (
            self.do_sample
            or (self.temperature is not None and self.temperature != 1.0)
            or (self.top_p is not None and self.top_p < 1.0)
            or bool(self.top_k)
        )


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """TGI's ``Token``: log-probability under the model's own distribution (temperature 1, unfiltered)."""

    id: int
    text: str
    logprob: float
    special: bool


@dataclass(frozen=True, slots=True)
class PrefillToken:
    """TGI's ``PrefillToken``: a prompt token; the first has no logprob (nothing precedes it)."""

    id: int
    text: str
    logprob: float | None


@dataclass(frozen=True, slots=True)
class StreamToken:
    """One generated token as it is produced (passed to ``on_token``)."""

    index: int  # 0-based
    token: TokenInfo
    top_tokens: tuple[TokenInfo, ...]
    last: bool  # no token follows: the final ``Generation`` comes next


@dataclass(frozen=True, kw_only=True, slots=True)
class Generation:
    text: str  # without special tokens and without the stop sequence that ended it
    tokens: tuple[TokenInfo, ...]
    top_tokens: tuple[tuple[TokenInfo, ...], ...]  # one tuple per token; empty tuples without top_n_tokens
    finish_reason: FinishReason
    seed: int | None  # the seed used when sampling, None for greedy
    input_length: int
    cached_tokens: int  # prompt tokens whose K/V were reused instead of evaluated
    prefill: tuple[PrefillToken, ...]  # prompt tokens with logprobs, only with decoder_input_details
    prefill_s: float
    decode_s: float


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LlamaEngine:
    """A GGUF model on llama.cpp. Not thread-safe by nature (one context): ``generate`` holds a lock, and
    callers run it in one worker thread. ``tokenize`` only reads the vocabulary and may run anywhere."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        prefix_reuse: bool = True,
        flash_attn: bool = True,
        model_id: str | None = None,
        verbose: bool = False,
    ) -> None:
        import llama_cpp  # optional dependency (the `cpu` extra): imported only when an engine is made

        self._c: Any = llama_cpp
        path = Path(model_path)
        if not path.is_file():
            raise InputValidationError(f"model file not found: {path}", code="model_not_found")
        threads = n_threads or available_cpus()
        n_batch = max(1, min(n_batch, n_ctx))
        self._llm: Llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=False,  # logits of the last position only: all that sampling and logprobs need
            # Without flash attention llama.cpp's CPU attention for a one-token batch differs from the
            # batched one (logprobs off by up to 0.6 on the tiny model), so a prompt read from the cache
            # would not continue as the same prompt read cold. With it, both are bit-identical.
            flash_attn=flash_attn,
            verbose=verbose,
        )
        self.model_id = model_id or path.name
        self.model_path = path
        self.n_threads = threads
        self.prefix_reuse = prefix_reuse
        self._n_batch = n_batch
        self._ctx = self._llm.ctx
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._n_vocab = int(self._llm.n_vocab())
        self._n_ctx = int(self._llm.n_ctx())
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._scratch: Logits = np.empty(self._n_vocab, dtype=np.float32)
        self._piece_buf = ctypes.create_string_buffer(64)
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._specials: dict[int, bool] = {}
        self._cached: list[int] = []  # tokens whose K/V are in the cache, at positions 0..len-1
        self._lock = threading.Lock()
        self._closed = False

    # -- model facts -------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    @property
    def max_input_tokens(self) -> int:
        return self._n_ctx - 1

    @property
    def cached_tokens(self) -> int:
        """How many tokens the K/V cache holds now (what the next request may reuse)."""
        return len(self._cached)

    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text``; chat-template markers such as ``<|im_start|>`` become their special tokens,
        and a BOS token is added when the model's tokenizer asks for one."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=self._add_bos, special=True))

    def token_text(self, token: int) -> str:
        return self._piece(token, self.is_special(token)).decode("utf-8", errors="replace")

    def is_special(self, token: int) -> bool:
        special = self._specials.get(token)
        if special is None:
            c = self._c
            special = bool(
                c.llama_vocab_is_control(self._vocab, token) or c.llama_vocab_is_eog(self._vocab, token)
            )
            self._specials[token] = special
        return special

    def check_length(self, input_length: int, max_new_tokens: int) -> None:
        """Raise ``InputValidationError`` (TGI's wording) when the request cannot fit the context."""
        if input_length == 0:
            raise InputValidationError("Input validation error: `inputs` cannot be empty")
        if input_length > self.max_input_tokens:
            raise InputValidationError(
                f"Input validation error: `inputs` must have less than {self.max_input_tokens} tokens. "
                f"Given: {input_length}"
            )
        if input_length + max_new_tokens > self._n_ctx:
            raise InputValidationError(
                f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {self._n_ctx}. "
                f"Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
            )

    # -- generation --------------------------------------------------------------------------------

    def generate(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams,
        *,
        cancel: threading.Event | None = None,
        on_token: Callable[[StreamToken], None] | None = None,
    ) -> Generation:
        """Continue ``prompt`` (raw text, or its tokens). ``on_token`` sees each token as it is sampled
        (from this thread); ``cancel`` stops generation before the next token (``GenerationCancelled``)."""
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if params.max_new_tokens < 1:
            raise InputValidationError("Input validation error: `max_new_tokens` must be strictly positive")
        self.check_length(len(tokens), params.max_new_tokens)
        sampling = params.sampling
        seed = (params.seed if params.seed is not None else secrets.randbits(63)) if sampling else None
        rng = np.random.default_rng(seed) if seed is not None else None
        temperature = 1.0 if params.temperature is None else params.temperature
        top_p = 1.0 if params.top_p is None else params.top_p
        top_k = params.top_k or 0
        stops = tuple(s for s in params.stop if s)
        longest_stop = max((len(s) for s in stops), default=0)

        with self._lock:
            if self._closed:
                raise EngineError("engine is closed", retryable=False)
            started = time.perf_counter()
            cached, prefill = self._prefill(tokens, with_logprobs=params.decoder_input_details, cancel=cancel)
            prefilled = time.perf_counter()
            out: list[TokenInfo] = []
            tops: list[tuple[TokenInfo, ...]] = []
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            text = ""
            finish: FinishReason | None = None
            token = -1
            last_index = params.max_new_tokens - 1
            for index in range(params.max_new_tokens):
                if cancel is not None and cancel.is_set():
                    raise GenerationCancelled("generation cancelled by the caller")
                if index:
                    self._decode((token,))
                row = self._last_logits()
                token = choose_token(row, temperature=temperature, top_p=top_p, top_k=top_k, rng=rng)
                normalizer = log_normalizer(row, self._scratch)
                special = self.is_special(token)
                piece = self._piece(token, special)
                token_text = piece.decode("utf-8", errors="replace") if special else decoder.decode(piece)
                info = TokenInfo(token, token_text, float(row[token]) - normalizer, special)
                top = self._top_tokens(row, normalizer, params.top_n_tokens)
                out.append(info)
                tops.append(top)
                if self._c.llama_vocab_is_eog(self._vocab, token):
                    finish = "eos_token"
                elif not special:
                    searched_from = max(0, len(text) - longest_stop + 1)
                    text += token_text
                    hit = _first_stop(text, stops, searched_from)
                    if hit >= 0:
                        text = text[:hit]
                        finish = "stop_sequence"
                if on_token is not None:
                    on_token(StreamToken(index, info, top, last=finish is not None or index == last_index))
                if finish is not None:
                    break
            if finish is None:
                finish = "length"
            if finish != "stop_sequence":
                text += decoder.decode(b"", final=True)
            finished = time.perf_counter()
        return Generation(
            text=text,
            tokens=tuple(out),
            top_tokens=tuple(tops),
            finish_reason=finish,
            seed=seed,
            input_length=len(tokens),
            cached_tokens=cached,
            prefill=prefill,
            prefill_s=prefilled - started,
            decode_s=finished - prefilled,
        )

    def reset_cache(self) -> None:
        """Forget every evaluated token (the next request evaluates its whole prompt)."""
        with self._lock:
            self._clear()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._c.llama_batch_free(self._batch)
            self._llm.close()

    # -- internals ---------------------------------------------------------------------------------

    def _prefill(
        self, tokens: list[int], *, with_logprobs: bool, cancel: threading.Event | None
    ) -> tuple[int, tuple[PrefillToken, ...]]:
        """Bring the cache to exactly ``tokens`` and leave the last position's logits ready.
        Returns how many prompt tokens were reused, and the prompt's logprobs when asked for."""
        reuse = 0
        if self.prefix_reuse and not with_logprobs:  # prompt logprobs need every position's logits
            reuse = _common_prefix(self._cached, tokens)
            if reuse == len(tokens):
                reuse -= 1  # logits are kept for the last decoded position only: decode it again
        if reuse < len(self._cached):
            if reuse == 0 or not self._c.llama_memory_seq_rm(self._memory, 0, reuse, -1):
                self._clear()
                reuse = 0
            else:
                del self._cached[reuse:]
        prompt_logprobs = self._decode(tokens[reuse:], all_logits=with_logprobs, cancel=cancel)
        if not with_logprobs:
            return reuse, ()
        assert prompt_logprobs is not None
        prefill = tuple(
            PrefillToken(t, self.token_text(t), None if i == 0 else float(prompt_logprobs[i - 1]))
            for i, t in enumerate(tokens)
        )
        return reuse, prefill

    def _decode(
        self, tokens: Sequence[int], *, all_logits: bool = False, cancel: threading.Event | None = None
    ) -> np.ndarray[Any, Any] | None:
        """Evaluate ``tokens`` after the cached ones, in chunks of n_batch (``cancel`` is checked between
        chunks: a long prompt stops early too). With ``all_logits``, return the log-probability of each
        token after the first given the ones before it."""
        batch = self._batch
        logprobs: list[np.ndarray[Any, Any]] = []
        for start in range(0, len(tokens), self._n_batch):
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("generation cancelled by the caller")
            chunk = tokens[start : start + self._n_batch]
            n = len(chunk)
            pos = len(self._cached)
            batch.n_tokens = n
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = pos + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = all_logits
            batch.logits[n - 1] = True
            rc = self._c.llama_decode(self._ctx, batch)
            if rc != 0:
                self._clear()  # a failed decode may leave part of the batch in the cache
                raise EngineError(f"llama_decode failed with code {rc}")
            self._cached.extend(chunk)
            if all_logits:
                rows = np.ctypeslib.as_array(self._c.llama_get_logits(self._ctx), shape=(n, self._n_vocab))
                peak = rows.max(axis=1, keepdims=True)
                norm = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=1, dtype=np.float64))
                following = np.asarray(tokens[start + 1 : start + n + 1], dtype=np.intp)
                m = following.shape[0]  # the last row of the last chunk predicts a generated token
                logprobs.append(rows[np.arange(m), following] - norm[:m])
        if not all_logits:
            return None
        return np.concatenate(logprobs) if logprobs else np.zeros(0)

    def _last_logits(self) -> Logits:
        # A view into llama.cpp's buffer: valid until the next decode, never written to.
        ptr = self._c.llama_get_logits_ith(self._ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))

    def _top_tokens(self, row: Logits, normalizer: float, n: int) -> tuple[TokenInfo, ...]:
        if n <= 0:
            return ()
        return tuple(
            TokenInfo(int(i), self.token_text(int(i)), float(row[i]) - normalizer, self.is_special(int(i)))
            for i in top_candidates(row, n)
        )

    def _piece(self, token: int, special: bool) -> bytes:
        key = (token, special)
        piece = self._pieces.get(key)
        if piece is None:
            buf = self._piece_buf
            n = self._c.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
            if n < 0:  # longer than the buffer: llama.cpp says how long
                buf = ctypes.create_string_buffer(-n)
                n = self._c.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
            piece = bytes(buf.raw[: max(n, 0)])
            self._pieces[key] = piece
        return piece

    def _clear(self) -> None:
        self._c.llama_memory_clear(self._memory, True)
        self._cached.clear()


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def _first_stop(text: str, stops: tuple[str, ...], start: int) -> int:
    """Start of the earliest stop sequence in ``text[start:]``, or -1."""
    best = -1
    for stop in stops:
        at = text.find(stop, start)
        if at >= 0 and (best < 0 or at < best):
            best = at
    return best
