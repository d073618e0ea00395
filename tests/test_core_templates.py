"""Template parsing into segments, rendering, and causal [P] placement."""

import pytest

from autoprompt_search.core.errors import UserError
from autoprompt_search.core.templates import Field, Predict, Template, Text, Trigger


def test_parse_segments_with_spaces():
    t = Template.parse("{sentence} [T] [T] It was [P] .", ["sentence"])
    assert t.segments == (
        Field("sentence", False), Trigger(0, True), Trigger(1, True), Text("It was", True),
        Predict(True), Text(".", True),
    )
    assert t.num_triggers == 2
    assert t.field_names == ["sentence"]


def test_adjacent_slots_have_no_space():
    t = Template.parse("Q:{a}{b}[T][P]")
    assert [s.space for s in t.segments] == [False, False, False, False, False]


def test_placeholder_text_inside_data_is_not_substituted(tiny_causal):
    # a field value that contains "[P]" or "{sentence}" must stay literal text
    from autoprompt_search.core.data import Example

    t = Template.parse("{sentence} It was [P]", ["sentence"])
    ex = Example({"sentence": "odd [P] {sentence} text"}, 0)
    enc = tiny_causal.encoder.encode(t, ex)
    text = tiny_causal.tokenizer.decode(enc.ids)
    assert text == "odd [P] {sentence} text It was"


def test_render_fills_triggers_without_double_spaces():
    t = Template.parse("{sentence} [T] [T] [P] .")
    assert t.render() == "{sentence} [T] [T] [P] ."
    assert t.render([" good", " bad"]) == "{sentence} good bad [P] ."
    assert t.render(["good", "bad"], label="great") == "{sentence} good bad great ."


@pytest.mark.parametrize("source,message", [
    ("{sentence} It was .", r"has no \[P\]"),
    ("{sentence} [P] and [P]", r"2 \[P\] slots"),
    ("", "empty template"),
    ("{sentence} [X] was [P]", "not a slot"),
])
def test_bad_templates(source, message):
    with pytest.raises(UserError, match=message):
        Template.parse(source, ["sentence"])


def test_unknown_field_names_the_fields():
    with pytest.raises(UserError, match=r"\{text\}.*fields: \{sentence\}"):
        Template.parse("{text} It was [P] .", ["sentence"])


def test_causal_drops_trailing_punctuation_and_keeps_text_after_p():
    # issue 11: text after [P] is no longer refused; it is scored on the whole sequence
    t = Template.parse("{sentence} It was [P] .").for_causal()
    assert isinstance(t.segments[-1], Predict) and not t.text_after_predict
    news = Template.parse("[P] News: {text}")
    assert news.text_after_predict and news.for_causal().segments == news.segments
