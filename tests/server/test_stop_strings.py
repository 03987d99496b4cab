from server.worker.replies import StopStringMatcher


def feed_all(matcher: StopStringMatcher, pieces: list[str]) -> tuple[str, bool]:
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    out.append(matcher.flush())
    return "".join(out), False


def test_no_stop_strings_passes_text_through_at_once():
    matcher = StopStringMatcher([])
    assert matcher.feed("abc") == ("abc", False)


def test_stop_string_split_across_tokens_is_never_leaked():
    matcher = StopStringMatcher(["END"])
    sent = [matcher.feed(p)[0] for p in ["hello E", "N"]]
    assert "".join(sent) == "hello "  # "EN" held back: it may be the start of END
    assert matcher.feed("D tail") == ("", True)


def test_text_resembling_a_stop_string_is_released_when_it_diverges():
    assert feed_all(StopStringMatcher(["END"]), ["EN", "X", "!"]) == ("ENX!", False)


def test_earliest_of_several_stop_strings_wins():
    assert feed_all(StopStringMatcher(["b", "cd"]), ["acdxb"]) == ("a", True)
