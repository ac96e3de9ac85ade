"""Service functions: keyword-only, session first, fixed verbs. Only services commit."""
