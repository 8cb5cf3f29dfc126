"""Review queue: claims, decisions, callbacks (grows with the reviews issue)."""
