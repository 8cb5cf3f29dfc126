"""Call events, rollups, cost, budgets and canary health verdicts (grows with the telemetry issue)."""
