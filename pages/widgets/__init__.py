"""The widgets and panels the screens in pages/ share. A subfolder, so that no routing (app.py's st.navigation,
nor Streamlit's legacy listing of pages/*.py) takes one of these modules for a page."""
