"""Placeholder: being built."""

import streamlit as st

st.title("alerts")
st.info("Not built yet.")
