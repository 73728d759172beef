"""Placeholder: being built."""

import streamlit as st

st.title("sql")
st.info("Not built yet.")
