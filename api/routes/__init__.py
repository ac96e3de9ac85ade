"""Route modules, one per resource; each route calls one service function."""
