"""One llama.cpp model and context, generating one request at a time with per-token log-probabilities.

Built on llama-cpp-python's C bindings (model, context, batch, decode, logits, memory) rather than
``Llama.generate`` so that each step reads the last logits row once, in place, and the K/V cache is
managed here: a request whose prompt extends what was evaluated before (the next step of a reasoning
session) only evaluates the new suffix.

The context holds up to ``cache_slots`` sequences (llama.cpp seq ids ``0..cache_slots-1``) in one unified
K/V cache, so that interleaved sessions (A, B, A, B) keep each other's prefixes; all slots share ``n_ctx``.
Which slot a request uses (see ``LlamaEngine._choose_slot``):

1. It *continues* a slot when it starts with that slot's last prompt: the next step of the session the
   slot holds, or a retry of it. The last ``CONTINUE_SLACK`` tokens of that prompt (at most half of it)
   may differ, since text appended to a prompt can tokenize differently across the seam. Of the slots it
   continues, the one with the longest common prefix is used in place: its tokens after the common prefix
   (the previous answer, the seam) are dropped.
2. Otherwise (another session, which shares at most a chat template or a system prompt with the others)
   it takes the least-recently-used slot, an empty one first, so a shared prefix never overwrites another
   session's cache. Before evaluating, that slot gets the longest common prefix any slot holds as a shared
   copy (``llama_memory_seq_cp``: in a unified cache the sequences share the cells, nothing is copied or
   evaluated again).

When the K/V cache is full (``llama_decode`` returns 1), the least-recently-used other slots are dropped
one at a time and the batch is retried. With ``cache_slots=1`` this is the single-sequence cache it was:
the one slot is reused with whatever prefix it shares.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._errors import EngineError, GenerationCancelled, InputValidationError
from ._sampling import Logits, choose_token, log_normalizer, top_candidates

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

# A request continues a cache slot when it shares that slot's last prompt but for at most this many
# tokens at its end (see the module docstring).
CONTINUE_SLACK = 8


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
    # Token ids to emit first instead of choosing them (a forced continuation): each is decoded as a
    # chosen token would be (one evaluation each, its logprob from the same logits row, the same EOS and
    # stop checks), and sampling goes on after the last one. Replaying a recorded generation this way
    # repeats its work exactly, whatever the cache held (bench/bench_affinity.py).
    forced_tokens: tuple[int, ...] = ()

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


@dataclass(eq=False, slots=True)
class _Slot:
    """One sequence of the K/V cache."""

    seq: int  # llama.cpp's seq_id
    tokens: list[int] = field(default_factory=list)  # tokens whose K/V it holds, at positions 0..len-1
    prompt_len: int = 0  # the last prompt evaluated in it (what a continuing request shares)
    used: int = 0  # when a request last used it (engine clock; 0: never)
    # Prompt log-probabilities computed for it (decoder_input_details), by position: valid while the
    # tokens up to that position stay, so a later request reuses the prefix and still has them.
    known: dict[int, float] = field(default_factory=dict)

    def truncate(self, n: int) -> None:
        del self.tokens[n:]
        self.known = {q: lp for q, lp in self.known.items() if q < n}


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
        cache_slots: int = 4,
        flash_attn: bool = True,
        model_id: str | None = None,
        verbose: bool = False,
    ) -> None:
        import llama_cpp  # optional dependency (the `cpu` extra): imported only when an engine is made
        from llama_cpp import _internals
        from llama_cpp._logger import set_verbose

        self._c: Any = llama_cpp
        path = Path(model_path)
        if not path.is_file():
            raise InputValidationError(f"model file not found: {path}", code="model_not_found")
        max_slots = int(llama_cpp.llama_max_parallel_sequences())
        if not 1 <= cache_slots <= max_slots:
            raise InputValidationError(
                f"cache_slots must be between 1 and {max_slots}, got {cache_slots}", code="bad_cache_slots"
            )
        threads = n_threads or available_cpus()
        n_batch = max(1, min(n_batch, n_ctx))
        # The model and context as ``llama_cpp.Llama`` makes them (same parameters), except that ``Llama``
        # has no say over the number of sequences and the unified K/V cache.
        set_verbose(verbose)
        with _BACKEND_LOCK:
            global _backend_ready
            if not _backend_ready:
                llama_cpp.llama_backend_init()
                _backend_ready = True
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0  # a CPU server
        model_params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP
        internals: Any = _internals
        self._model: Any = internals.LlamaModel(path_model=str(path), params=model_params, verbose=verbose)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_threads = threads
        params.n_threads_batch = threads
        params.n_seq_max = cache_slots
        # One K/V buffer for all sequences: every slot may use all of n_ctx (split, each would get
        # n_ctx / cache_slots), and a prefix shared by two slots is stored once.
        params.kv_unified = cache_slots > 1
        # Without flash attention llama.cpp's CPU attention for a one-token batch differs from the
        # batched one (logprobs off by up to 0.6 on the tiny model), so a prompt read from the cache
        # would not continue as the same prompt read cold. With it, both are bit-identical.
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        # Llama's values for these (llama.cpp's defaults differ).
        params.yarn_attn_factor = 1.0
        params.yarn_beta_fast = 32.0
        params.yarn_beta_slow = 1.0
        params.no_perf = False
        try:
            self._context: Any = internals.LlamaContext(model=self._model, params=params, verbose=verbose)
        except Exception:
            self._model.close()
            raise
        self.model_id = model_id or path.name
        self.model_path = path
        self.n_threads = threads
        self.prefix_reuse = prefix_reuse
        self.cache_slots = cache_slots
        self._n_batch = n_batch
        self._ctx = self._context.ctx
        self._vocab = llama_cpp.llama_model_get_vocab(self._model.model)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._n_ctx = int(llama_cpp.llama_n_ctx(self._ctx))
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._scratch: Logits = np.empty(self._n_vocab, dtype=np.float32)
        self._piece_buf = ctypes.create_string_buffer(64)
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._specials: dict[int, bool] = {}
        self._slots = [_Slot(seq) for seq in range(cache_slots)]
        self._active = self._slots[0]  # the slot the running request evaluates in
        self._clock = 0
        self.evictions = 0  # slots dropped because the K/V cache was full
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
        """How many tokens the K/V cache holds now, summed over the slots (what later requests may reuse;
        a prefix two slots share counts twice)."""
        return sum(len(slot.tokens) for slot in self._slots)

    @property
    def slot_tokens(self) -> tuple[int, ...]:
        """How many tokens each slot holds, by seq id."""
        return tuple(len(slot.tokens) for slot in self._slots)

    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text``; chat-template markers such as ``<|im_start|>`` become their special tokens,
        and a BOS token is added when the model's tokenizer asks for one."""
        return list(self._model.tokenize(text.encode("utf-8"), add_bos=self._add_bos, special=True))

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

    def check_forced(self, params: SamplingParams) -> None:
        """Raise ``InputValidationError`` when ``forced_tokens`` holds a token id outside the vocabulary
        or more tokens than ``max_new_tokens`` (they would be dropped without a word)."""
        forced = params.forced_tokens
        if any(not 0 <= t < self._n_vocab for t in forced):
            raise InputValidationError(
                f"Input validation error: `forced_tokens` must be token ids in [0, {self._n_vocab})"
            )
        if len(forced) > params.max_new_tokens:
            raise InputValidationError(
                f"Input validation error: `forced_tokens` ({len(forced)} tokens) must be at most "
                f"`max_new_tokens` ({params.max_new_tokens})"
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
        self.check_forced(params)
        forced = params.forced_tokens
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
                if index < len(forced):
                    token = forced[index]
                else:
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
        """Forget every evaluated token in every slot (the next request evaluates its whole prompt)."""
        with self._lock:
            if not self._closed:
                self._clear()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._c.llama_batch_free(self._batch)
            self._context.close()
            self._model.close()

    # -- internals ---------------------------------------------------------------------------------

    def _prefill(
        self, tokens: list[int], *, with_logprobs: bool, cancel: threading.Event | None
    ) -> tuple[int, tuple[PrefillToken, ...]]:
        """Bring a slot to exactly ``tokens`` and leave the last position's logits ready.
        Returns how many prompt tokens were reused, and the prompt's logprobs when asked for."""
        slot, shared = self._choose_slot(tokens, reuse=self.prefix_reuse)
        reuse = shared
        self._active = slot
        if reuse == len(tokens):
            reuse -= 1  # logits are kept for the last decoded position only: decode it again
        if with_logprobs:
            # Prompt logprobs need the logits before each position: the reused prefix keeps those it
            # has from earlier requests (with flash attention a cached prefix gives bit-identical
            # logits); from the first position without one on, the prompt is evaluated again. The slot's
            # logprob at ``shared`` is of its own token there, not the request's: never reused (a step
            # ending in "." read again followed by "\n\n" changes that token to ".\n\n").
            limit = min(reuse, shared - 1)
            missing = next((q for q in range(1, limit + 1) if q not in slot.known), limit + 1)
            reuse = max(0, missing - 1)
        # The token decoded again at ``reuse`` is the one the slot held there when it is in the shared
        # prefix: its known logprob stays valid.
        again = slot.known.get(reuse) if reuse < shared else None
        if reuse < len(slot.tokens):
            if reuse == 0 or not self._c.llama_memory_seq_rm(self._memory, slot.seq, reuse, -1):
                self._drop(slot)
                reuse = 0
            else:
                slot.truncate(reuse)
                if again is not None:
                    slot.known[reuse] = again
        prompt_logprobs = self._decode(tokens[reuse:], all_logits=with_logprobs, cancel=cancel)
        if not with_logprobs:
            return reuse, ()
        assert prompt_logprobs is not None
        for i, lp in enumerate(prompt_logprobs.tolist()):
            slot.known[reuse + 1 + i] = float(lp)
        prefill = tuple(
            PrefillToken(t, self.token_text(t), None if q == 0 else slot.known[q])
            for q, t in enumerate(tokens)
        )
        return reuse, prefill

    def _choose_slot(self, tokens: list[int], *, reuse: bool) -> tuple[_Slot, int]:
        """The slot for a request with prompt ``tokens`` (the rule is in the module's docstring), and how
        many of its first tokens that slot holds already (the K/V of a shared prefix copied in)."""
        self._clock += 1
        slots = self._slots
        shared = [_common_prefix(s.tokens, tokens) if reuse else 0 for s in slots]
        continued = []
        for i, s in enumerate(slots):
            held = min(s.prompt_len, len(s.tokens))  # less than its prompt after a cancelled prefill
            if shared[i] > 0 and shared[i] + min(CONTINUE_SLACK, held // 2) >= held:
                continued.append(i)
        if continued:
            best = max(continued, key=lambda i: (shared[i], slots[i].used))
            slot, n = slots[best], shared[best]
        else:
            slot = min(slots, key=lambda s: (bool(s.tokens), s.used))  # empty, else least recently used
            n = shared[slot.seq]
            donor = max(range(len(slots)), key=lambda i: (shared[i], slots[i].used))
            if shared[donor] > n:
                self._drop(slot)
                self._c.llama_memory_seq_cp(self._memory, donor, slot.seq, 0, shared[donor])
                n = shared[donor]
                slot.tokens = slots[donor].tokens[:n]
                slot.known = {q: lp for q, lp in slots[donor].known.items() if q < n}
        slot.used = self._clock
        slot.prompt_len = len(tokens)
        return slot, n

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
            slot = self._active
            pos = len(slot.tokens)
            batch.n_tokens = n
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = pos + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = slot.seq
                batch.logits[i] = all_logits
            batch.logits[n - 1] = True
            self._decode_batch(slot)
            slot.tokens.extend(chunk)
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

    def _decode_batch(self, slot: _Slot) -> None:
        """``llama_decode`` the batch; while the K/V cache has no room for it (code 1: nothing was
        evaluated), drop the least-recently-used other slot and try again."""
        while True:
            rc = self._c.llama_decode(self._ctx, self._batch)
            if rc == 0:
                return
            victims = [s for s in self._slots if s is not slot and s.tokens]
            if rc != 1 or not victims:
                self._clear()  # a failed decode may leave part of the batch in the cache
                raise EngineError(f"llama_decode failed with code {rc}")
            self._drop(min(victims, key=lambda s: s.used))
            self.evictions += 1

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

    def _drop(self, slot: _Slot) -> None:
        """Empty one slot (its cells shared with another slot stay for that one)."""
        if any(s.tokens for s in self._slots if s is not slot):
            self._c.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
        else:
            self._c.llama_memory_clear(self._memory, True)
        slot.tokens = []
        slot.known = {}
        slot.prompt_len = 0

    def _clear(self) -> None:
        self._c.llama_memory_clear(self._memory, True)
        for slot in self._slots:
            slot.tokens = []
            slot.known = {}
            slot.prompt_len = 0


_BACKEND_LOCK = threading.Lock()
_backend_ready = False


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
