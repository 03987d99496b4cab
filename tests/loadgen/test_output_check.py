"""--check-outputs, pure: each verdict on known texts, the prompts chosen, the wire form, the records and
the options. No Locust, no network (the runs are in test_output_runs.py)."""

from __future__ import annotations

import random

import pytest

from loadgen.options import LoadSettings
from loadgen.output_check import (
    FOREIGN_MIN_CHARS,
    OutputCheck,
    Reference,
    choose_prompts,
    class_problems,
    common_prefix,
    judge,
)
from loadgen.prompts import Prompt, SyntheticPrompts
from runfolder.records import RequestRecord

OWN = " alpha bravo charlie delta echo foxtrot golf hotel"
OTHER = " zulu yankee xray whiskey victor uniform tango sierra"


def ref(text: str = OWN, finish: str | None = "length", index: int = 0) -> Reference:
    return Reference("chat_stream", index, "success", "ok", text, finish)


def verdict(reply: str, finish: str | None = "length", *, own: Reference | None = None, ignore_eos=False):
    return judge(reply, finish, own or ref(), [OTHER], ignore_eos=ignore_eos)


def test_common_prefix_of_texts_and_token_lists():
    assert common_prefix("abcd", "abxd") == 2
    assert common_prefix("ab", "abc") == 2
    assert common_prefix([1, 2, 3], [1, 2, 3]) == 3
    assert common_prefix("", "a") == 0


def test_the_same_text_is_identical():
    assert verdict(OWN) == ("identical", None)


def test_same_start_then_other_text_is_divergence():
    reply = OWN[:20] + " mike november oscar papa quebec"  # " alpha bravo charlie " shared
    assert verdict(reply) == ("diverged", 21)


def test_a_reply_that_differs_at_once_but_is_nobody_elses_is_divergence():
    assert verdict(" mike november oscar papa quebec romeo") == ("diverged", 1)  # both start with a space


def test_no_text_is_empty():
    assert verdict("", "stop") == ("empty", 0)
    assert verdict("", "length") == ("empty", 0)


def test_a_strict_prefix_that_ended_by_length_is_truncated():
    assert verdict(OWN[:25], "length") == ("truncated", 25)


def test_a_strict_prefix_that_ended_at_eos_is_a_flip_unless_eos_is_ignored():
    assert verdict(OWN[:25], "stop") == ("diverged", 25)  # argmax flipped to EOS
    assert verdict(OWN[:25], "stop", ignore_eos=True) == ("truncated", 25)  # no EOS can end it early


def test_more_than_a_length_capped_reference_is_overlong():
    assert verdict(OWN + " india", "length") == ("overlong", len(OWN))
    # past a reference that ended at EOS: the EOS flipped away (the same max_tokens was not reached)
    assert verdict(OWN + " india", "length", own=ref(finish="stop")) == ("diverged", len(OWN))
    assert verdict(OWN + " india", own=ref(finish="stop"), ignore_eos=True)[0] == "overlong"


def test_another_prompts_text_is_foreign():
    assert verdict(OTHER)[0] == "foreign"
    # streams mixed: our start, then another request's text from the middle of its reply
    mixed = OWN[:18] + OTHER[12:]
    assert verdict(mixed) == ("foreign", 18)


def test_too_little_differing_text_is_never_called_foreign():
    short_tail = OWN[:-5] + OTHER[: FOREIGN_MIN_CHARS - 1]
    assert verdict(short_tail)[0] == "diverged"
    # repeated text of our own (a loop) found in another reference too: ours first, not foreign
    own = ref(" la la la la la la la la la la la la la la la la")
    loop = " la la la la la la la la la la la la la la la la la"
    assert judge(loop, "length", own, [loop], ignore_eos=False)[0] != "foreign"


def _check(encode=None) -> OutputCheck:
    prompts = [Prompt([{"role": "user", "content": f"p{i}"}], f"p{i}") for i in range(2)]
    refs = [ref(OWN, index=0), ref(OTHER, index=1)]
    return OutputCheck(prompts, refs, ignore_eos=False, encode=encode)


