"""Digit Lab's app logic, kept apart from the page so that it can be read and
tested without a browser. Nothing here imports Streamlit: ``app.py`` places
what these modules compute.

One concept per module, roughly in the order data flows through the page:

- ``identity``   who a visitor is: a secret their browser keeps, stored only as a hash
- ``state``      every ``st.session_state`` key the page uses, declared and explained
- ``inputs``     the canvas's stroke data -> the (28, 28) image (or a message); undo
- ``uploads``    a photo -> the (28, 28) image, decoded in a bounded worker process, once
- ``inference``  one image -> probabilities, SmoothGrad, every layer's output, top units
- ``atlas``      the map of digits (PCA of the last hidden layer), neighbours, "not a digit"
- ``figures``    every chart (Vega-Lite specs) and picture (PNG from NumPy)
- ``tables``     the tables, in words a learner reads
- ``cache``      what is built once per network (figures, maps, evaluations)
- ``retrain``    the Retrain tab's controls, shared links, time estimate (from ``nn.Recipe``)
- ``jobs``       trainings in background threads, found again by their visitor
- ``runs``       a session's run history: compare, restore, export
- ``teaching``   fine-tune on labelled drawings; before and after
- ``store``      the drawings database: collections, classes, quotas, export/import
- ``library``    networks on disk: shipped and saved, ownership, quotas, checks
- ``session``    which network a session uses; what finished work changes
- ``glossary``   the words a learner meets, explained
"""
