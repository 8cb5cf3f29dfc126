"""Property tests for template rendering (skipped when hypothesis is not installed)."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis")

from hypothesis import given, settings
from hypothesis import strategies as st

from shipway.templating import render, template_variables

# No example database: it would leave a .hypothesis/ folder wherever pytest runs.
SETTINGS = settings(database=None, deadline=None, max_examples=200)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
# Literal chunks never contain "{{" and never end in "{", so gluing them next to a
# placeholder cannot create a brace run the template author did not write.
LITERALS = st.text(max_size=20).filter(lambda s: "{{" not in s and not s.endswith("{"))


@SETTINGS
@given(st.text().filter(lambda s: "{{" not in s))
def test_render__text_without_double_open_brace__round_trips(text):
    assert template_variables(text) == []
    assert render(text, {}).text == text


@SETTINGS
@given(st.lists(st.tuples(LITERALS, NAMES), max_size=6), LITERALS, st.data())
def test_render__substitutes_each_placeholder_once_and_never_rescans_values(
    pieces, tail, data
):
    names = {name for _, name in pieces}
    values = {
        name: data.draw(st.text(max_size=12) | st.just("{{" + name + "}}"), label=name)
        for name in names
    }
    template = "".join(lit + "{{ " + name + " }}" for lit, name in pieces) + tail
    expected = "".join(lit + values[name] for lit, name in pieces) + tail
    result = render(template, values)
    assert result.text == expected
    assert sorted(result.used) == sorted(names)
    assert result.extra == []