def test_tokens_are_compared_with_a_tokenizer_and_characters_without():
    words = _check(encode=lambda text: [hash(w) for w in text.split()])
    found = words.verdict("chat_stream", 0, OWN[:20] + " mike november oscar papa", "length")
    assert found is not None and found.kind == "diverged"
    assert (found.first_diff_chars, found.first_diff_tokens) == (21, 3)  # "alpha bravo charlie" shared
    assert words.compared_by == "tokens" and _check().compared_by == "characters"
    plain = _check().verdict("chat_stream", 0, OWN[:20] + " mike", "length")
    assert plain is not None and plain.first_diff_tokens is None


def test_a_reply_to_one_prompt_carrying_the_others_text_is_foreign_through_the_check():
    found = _check().verdict("chat_stream", 0, OTHER, "length")
    assert found is not None and found.kind == "foreign"


def test_prompts_are_sent_in_turn():
    check = _check()
    assert [check.next_prompt()[0] for _ in range(5)] == [0, 1, 0, 1, 0]


def test_a_prompt_whose_reference_failed_goes_unchecked():
    check = _check()
    check = OutputCheck(
        check.prompts, [ref(OWN), Reference("chat_stream", 1, "error", "http_500", "", None)], False
    )
    assert check.verdict("chat_stream", 1, "anything", "length") is None
    assert check.verdict("other_scenario", 0, OWN, "length") is None
    assert check.reference_counts()["reference_outcomes"] == {"success": 1, "error": 1}


def _record(outcome: str = "success") -> RequestRecord:
    return RequestRecord("chat_stream", True, 0.0, 0.0, 1.0, 0.0, 1.0, outcome, "ok", finish_reason="length")  # type: ignore[arg-type]


def test_the_verdict_goes_into_the_record_and_failures_are_not_judged():
    check = _check()
    ok = _record()
    check.apply(ok, 1, OWN)
    assert (ok.output_check_prompt, ok.output_check, ok.output_first_diff_chars) == (1, "foreign", 1)
    failed = _record("error")
    check.apply(failed, 0, "")
    assert failed.output_check_prompt == 0 and failed.output_check is None


def test_the_wire_form_gives_a_worker_the_same_check():
    sent = _check()
    got = OutputCheck.from_wire(sent.to_wire(), ignore_eos=False, encode=None)
    assert got.prompts == sent.prompts and got.references == sent.references
    assert got.verdict("chat_stream", 0, OTHER, "length") == sent.verdict("chat_stream", 0, OTHER, "length")


def test_chosen_prompts_are_distinct_seeded_and_bounded():
    source = SyntheticPrompts(12)
    first = choose_prompts(source, 4, seed=3)
    assert len({p.text for p in first}) == 4 and first == choose_prompts(source, 4, seed=3)

    class Few:  # a prompt file of three lines, one repeated
        prompts = [Prompt([], "a"), Prompt([], "b"), Prompt([], "a")]

    assert [p.text for p in choose_prompts(Few(), 16, seed=0)] == ["a", "b"]

    class One:  # a random source that can only ever give one prompt: bounded tries, no endless loop
        def draw(self, rng: random.Random) -> Prompt:
            return Prompt([], "same")

    assert len(choose_prompts(One(), 16, seed=0)) == 1


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"temperature": 0.7}, "--temperature 0.7 contradicts it"),
        ({"shared_prefixes": 2}, "--shared-prefixes"),
        ({"arrival": "trace", "trace": "t.jsonl"}, "--arrival trace"),
        ({"check_outputs_prompts": 0}, "--check-outputs-prompts must be at least 1"),
    ],
)
def test_options_that_contradict_a_check_are_refused(options, problem):
    assert any(problem in p for p in LoadSettings(check_outputs=True, **options).problems())
    assert not any("check-outputs" in p for p in LoadSettings(**options).problems())


def test_scenarios_whose_request_is_not_their_prompts_alone_are_refused():
    class Checkable:
        checks_outputs = True

    class Vision:
        checks_outputs = False

    on = LoadSettings(check_outputs=True)
    assert class_problems([Checkable], on) == []
    assert "Vision cannot be checked" in class_problems([Checkable, Vision], on)[0]
    assert class_problems([Vision], LoadSettings()) == []
    assert LoadSettings(check_outputs=True, temperature=0.0).problems() == []
