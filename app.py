"""Transformer Explorer: the entry point. ``streamlit run app.py``"""
import streamlit as st
import torch

# One intra-op thread per computation: the server's cores are shared by every session's script
# thread (and often by a browser on the same machine). With torch's default of one OpenMP thread
# per core, training under that contention ran ~15x slower (measured: 51 steps in 25 s instead of
# 400 in 15 s with Chromium drawing the live charts on this 2-core machine).
torch.set_num_threads(1)

st.set_page_config(page_title="Transformer Explorer", page_icon=":material/hub:", layout="wide")
st.session_state.app_shell = True  # pages check this: they were opened through this navigation

pages = [
    st.Page("pages/attention_lab.py", title="Attention Lab", url_path="attention_lab", default=True),
    st.Page("pages/complexity.py", title="Complexity", url_path="complexity"),
    st.Page("pages/positions.py", title="Positional encodings", url_path="positions"),
]
st.navigation(pages).run()
