"""Transformer Explorer: the library behind the app (never imports streamlit)."""
