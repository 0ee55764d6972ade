"""What only training needs: the recipe's settings and their checks (``config``), Keras
callbacks that checkpoint, resume and validate (``callbacks``), CPU device strategies
(``distribute``), backbone features computed once and cached (``feature_cache``), and the
linear probe on a frozen Whisper encoder, train_offline.py's default recipe (``probe``).
These build on the run level: prediction never imports them.
"""
