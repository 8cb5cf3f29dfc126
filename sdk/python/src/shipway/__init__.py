"""Shipway Python SDK: local evaluation of LLM features and flags, prompt templates,
polling, and reporting of LLM calls.

Importable without Django; the Shipway server imports the same bucketing, templating and
segment code so the rules are written once.
"""

from .bucketing import (
    InvalidPercent,
    basis_points_to_percent,
    bucket,
    in_canary,
    percent_to_basis_points,
)
from .budget import BudgetExceeded, BudgetInfo
from .client import ShipwayAuthError, ShipwayClient
from .evaluation import Evaluation, evaluate_feature, evaluate_flag
from .prompts import PreparedPrompt, prepare_prompt
from .reporting import CallReporter
from .segments import segment_matches
from .templating import (
    MissingVariables,
    RenderedMessages,
    RenderResult,
    TemplateError,
    TemplateRenderError,
    TemplateSyntaxError,
    messages_variables,
    render,
    render_messages,
    template_variables,
    validate_template,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "BudgetInfo",
    "CallReporter",
    "Evaluation",
    "InvalidPercent",
    "MissingVariables",
    "PreparedPrompt",
    "RenderResult",
    "RenderedMessages",
    "ShipwayAuthError",
    "ShipwayClient",
    "TemplateError",
    "TemplateRenderError",
    "TemplateSyntaxError",
    "__version__",
    "basis_points_to_percent",
    "bucket",
    "evaluate_feature",
    "evaluate_flag",
    "in_canary",
    "messages_variables",
    "percent_to_basis_points",
    "prepare_prompt",
    "render",
    "render_messages",
    "segment_matches",
    "template_variables",
    "validate_template",
]
