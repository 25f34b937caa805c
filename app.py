"""Transformer Explorer: the entry point. ``streamlit run app.py``"""
import streamlit as st

st.set_page_config(page_title="Transformer Explorer", page_icon="🔭", layout="wide")

pages = [
    st.Page("pages/attention_lab.py", title="Attention Lab", icon="🔬", url_path="attention_lab", default=True),
]
st.navigation(pages).run()
