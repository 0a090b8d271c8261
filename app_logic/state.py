"""Every ``st.session_state`` key the page uses, declared and explained in one place.

Streamlit keeps one ``session_state`` per browser tab (a "session"). The page
(``app.py``) reads and writes only the keys below; widgets whose ``key=`` is
one of them keep their value there too. ``tests/test_app_logic.py`` checks that
every key ``app.py`` uses is declared here.

Keys ending in ``*`` are prefixes: the page makes one key per item (a widget
per layer, a canvas per clear).
"""

__all__ = ["KEYS", "PREFIXES", "declared"]

KEYS = {
    # who and what
    "visitor_secret": "the secret this browser keeps in a cookie (app_logic.identity)",
    "cookie_sent": "True once the page asked the browser to keep the secret",
    "active": "the active network's choice, 'file:<name>' or 'run:<id>' (app_logic.session)",
    "last_good": "the last choice that loaded, to fall back to",
    "runs": "this session's trainings and teachings (app_logic.runs.RunHistory)",
    "uploads": "decoded uploads, so each is decoded once (app_logic.uploads.UploadCache)",
    "url_checked": "True once the settings in the page's URL were read",
    "url_problems": "what was wrong with the settings in the URL, to show once",
    # the Draw tab
    "img28": "the current drawing as the network sees it, (28, 28), or None",
    "thumb_png": "the current drawing, downsampled to a small PNG, for labelling",
    "canvas_gen": "how many times the canvas was cleared or undone (part of its widget key)",
    "canvas_initial": "the drawing a new canvas starts with (after Undo)",
    "canvas_json": "the latest stroke data the canvas sent",
    "label_message": "what the last Right / No, it's a … click did",
    # My drawings
    "collection": "the id of the collection new labelled drawings go into",
    "teach_message": "the outcome of the last teaching",
    "store_message": "the outcome of the last class, import or delete action",
    # Retrain and Runs
    "train_message": "(kind, text) about the last finished training",
    "collected_jobs": "ids of the finished trainings this session took (app_logic.jobs)",
    "save_message": "the outcome of the last save or delete of a network",
    "frame": "the epoch shown in the film of the first layer's weights",
    # widgets
    "active_choice": "widget: the sidebar's network picker",
    "tab": "widget: the open tab",
    "stroke_width": "widget: the pen width",
    "upload": "widget: the photo upload box",
    "wrong_label": "widget: the digit picked in “No, it's a …”",
    "save_name": "widget: the name to save a network under",
    "save_overwrite": "widget: replace your own network of that name",
    "delete_name": "widget: which of your networks to delete",
    "class_name": "widget: the name of a new class collection",
    "join_code": "widget: a class's join code",
    "import_file": "widget: a drawings export to import",
    "rehearsal": "widget: teach with rehearsal (keeps MNIST) or without",
    "my_drawings": "widget: the table of your drawings, with the rows ticked for deleting",
    "runs_ticked": "widget: the runs whose curves are overlaid",
    "compare_a": "widget: run A of the confusion-matrix comparison",
    "compare_b": "widget: run B of the confusion-matrix comparison",
    "kind": "widget: Retrain's choice of a multi-layer perceptron or a CNN",
}

PREFIXES = {
    "rt_": "widget: a Retrain setting (rt_<setting>, rt_<setting>_n, rt_<setting>_<i>, "
           "rt_<setting>_on)",
    "canvas_": "widget: the drawing canvas of generation <n>",
    "del_drawing_": "widget: the delete buttons of your drawings (ticked, all)",
    "make_active_": "widget: the 'make active' button of run <id>",
}


def declared(key):
    """True if ``key`` is declared above (exactly, or under a prefix)."""
    return key in KEYS or any(key.startswith(p) for p in PREFIXES)
