"""The web app's screens (run through `app.py`'s st.navigation); the widgets they share are in pages.widgets."""
