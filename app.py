"""TerraSeg's web app entry point (`streamlit run app.py`).

The pages (New job, Jobs, Results) are not built yet; until then the `terraseg` command is the way in.
Streamlit is not a dependency yet, so this file only explains that when run with plain Python.
"""

MESSAGE = (
    "The TerraSeg web app is not built yet. Use the command line: "
    "'terraseg run --task cloud --aoi AOI --start YYYY-MM-DD --end YYYY-MM-DD --source sample --out OUT'."
)

if __name__ == "__main__":
    print(MESSAGE)
