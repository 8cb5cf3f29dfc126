"""Template placeholders, validation and one-pass rendering (DESIGN.md, "Templates")."""

from __future__ import annotations

import pytest

from shipway.templating import (
    MissingVariables,
    RenderResult,
    TemplateRenderError,
    TemplateSyntaxError,
    messages_variables,
    render,
    render_messages,
    template_variables,
    validate_template,
)


def test_render__placeholders_with_and_without_spaces__are_substituted():
    result = render(
        "Hi {{name}}, {{ greeting }}! {{  name  }}", {"name": "Ada", "greeting": "yo"}
    )
    assert result == RenderResult("Hi Ada, yo! Ada", ["name", "greeting"], [])


def test_render__json_with_single_braces__renders_unchanged():
    text = 'Return {"a": {"b": 1}}'
    assert template_variables(text) == []
    assert render(text, {}).text == text


def test_render__value_containing_placeholder__is_not_rendered_again():
    result = render("{{a}} {{b}}", {"a": "{{b}}", "b": "{{a}}"})
    assert result.text == "{{b}} {{a}}"


def test_render__triple_braces__keep_one_literal_brace_each_side():
    assert render("{{{x}}}", {"x": 1}).text == "{1}"


def test_render__longer_brace_run__keeps_all_but_the_last_two_literal():
    assert render("{{{{x}}", {"x": "v"}).text == "{{v"
    assert template_variables("{{{{ x }}}}") == ["x"]


def test_render__closing_braces_outside_a_placeholder__are_literal():
    assert render("a }} b }}} {{x}}}}", {"x": "1"}).text == "a }} b }}} 1}}"


def test_render__values__are_converted_with_str():
    assert (
        render("{{n}} {{f}} {{none}}", {"n": 3, "f": 0.5, "none": None}).text
        == "3 0.5 None"
    )


def test_render__every_missing_variable__is_named_in_order_of_first_appearance():
    with pytest.raises(MissingVariables) as info:
        render("{{b}} {{a}} {{c}} {{b}}", {"c": "here"})
    assert info.value.missing == ["b", "a"]
    assert "b, a" in str(info.value)
    assert isinstance(info.value, TemplateRenderError)
    assert isinstance(info.value, ValueError)


def test_render__extra_variables__are_ignored_and_listed_sorted():
    result = render("{{a}}", {"z": 1, "a": 2, "m": 3})
    assert result.text == "2"
    assert result.used == ["a"]
    assert result.extra == ["m", "z"]


def test_template_variables__repeated_names__are_unique_in_first_appearance_order():
    assert template_variables("{{ b }}{{a}}{{b}}{{_c9}}") == ["b", "a", "_c9"]


@pytest.mark.parametrize(
    "text",
    [
        "{{}}",
        "{{ }}",
        "{{ 1x }}",
        "{{ a-b }}",
        "{{ a b }}",
        "{{a",
        "{{{x}",
        "x {{\n}}",
        "{{\ta}}",
    ],
)
def test_validate_template__brace_pair_opening_no_placeholder__is_refused(text):
    with pytest.raises(TemplateSyntaxError) as info:
        validate_template(text)
    assert len(info.value.errors) == 1
    assert isinstance(info.value, ValueError)


def test_validate_template__several_problems__are_all_listed_with_positions():
    text = "ok {{ name }}\nbad {{ 1x }} and {{ }}\n{{unclosed"
    with pytest.raises(TemplateSyntaxError) as info:
        validate_template(text)
    errors = info.value.errors
    assert [(e.position, e.line, e.column) for e in errors] == [
        (18, 2, 5),
        (31, 2, 18),
        (37, 3, 1),
    ]
    assert text[errors[0].position : errors[0].position + 2] == "{{"
    assert "'{{ 1x }}'" in errors[0].message
    assert "empty placeholder" in errors[1].message
    assert "not closed" in errors[2].message
    assert "line 2, column 5" in str(info.value)


def test_validate_template__single_brace_inside_braces__is_reported_as_bad_name():
    with pytest.raises(TemplateSyntaxError) as info:
        validate_template("{{ a{b }}")
    assert "not a valid placeholder" in info.value.errors[0].message


def test_validate_template__nested_placeholder__refuses_outer_and_keeps_inner():
    with pytest.raises(TemplateSyntaxError) as info:
        validate_template("{{ {{x}} }}")
    assert [e.position for e in info.value.errors] == [0]


def test_validate_template__brace_run_error__points_at_the_start_of_the_run():
    with pytest.raises(TemplateSyntaxError) as info:
        validate_template("ab{{{ 1 }}")
    assert info.value.errors[0].position == 2


def test_validate_template__valid_template__returns_its_variables():
    assert validate_template("Summarise {{ticket}} for {{ customer }}") == [
        "ticket",
        "customer",
    ]


def test_render__invalid_template__raises_syntax_error_not_missing():
    with pytest.raises(TemplateSyntaxError):
        render("{{ bad-name }}", {})


def test_render__non_string_template__raises_type_error():
    with pytest.raises(TypeError):
        render(None, {})  # type: ignore[arg-type]


MESSAGES = [
    {
        "role": "system",
        "content": 'You summarise tickets for {{ product }}. Reply as JSON {"s": 1}.',
    },
    {
        "role": "user",
        "content": "{{ticket}} (customer: {{customer}}, product {{product}})",
        "name": "u",
    },
]


def test_render_messages__renders_every_content_and_keeps_other_fields():
    result = render_messages(
        MESSAGES, {"product": "Acme", "ticket": "T", "customer": "C", "x": 1}
    )
    assert result.messages == [
        {
            "role": "system",
            "content": 'You summarise tickets for Acme. Reply as JSON {"s": 1}.',
        },
        {"role": "user", "content": "T (customer: C, product Acme)", "name": "u"},
    ]
    assert result.used == ["product", "ticket", "customer"]
    assert result.extra == ["x"]


def test_render_messages__input_messages__are_not_modified():
    before = [dict(m) for m in MESSAGES]
    render_messages(MESSAGES, {"product": "Acme", "ticket": "T", "customer": "C"})
    assert before == MESSAGES


def test_render_messages__missing_variables_across_messages__are_reported_together():
    with pytest.raises(MissingVariables) as info:
        render_messages(MESSAGES, {"ticket": "T"})
    assert info.value.missing == ["product", "customer"]


def test_messages_variables__unique_across_messages_in_first_appearance_order():
    assert messages_variables(MESSAGES) == ["product", "ticket", "customer"]


def test_messages_variables__errors__name_the_message_index():
    messages = [
        {"role": "system", "content": "fine {{a}}"},
        {"role": "user", "content": "{{ 2bad }}"},
        {"role": "user"},
    ]
    with pytest.raises(TemplateSyntaxError) as info:
        messages_variables(messages)
    assert [e.message_index for e in info.value.errors] == [1, 2]
    assert "message 1" in str(info.value)
    assert "message 2" in str(info.value)


def test_messages_variables__not_a_list__raises_type_error():
    with pytest.raises(TypeError):
        messages_variables("{{a}}")  # type: ignore[arg-type]
