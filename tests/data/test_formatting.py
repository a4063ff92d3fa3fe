"""Chat formatting: response-only labels on every assistant turn, left truncation, padding."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from qtha.backbone import build_tiny_tokenizer, cached_gguf_dir
from qtha.compose import compose_checked
from qtha.data.formatting import IGNORE_INDEX, Encoded, collate, encode_chat, render_pieces

MESSAGES = [{"role": "user", "content": "小明有 12 个苹果，吃了 5 个。还剩几个？"},
            {"role": "assistant", "content": "12 - 5 = 7。答案是 \\boxed{7}。"}]
# A short counselling exchange in the CPsyCounD shape: client = user, counsellor = assistant,
# including two consecutive counsellor turns around a stage direction (a quirk of the source).
DIALOGUE = [
    {"role": "system", "content": "你是一名心理咨询师。"},
    {"role": "user", "content": "我最近总是睡不好，心里很烦。"},
    {"role": "assistant", "content": "听起来你最近压力很大。能说说是什么让你烦心吗？"},
    {"role": "user", "content": "工作上的事情太多了，我怕做不好。"},
    {"role": "assistant", "content": "我们先试着把担心的事情一件件列出来。\n（列清单过程中）"},
    {"role": "assistant", "content": "看完清单，你觉得哪件事最让你焦虑？"},
    {"role": "user", "content": "是下周的汇报。"},
    {"role": "assistant", "content": "好的，我们就从这次汇报开始准备。"},
]
ASSISTANT = [m["content"] for m in DIALOGUE if m["role"] == "assistant"]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def smollm2_tok():
    """The real SmolLM2 chat template (cached from the embedded GGUF; skipped when the package is absent)."""
    try:
        return AutoTokenizer.from_pretrained(cached_gguf_dir(compose_checked(["model=smollm2_135m"]).model))
    except ModuleNotFoundError as exc:
        pytest.skip(f"SmolLM2 tokenizer unavailable: {exc}")


def label_runs(enc: Encoded) -> list[list[int]]:
    """Maximal runs of labelled positions, as token ids."""
    runs: list[list[int]] = []
    for i, label in enumerate(enc.labels):
        if label == IGNORE_INDEX:
            continue
        assert label == enc.input_ids[i], "a label must be the token at its own position"
        if i == 0 or enc.labels[i - 1] == IGNORE_INDEX:
            runs.append([])
        runs[-1].append(label)
    return runs


def context_text(tok, enc: Encoded) -> str:
    return tok.decode([t for t, label in zip(enc.input_ids, enc.labels) if label == IGNORE_INDEX])


# --------------------------------------------------------------------------- single turn
def test_no_prompt_token_has_a_label_and_response_is_fully_labelled(tok):
    enc = encode_chat(tok, MESSAGES, max_length=512)
    (prompt, _), (response, target) = render_pieces(tok, MESSAGES)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert target and all(label == IGNORE_INDEX for label in enc.labels[:n_prompt])
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
    assert tok.decode(enc.labels[n_prompt:]) == MESSAGES[1]["content"] + "<|im_end|>\n" == response
    assert not enc.truncated and enc.turns == enc.targets == 1


def test_left_truncation_keeps_the_response(tok):
    full = encode_chat(tok, MESSAGES, max_length=512)
    short = encode_chat(tok, MESSAGES, max_length=40)
    assert short.truncated and len(short.input_ids) == 40
    assert short.input_ids == full.input_ids[-40:] and short.labels == full.labels[-40:]
    assert short.targets == 1  # the only target keeps its tail: a long answer still trains its ending


def test_example_must_end_with_assistant(tok):
    with pytest.raises(ValueError, match="end with an assistant message"):
        encode_chat(tok, MESSAGES[:1], max_length=64)


def test_collate_pads_right_and_masks(tok):
    a = encode_chat(tok, MESSAGES, 512)
    b = encode_chat(tok, [MESSAGES[0], {"role": "assistant", "content": "7"}], 512)
    batch = collate([a, b], pad_id=tok.pad_token_id)
    n_b = len(b.input_ids)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][1, n_b:].sum() == 0 and batch["attention_mask"][1, :n_b].all()
    assert (batch["labels"][1, n_b:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1, n_b:] == tok.pad_token_id).all()


# --------------------------------------------------------------------------- multi-turn
def test_every_assistant_turn_is_labelled_and_nothing_else(tok):
    enc = encode_chat(tok, DIALOGUE, max_length=4096)
    assert [tok.decode(run) for run in label_runs(enc)] == [a + "<|im_end|>\n" for a in ASSISTANT]
    context = context_text(tok, enc)
    for m in DIALOGUE:
        assert (m["content"] in context) == (m["role"] != "assistant"), m
    assert enc.turns == enc.targets == len(ASSISTANT) and not enc.truncated


def test_pieces_tile_the_full_rendering(tok):
    pieces = render_pieces(tok, DIALOGUE)
    assert "".join(text for text, _ in pieces) == tok.apply_chat_template(DIALOGUE, tokenize=False)
    assert [text for text, target in pieces if target] == [a + "<|im_end|>\n" for a in ASSISTANT]


def test_each_turn_is_labelled_as_it_would_be_alone_with_its_history(tok):
    """One sequence per dialogue = the per-turn samples (turn + its history), without the repeats."""
    runs = label_runs(encode_chat(tok, DIALOGUE, max_length=4096))
    ends = [i for i, m in enumerate(DIALOGUE) if m["role"] == "assistant"]
    for run, end in zip(runs, ends, strict=True):
        alone = encode_chat(tok, DIALOGUE[: end + 1], max_length=4096)
        assert label_runs(alone)[-1] == run


def _cut_inside(tok, turn: int) -> tuple[Encoded, int]:
    """The full encoding and a max_length whose left cut falls mid-way through assistant turn ``turn``."""
    full = encode_chat(tok, DIALOGUE, max_length=4096)
    starts = [i for i in range(len(full.labels))
              if full.labels[i] != IGNORE_INDEX and (i == 0 or full.labels[i - 1] == IGNORE_INDEX)]
    run = label_runs(full)[turn]
    cut = starts[turn] + len(run) // 2
    return full, len(full.input_ids) - cut


def test_left_truncation_drops_oldest_turns_and_masks_a_half_cut_turn(tok):
    full, max_length = _cut_inside(tok, turn=1)
    short = encode_chat(tok, DIALOGUE, max_length=max_length)
    assert short.truncated and short.input_ids == full.input_ids[-max_length:]
    assert [tok.decode(run) for run in label_runs(short)] == [a + "<|im_end|>\n" for a in ASSISTANT[2:]]
    assert short.labels[0] == IGNORE_INDEX  # the window opens inside turn 1, which is context now
    assert short.turns == len(ASSISTANT) and short.targets == len(ASSISTANT) - 2
    # nothing outside a kept assistant turn is labelled: the labels are the full ones, masked
    assert all(s in (f, IGNORE_INDEX) for s, f in zip(short.labels, full.labels[-max_length:]))


def test_left_truncation_inside_the_last_turn_keeps_its_tail(tok):
    full, max_length = _cut_inside(tok, turn=len(ASSISTANT) - 1)
    short = encode_chat(tok, DIALOGUE, max_length=max_length)
    assert short.labels == full.labels[-max_length:] and short.labels[0] != IGNORE_INDEX
    assert short.targets == 1


@pytest.mark.parametrize("max_length", [16, 64, 128, 200, 333])
def test_truncation_never_labels_context(tok, max_length):
    full = encode_chat(tok, DIALOGUE, max_length=4096)
    short = encode_chat(tok, DIALOGUE, max_length=max_length)
    assert len(short.input_ids) == len(short.labels) == max_length
    assert short.input_ids == full.input_ids[-max_length:]
    assert all(s in (f, IGNORE_INDEX) for s, f in zip(short.labels, full.labels[-max_length:]))
    assert any(label != IGNORE_INDEX for label in short.labels)


def test_template_that_rewrites_history_is_refused():
    tok = build_tiny_tokenizer()
    # Like DeepSeek-R1's template: earlier assistant turns lose their reasoning in the history.
    tok.chat_template = (
        "{% for m in messages %}{% set c = m['content'] %}"
        "{% if m['role'] == 'assistant' and not loop.last %}{% set c = c.split('</think>')[-1] %}{% endif %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + c + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    turns = [MESSAGES[0], {"role": "assistant", "content": "<think>x</think>7"}, *MESSAGES]
    with pytest.raises(ValueError, match="prefix-stable"):
        encode_chat(tok, turns, max_length=512)


# --------------------------------------------------------------------------- a real chat template
def test_real_template_labels_every_assistant_turn(smollm2_tok):
    tok = smollm2_tok
    enc = encode_chat(tok, DIALOGUE[1:], max_length=4096)  # no system turn: the template adds its own
    assert [tok.decode(run).strip() for run in label_runs(enc)] == [a + "<|im_end|>" for a in ASSISTANT]
    context = context_text(tok, enc)
    assert "<|im_start|>system" in context and "<|im_start|>assistant" in context
    assert all(m["content"] in context for m in DIALOGUE[1:] if m["role"] == "user")
    short = encode_chat(tok, DIALOGUE[1:], max_length=48)
    assert len(short.input_ids) == 48 and short.targets >= 1


def _encode_everything(tok, messages, max_length: int) -> Encoded:
    """The reference: every piece tokenised in full, then cut (what encode_chat did before it bounded the text)."""
    ids, labels, spans = [], [], []
    for text, target in render_pieces(tok, messages):
        piece = tok(text, add_special_tokens=False)["input_ids"]
        if target:
            spans.append((len(ids), len(ids) + len(piece)))
        labels += piece if target else [IGNORE_INDEX] * len(piece)
        ids += piece
    cut = max(0, len(ids) - max_length)
    for start, end in spans[:-1]:
        if start < cut < end:
            labels[cut:end] = [IGNORE_INDEX] * (end - cut)
    kept = sum(1 for start, end in spans if start >= cut or ((start, end) == spans[-1] and end > cut))
    return Encoded(ids[cut:], labels[cut:], cut > 0, len(spans), kept)


@pytest.mark.parametrize("conversation", ["long_history", "long_last_reply", "long_prompt", "dialogue"])
@pytest.mark.parametrize("max_length", [16, 48, 200])
def test_bounded_tokenisation_equals_tokenising_everything(tok, conversation, max_length):
    """Long rows are tokenised only as far back as could be kept: the same ids, labels and counts as
    tokenising the whole text, for histories, replies and prompts far past the context."""
    para = "We keep the last words of a very long text, 12 + 5 = 17. "
    messages = {
        "long_history": [m for k in range(40) for m in ({"role": "user", "content": para * 5},
                                                         {"role": "assistant", "content": f"reply {k}. " + para})],
        "long_last_reply": [{"role": "user", "content": "q"}, {"role": "assistant", "content": para * 2000}],
        "long_prompt": [{"role": "user", "content": para * 2000}, {"role": "assistant", "content": "7"}],
        "dialogue": DIALOGUE,
    }[conversation]
    got = encode_chat(tok, messages, max_length)
    assert got == _encode_everything(tok, messages, max_length)


def test_a_5_mb_row_costs_a_context_not_its_size(tok, monkeypatch):
    """Only the tail a context can hold is ever handed to the tokenizer (peak RSS: see the hardening note)."""
    seen: list[int] = []
    real = type(tok).__call__

    def counting(self, text, *a, **k):
        seen.append(len(text))
        return real(self, text, *a, **k)

    rendered: list[int] = []
    template = type(tok).apply_chat_template

    def rendering(self, conversation, *a, **k):
        rendered.append(max(len(m["content"]) for m in conversation))
        return template(self, conversation, *a, **k)

    monkeypatch.setattr(type(tok), "__call__", counting)
    monkeypatch.setattr(type(tok), "apply_chat_template", rendering)
    messages = [{"role": "user", "content": "x " * 2_500_000}, {"role": "assistant", "content": "answer"}]
    enc = encode_chat(tok, messages, 64)
    assert enc.truncated and enc.targets == 1 and max(seen) <= 64 * (64 + 16)
    assert max(rendered) == 2 * 64 * (64 + 16)  # the chat template renders the tail, never the 5 MB
