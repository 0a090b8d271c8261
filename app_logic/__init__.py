"""Digit Lab's app logic, kept apart from the page so that it can be read and
tested without a browser. Nothing here imports Streamlit: ``app.py`` places
what these modules compute.

One concept per module, in the order data flows through the page:

- ``inputs``    an upload or a canvas drawing -> the (28, 28) image (or a message)
- ``inference`` one image -> probabilities and saliency; a test set -> metrics
- ``render``    images and charts as PNG bytes / chart specs, without matplotlib figures
- ``tables``    the dataframes the Training and Evaluation tabs show
- ``settings``  the Retrain tab's limits, defaults and server-side checks
- ``jobs``      a training run in a background thread, and the server-wide slots
- ``library``   the saved networks on disk: names, listing, saving, quotas
"""
