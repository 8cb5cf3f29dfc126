"""Features, prompt versions, eval suites and guardrail policies."""
