"""Plain Django forms for the UI's core actions (they work without JavaScript)."""

from django import forms

from apps.core.models import Environment
from apps.core.parsers import json_loads_checked
from apps.prompts.models import Stage


class ChangeForm(forms.Form):
    expected_revision = forms.IntegerField(min_value=1, widget=forms.HiddenInput)
    reason = forms.CharField(required=False, max_length=2000,
                             widget=forms.TextInput(attrs={"placeholder": "Why (shown in the audit log)"}))


class KillSwitchForm(ChangeForm):
    enabled = forms.TypedChoiceField(choices=[("1", "on"), ("0", "off")], coerce=lambda v: v == "1",
                                     widget=forms.HiddenInput)


class CanaryStartForm(ChangeForm):
    version = forms.ChoiceField(label="Canary version")
    percent = forms.CharField(label="Percent", max_length=12, initial="1",
                              help_text="0.01 to 100, at most two decimals")

    def __init__(self, *args, versions=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["version"].choices = [(v, v) for v in versions]


class CanaryPercentForm(ChangeForm):
    percent = forms.CharField(label="New percent", max_length=12)


class RestoreForm(ChangeForm):
    revision = forms.IntegerField(min_value=1, widget=forms.HiddenInput)


class ReleaseCreateForm(forms.Form):
    environment = forms.ModelChoiceField(queryset=Environment.objects.all(), to_field_name="key",
                                         widget=forms.HiddenInput)
    stable_version = forms.ChoiceField(label="Stable version")

    def __init__(self, *args, versions=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["stable_version"].choices = [(v, v) for v in versions]


class FeatureForm(forms.Form):
    key = forms.RegexField(regex=r"^[a-z0-9][a-z0-9._-]{0,62}$", max_length=63,
                           help_text="Lowercase letters, digits, '.', '_' or '-'",
                           error_messages={"invalid": "Use lowercase letters, digits, '.', '_' or '-' "
                                                      "(1-63, starting with a letter or digit)."})
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    stage = forms.ChoiceField(choices=Stage.choices, initial=Stage.DEMO)


class PromptVersionForm(forms.Form):
    KIND_CHOICES = [("text", "Text template"), ("chat", "Chat messages (JSON list)")]

    version = forms.CharField(max_length=64, help_text="Semantic version, e.g. 1.3.0")
    kind = forms.ChoiceField(choices=KIND_CHOICES, initial="chat", widget=forms.RadioSelect)
    body = forms.CharField(label="Template", strip=False, widget=forms.Textarea(attrs={"rows": 10}),
                           help_text='Placeholders: {{ name }}. For chat: '
                                     '[{"role": "system", "content": "..."}]')
    model = forms.CharField(max_length=100, initial="gpt-4o-mini")
    params = forms.CharField(required=False, initial="{}", label="Parameters (JSON object)")
    fallback_models = forms.CharField(required=False, label="Fallback models (comma-separated)")
    changelog = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def clean_params(self):
        raw = self.cleaned_data["params"].strip() or "{}"
        try:
            value = json_loads_checked(raw)  # also 1e400, NaN, lone surrogates, NULs, deep nesting
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("Must be a JSON object, e.g. {\"temperature\": 0.2}")
        return value

    def clean_fallback_models(self):
        return [m.strip() for m in self.cleaned_data["fallback_models"].split(",") if m.strip()]

    def template_fields(self) -> dict:
        """template= or messages= for the service, from the chosen kind."""
        body = self.cleaned_data["body"]
        if self.cleaned_data["kind"] == "text":
            return {"template": body, "messages": None}
        try:
            messages = json_loads_checked(body)
        except ValueError as exc:
            self.add_error("body", f"Chat messages must be a JSON list: {exc}")
            return {}
        return {"template": None, "messages": messages}
