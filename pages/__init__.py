"""The web app's screens (run through `app.py`'s st.navigation) and the few helpers they share."""
